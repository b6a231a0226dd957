"""E5: health that can fail. UnhealthyThresholdCount is counted, a target registered while its app still boots
goes `unhealthy` without a launch hook, every state but `healthy` carries a reason code; and A20: a group with
HealthCheckType ELB replaces what the load balancer finds unhealthy after the grace period.

All on the stopped clock (one clock second = one AWS second): a group launches at 1000, is InService and
registered at 1030 (30 AWS s Pending), and a target group with a 10 s interval checks at 1040, 1050, ...
A change of an app's answer (set_app_up, the end of a boot) counts for the checks after it.
"""

import json
import urllib.error
import urllib.request

import pytest


def _reasons(world, arn, **kwargs):
    return {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in world.elbv2.describe_target_health(TargetGroupArn=arn, **kwargs)["TargetHealthDescriptions"]}


def _tg(world, healthy=2, unhealthy=2, **kwargs):
    return world.target_group(HealthCheckIntervalSeconds=10, HealthyThresholdCount=healthy,
                              UnhealthyThresholdCount=unhealthy, **kwargs)


def test_e5_unhealthy_threshold_consecutive_failures_then_healthy_threshold_passes(world, stopped_clock):
    arn = _tg(world, healthy=2, unhealthy=3)
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    stopped_clock.advance(20)
    assert world.health(arn) == {iid: "healthy"}
    world.cloud.set_app_up(iid, False)  # the app crashes at 1020
    stopped_clock.advance(20)           # 2 failed checks (1030, 1040): still healthy
    assert world.health(arn) == {iid: "healthy"}
    stopped_clock.advance(10)           # the 3rd consecutive failure
    assert _reasons(world, arn) == {iid: ("unhealthy", "Target.FailedHealthChecks")}
    world.cloud.set_app_up(iid, True)
    stopped_clock.advance(10)           # one pass is not enough (E1: HealthyThresholdCount)
    assert world.health(arn) == {iid: "unhealthy"}
    stopped_clock.advance(10)
    assert world.health(arn) == {iid: "healthy"}


def test_e5_a_failure_streak_shorter_than_the_threshold_changes_nothing(world, stopped_clock):
    arn = _tg(world, healthy=2, unhealthy=2)
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    stopped_clock.advance(20)
    world.cloud.set_app_up(iid, False)
    stopped_clock.advance(10)           # one failure (1030)
    world.cloud.set_app_up(iid, True)
    stopped_clock.advance(10)           # a pass breaks the streak (1040)
    world.cloud.set_app_up(iid, False)
    stopped_clock.advance(10)           # one failure again (1050)
    assert world.health(arn) == {iid: "healthy"}
    stopped_clock.advance(10)           # two in a row (1060)
    assert world.health(arn) == {iid: "unhealthy"}


def test_e5_registered_while_booting_without_a_hook_goes_unhealthy_then_healthy(world, stopped_clock):
    world.cloud.configure_apps(boot_seconds=120)  # the app answers at 1120
    arn = _tg(world)
    world.group("green", desired=1, target_groups=(arn,))
    stopped_clock.advance(30)
    (iid,) = world.in_service("green", 1)
    assert _reasons(world, arn) == {iid: ("initial", "Elb.RegistrationInProgress")}
    stopped_clock.advance(10)
    assert _reasons(world, arn) == {iid: ("initial", "Elb.InitialHealthChecking")}  # one failure (1040)
    stopped_clock.advance(10)
    assert _reasons(world, arn) == {iid: ("unhealthy", "Target.FailedHealthChecks")}  # two (1050)
    stopped_clock.advance(89)           # 1139: the check at 1130 passed, one is not enough
    assert world.health(arn) == {iid: "unhealthy"}
    stopped_clock.advance(1)
    assert world.health(arn) == {iid: "healthy"}
    assert world.describe("green")["Instances"][0]["HealthStatus"] == "Healthy"  # EC2 check type: ignored


def test_e5_with_a_launch_hook_the_target_is_registered_only_after_continue(world, stopped_clock):
    world.cloud.configure_apps(boot_seconds=120)
    arn = _tg(world)
    world.group("green", desired=0, target_groups=(arn,))
    world.asg.put_lifecycle_hook(AutoScalingGroupName="green", LifecycleHookName="boot",
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=600)
    world.asg.set_desired_capacity(AutoScalingGroupName="green", DesiredCapacity=1)
    stopped_clock.advance(125)          # the agent waits for its app (up at 1120), then completes the hook
    assert list(world.states("green").values()) == ["Pending:Wait"]
    assert world.health(arn) == {}
    (iid,) = world.states("green")
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot", InstanceId=iid,
                                        LifecycleActionResult="CONTINUE")
    stopped_clock.advance(2)            # Pending:Proceed -> InService, registered
    seen = []
    for _ in range(3):
        seen.append(world.health(arn)[iid])
        stopped_clock.advance(10)
    assert seen == ["initial", "initial", "healthy"]


def test_e5_reason_codes_of_draining_not_registered_and_unavailable(world, stopped_clock):
    arn = _tg(world)
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    world.elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _reasons(world, arn) == {iid: ("draining", "Target.DeregistrationInProgress")}
    stopped_clock.advance(30)
    assert _reasons(world, arn, Targets=[{"Id": iid}]) == {iid: ("unused", "Target.NotRegistered")}
    off = world.target_group(name="nochecks", HealthCheckEnabled=False)
    world.elbv2.register_targets(TargetGroupArn=off, Targets=[{"Id": iid}])
    stopped_clock.advance(300)
    assert _reasons(world, off) == {iid: ("unavailable", "Target.HealthCheckDisabled")}


def test_e5_classic_elb_counts_its_unhealthy_threshold(world, stopped_clock):
    name = world.classic_lb(interval=5, healthy_threshold=2)  # UnhealthyThreshold 2
    (iid,) = world.instances()
    world.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": iid}])

    def clb_state():
        return world.elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"][0]["State"]

    stopped_clock.advance(10)
    assert clb_state() == "InService"
    world.cloud.set_app_up(iid, False)
    stopped_clock.advance(5)
    assert clb_state() == "InService"
    stopped_clock.advance(5)
    assert clb_state() == "OutOfService"


def test_e5_app_control_over_http_and_its_validation(world, stopped_clock):
    arn = _tg(world)
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])

    def post(path, payload):
        req = urllib.request.Request(world.cloud.endpoint + path, data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    assert post("/_localcloud/app", {"instance_id": iid, "up": False}) == {"ok": True}
    stopped_clock.advance(20)
    assert world.health(arn) == {iid: "unhealthy"}
    assert post("/_localcloud/apps", {"boot_seconds": 60, "broken_launches": 2}) == {"ok": True}
    assert world.cloud.state.apps.as_dict() == {"boot_seconds": 60.0, "broken_launches": 2}
    for bad in ({"boot_seconds": -1}, {"broken_launches": "many"}, {"boot_seconds": 99999}):
        with pytest.raises(urllib.error.HTTPError) as err:
            post("/_localcloud/apps", bad)
        assert err.value.code == 400
    world.cloud.reset()
    assert world.cloud.state.apps.as_dict() == {"boot_seconds": 0.0, "broken_launches": 0}


# -- A20 ----------------------------------------------------------------------------------------------------

def test_a20_health_check_type_elb_replaces_an_unhealthy_instance_after_the_grace_period(world, stopped_clock):
    world.cloud.configure_apps(broken_launches=1)  # the first instance's app never answers
    arn = _tg(world)
    world.group("green", desired=1, target_groups=(arn,), HealthCheckType="ELB", HealthCheckGracePeriod=60)
    stopped_clock.advance(30)           # InService at 1030
    stopped_clock.advance(20)           # unhealthy at 1050
    (bad,) = world.in_service("green", 1)
    assert world.health(arn) == {bad: "unhealthy"}
    stopped_clock.advance(39)           # 1089: the grace period (from InService, 1030) is not over
    assert world.describe("green")["Instances"][0]["HealthStatus"] == "Healthy"
    assert world.states("green") == {bad: "InService"}
    stopped_clock.advance(1)            # 1090: found Unhealthy, terminated (draining), replaced
    states = world.states("green")
    assert states.pop(bad) == "Terminating"
    assert list(states.values()) == ["Pending"]
    assert {i["InstanceId"]: i["HealthStatus"] for i in world.describe("green")["Instances"]}[bad] == "Unhealthy"
    stopped_clock.advance(30)           # drained and gone; the replacement is InService (its app works)
    (good,) = world.in_service("green", 1)
    stopped_clock.advance(20)
    assert world.health(arn) == {good: "healthy"}
    assert any(e["type"] == "instance_terminated" and e["instance_id"] == bad for e in world.cloud.events())


def test_a20_health_check_type_ec2_ignores_the_load_balancer(world, stopped_clock):
    world.cloud.configure_apps(broken_launches=1)
    arn = _tg(world)
    world.group("green", desired=1, target_groups=(arn,), HealthCheckGracePeriod=60)  # EC2, the default
    stopped_clock.advance(30)
    stopped_clock.advance(600)
    (iid,) = world.in_service("green", 1)
    assert world.health(arn) == {iid: "unhealthy"}
    assert world.describe("green")["Instances"][0]["HealthStatus"] == "Healthy"


def test_a20_a_suspended_health_check_process_marks_nothing(world, stopped_clock):
    world.cloud.configure_apps(broken_launches=1)
    arn = _tg(world)
    world.group("green", desired=1, target_groups=(arn,), HealthCheckType="ELB", HealthCheckGracePeriod=0)
    world.asg.suspend_processes(AutoScalingGroupName="green", ScalingProcesses=["HealthCheck"])
    stopped_clock.advance(30)
    stopped_clock.advance(600)
    (iid,) = world.in_service("green", 1)
    assert world.health(arn) == {iid: "unhealthy"}
    world.asg.resume_processes(AutoScalingGroupName="green", ScalingProcesses=["HealthCheck"])
    stopped_clock.advance(1)
    assert world.states("green")[iid] == "Terminating"
