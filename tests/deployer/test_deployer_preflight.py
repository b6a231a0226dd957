"""Pre-flight (issue 10, section 2): each refusal of `deploy` and `canary` exits 2 with one line naming the check,
and changes nothing: the pair reads the same before and after, no mutating call was made, no lock was written.

Driven through the in-process harness against the emulated AWS; the image checks against moto's ECR and a
registry served by the test itself (tests/deployer/preflight_support.py).
"""

from __future__ import annotations

import json

import pytest

from deployer import preflight
from tests.deployer.deployer_fixtures import group_record, ids, snapshot
from tests.deployer.harness import MUTATING
from tests.deployer.preflight_support import (
    ecr_image,
    local_registry,
    lock_objects,
    name_image,
    pair_state,
    unreachable_registry,
)
from tests.helpers import error_lines, expect_exit


def refused(fleet, *argv, check):
    """Run the command; assert exit 2 naming `check`, and that nothing changed. Returns the error line."""
    before = pair_state(fleet)
    out = fleet.bluegreen(*argv, "--output", "json")
    line = expect_exit(out, 2, f"refused before any change [{check}]")
    summary = json.loads(out.stdout)
    assert summary["refused_by"] == check and summary["exit_code"] == 2
    assert {c["id"] for c in summary["checks"]} == set(preflight.REFUSALS + preflight.WARNINGS)
    made = set(summary["aws_calls_by_op"])
    assert not made & (MUTATING | {"PutObject", "DeleteObject"}), made
    assert pair_state(fleet) == before
    assert lock_objects(fleet) == []
    return line


@pytest.fixture
def fleet(make_harness):
    return make_harness(capacity=2)


@pytest.mark.parametrize("color, process", [("blue", "Launch"), ("green", "AddToLoadBalancer"),
                                            ("green", "Terminate"), ("blue", "InstanceRefresh")])
def test_a_suspended_process_refuses_the_deploy(fleet, color, process):
    name = fleet.svc["groups"][color]
    fleet.asg.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=[process])
    line = refused(fleet, "deploy", "demo", "2.0", check="suspended-processes")
    assert f"{name} has {process} suspended" in line
    assert f"aws autoscaling resume-processes --auto-scaling-group-name {name} --scaling-processes {process}" in line


def test_processes_the_deployer_does_not_mind_are_no_refusal(fleet):
    # AZRebalance is one of the processes a deploy holds itself (HOLD_PROCESSES): suspended by the operator it is
    # recorded and left suspended, as before.
    fleet.asg.suspend_processes(AutoScalingGroupName=fleet.svc["groups"]["blue"], ScalingProcesses=["AZRebalance"])
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--dry-run"), 0)


def test_a_warm_pool_refuses_deploy_and_canary(fleet):
    fleet.asg.put_warm_pool(AutoScalingGroupName=fleet.svc["groups"]["green"], MinSize=1, PoolState="Stopped")
    refused(fleet, "deploy", "demo", "2.0", check="warm-pool")
    refused(fleet, "canary", "demo", "2.0", check="warm-pool")


def test_an_instance_refresh_in_progress_refuses(fleet):
    blue = fleet.svc["groups"]["blue"]
    refresh = fleet.asg.start_instance_refresh(AutoScalingGroupName=blue)["InstanceRefreshId"]
    line = refused(fleet, "deploy", "demo", "2.0", check="instance-refresh")
    assert f"instance refresh {refresh} on {blue} is" in line and "cancel-instance-refresh" in line


def test_capacity_in_vcpus_refuses(fleet):
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=fleet.svc["groups"]["green"], DesiredCapacityType="vcpu")
    line = refused(fleet, "deploy", "demo", "2.0", check="capacity-units")
    assert "counts capacity in vcpu" in line


def test_scale_in_protection_on_the_idle_group_refuses_with_the_command_that_clears_it(fleet):
    green = fleet.svc["groups"]["green"]
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=green, NewInstancesProtectedFromScaleIn=True)
    line = refused(fleet, "deploy", "demo", "2.0", check="scale-in-protection")
    assert f"update-auto-scaling-group --auto-scaling-group-name {green} --no-new-instances-protected" in line


def test_protection_on_the_live_group_is_a_warning_only(fleet):
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=fleet.svc["groups"]["blue"],
                                        NewInstancesProtectedFromScaleIn=True)
    proc = fleet.bluegreen("deploy", "demo", "2.0", "--dry-run")
    expect_exit(proc, 0)
    assert "pre-flight scale-in-protection:" in proc.stderr


def test_standby_instances_nobody_recorded_refuse_a_new_deploy(fleet):
    blue = fleet.svc["groups"]["blue"]
    one = min(fleet.lifecycles("blue"))
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=blue, MinSize=0)
    fleet.asg.enter_standby(AutoScalingGroupName=blue, InstanceIds=[one], ShouldDecrementDesiredCapacity=True)
    line = refused(fleet, "deploy", "demo", "2.0", check="standby-unexplained")
    assert one in line and "bluegreen rollback demo" in line


def test_groups_in_different_subnets_refuse(fleet):
    ec2 = fleet.ec2
    subnet = ec2.create_subnet(VpcId=fleet.svc["vpc_id"], CidrBlock="10.0.64.0/20",
                               AvailabilityZone=fleet.svc["region"] + "b")["Subnet"]["SubnetId"]
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=fleet.svc["groups"]["green"], VPCZoneIdentifier=subnet)
    line = refused(fleet, "deploy", "demo", "2.0", check="zones-match")
    assert subnet in line


def test_different_health_check_types_refuse(fleet):
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=fleet.svc["groups"]["green"], HealthCheckType="EC2")
    refused(fleet, "deploy", "demo", "2.0", check="health-check-type-match")


def test_a_launch_hook_on_one_group_only_refuses(fleet):
    fleet.asg.put_lifecycle_hook(LifecycleHookName="extra", AutoScalingGroupName=fleet.svc["groups"]["green"],
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=300,
                                 DefaultResult="ABANDON")
    line = refused(fleet, "canary", "demo", "2.0", check="launch-hooks-match")
    assert "extra (300 s, ABANDON)" in line


def drain_warnings(proc):
    return [line for line in proc.stderr.splitlines() if "pre-flight drain-bound:" in line]


def test_a_drain_above_the_bound_warns_and_the_deploy_goes_on(make_harness):
    # Issue 13: a rollback registers instances that still drain directly, so a long drain delays only its
    # settled stage and finalize; a 600 s delay is a warning, no longer a refusal (exit 2).
    fleet = make_harness(capacity=2, deregistration_delay=600)
    proc = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(proc, 0)
    [line] = drain_warnings(proc)
    assert "/demo-tg/" in line and "drains for 600 s, above 300 s" in line and "settled stage and a finalize wait" in line
    assert "--max-drain 600" in line
    fleet.assert_flipped("green", 2, "2.0")
    # --max-drain still sets the bound: at 600 s the warning is gone, and the check passes.
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    quiet = fleet.bluegreen("deploy", "demo", "2.0", "--dry-run", "--max-drain", "600")
    expect_exit(quiet, 0)
    assert drain_warnings(quiet) == []


def test_classic_elb_connection_draining_counts_too(make_harness):
    fleet = make_harness(capacity=1, classic_elb=True)
    fleet.session.client("elb").modify_load_balancer_attributes(
        LoadBalancerName=fleet.svc["classic_elb"],
        LoadBalancerAttributes={"ConnectionDraining": {"Enabled": True, "Timeout": 1200}})
    proc = fleet.bluegreen("deploy", "demo", "2.0", "--dry-run", "--output", "json")
    expect_exit(proc, 0)
    [line] = drain_warnings(proc)
    assert f"{fleet.svc['classic_elb']} drains for 1200 s, above 300 s" in line


def test_an_unreadable_bootstrap_manifest_refuses(fleet):
    s3 = fleet.session.client("s3")
    s3.delete_object(Bucket="bluegreen-bootstrap", Key="demo/manifest.json")
    line = refused(fleet, "deploy", "demo", "2.0", check="bootstrap-manifest")
    assert "s3://bluegreen-bootstrap/demo/manifest.json" in line and "push-bootstrap" in line
    s3.put_object(Bucket="bluegreen-bootstrap", Key="demo/manifest.json", Body=b'{"files": []}')
    line = refused(fleet, "deploy", "demo", "2.0", check="bootstrap-manifest")
    assert "not a manifest the agent accepts" in line


def test_a_version_missing_from_ecr_refuses_and_one_present_passes(fleet):
    image = ecr_image(fleet.session, "demo-web", tags=("2.0",))
    name_image(fleet, image)
    line = refused(fleet, "deploy", "demo", "2.9", check="image-exists")
    assert f"{image}:2.9 does not exist" in line
    ok = fleet.bluegreen("deploy", "demo", "2.0", "--dry-run", "--output", "json")
    expect_exit(ok, 0)
    assert json.loads(ok.stdout)["aws_calls_by_op"]["DescribeImages"] == 1
    assert "image-exists" not in ok.stderr


def test_a_version_missing_from_a_registry_refuses_and_one_present_passes(fleet):
    with local_registry({"web": {"2.0"}}) as host:
        name_image(fleet, f"{host}/web")
        line = refused(fleet, "deploy", "demo", "2.9", check="image-exists")
        assert f"HEAD http://{host}/v2/web/manifests/2.9: 404" in line
        expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--dry-run"), 0)


def test_the_registry_bearer_token_flow(fleet):
    with local_registry({"team/web": {"2.0"}}, token="t0ken") as host:
        name_image(fleet, f"{host}/team/web")
        refused(fleet, "canary", "demo", "2.9", check="image-exists")
        proc = fleet.bluegreen("canary", "demo", "2.0", "--dry-run")
        expect_exit(proc, 0)
        assert "image-exists" not in proc.stderr


def test_an_unreachable_registry_is_one_warning_and_the_deploy_goes_on(fleet):
    name_image(fleet, f"{unreachable_registry()}/web")
    proc = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(proc, 0)
    warnings = [line for line in proc.stderr.splitlines() if "pre-flight image-exists" in line]
    assert len(warnings) == 1 and "cannot be reached" in warnings[0]
    assert error_lines(proc) == []
    fleet.assert_flipped("green", 2, "2.0")


# -- resuming ------------------------------------------------------------------------------------------


def test_a_resumed_deploy_is_not_refused_for_the_standby_instances_it_put_there(fleet):
    crashed = fleet.bluegreen("deploy", "demo", "2.0", crash_at="wait-deregistered")
    assert crashed.returncode == -9
    assert set(fleet.lifecycles("blue").values()) <= {"EnteringStandby", "Standby"}
    # A new deploy of another version is the planner's to refuse (exit 3, the lock), not pre-flight's.
    expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 3, "is held by deploy 2.0")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 2, "2.0")


def test_a_resumed_deploy_still_refuses_what_it_did_not_cause(fleet):
    crashed = fleet.bluegreen("deploy", "demo", "2.0", crash_at="enter-standby")
    assert crashed.returncode == -9
    blue = fleet.svc["groups"]["blue"]
    fleet.asg.suspend_processes(AutoScalingGroupName=blue, ScalingProcesses=["Launch"])
    before = pair_state(fleet)
    line = expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 2, "[suspended-processes]")
    assert f"{blue} has Launch suspended" in line
    assert pair_state(fleet) == before
    fleet.asg.resume_processes(AutoScalingGroupName=blue, ScalingProcesses=["Launch"])
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 2, "2.0")


# -- the checks as pure functions --------------------------------------------------------------------------


def facts(blue=None, green=None, **fields):
    snap = snapshot(blue or group_record("blue", (2, 2, 4), ids("b", 2)), green or group_record("green", (0, 0, 0)))
    return preflight.Facts(snap, **fields)


@pytest.mark.parametrize("status, verdict", [("InProgress", "fail"), ("Pending", "fail"), ("Cancelling", "fail"),
                                             ("RollbackInProgress", "fail"), ("Baking", "fail"),
                                             ("Successful", "pass"), ("Cancelled", "pass")])
def test_an_active_instance_refresh_fails_the_check(status, verdict):
    refreshes = {"blue": [{"InstanceRefreshId": "r-1", "Status": status}], "green": []}
    check = preflight.check_refreshes(facts(refreshes=refreshes))
    assert check.status == verdict
    if verdict == "fail":
        assert "r-1 on demo-blue is " + status in check.message and "cancel-instance-refresh" in check.fix


def test_capacity_in_vcpus_or_weights_fails_the_check():
    vcpu = dict(group_record("green", (0, 0, 0)), DesiredCapacityType="vcpu")
    assert preflight.check_capacity_units(facts(green=vcpu)).status == "fail"
    weighted = dict(group_record("green", (0, 0, 0)), MixedInstancesPolicy={"LaunchTemplate": {"Overrides": [
        {"InstanceType": "m5.large", "WeightedCapacity": "2"}, {"InstanceType": "m5.xlarge", "WeightedCapacity": "4"}]}})
    check = preflight.check_capacity_units(facts(green=weighted))
    assert check.status == "fail" and "weighs its instances (2, 4)" in check.message
    ones = dict(group_record("green", (0, 0, 0)), MixedInstancesPolicy={"LaunchTemplate": {"Overrides": [
        {"InstanceType": "m5.large", "WeightedCapacity": "1"}]}})
    assert preflight.check_capacity_units(facts(green=ones)).status == "pass"


def test_protected_instances_in_the_idle_group_fail_with_set_instance_protection():
    green = group_record("green", (0, 1, 1), ids("g", 1))
    green["Instances"][0]["ProtectedFromScaleIn"] = True
    blue = group_record("blue", (2, 2, 4), ids("b", 2), tags={"bluegreen:operation": (
        "action=canary;phase=serving;version=2.0;live=blue;started=x;holder=y")})
    check = preflight.check_protection(facts(blue=blue, green=green))
    assert check.status == "fail"
    assert ("set-instance-protection --auto-scaling-group-name demo-green --instance-ids i-g00000 "
            "--no-protected-from-scale-in") in check.fix


def test_a_predictive_policy_that_scales_is_a_warning_and_one_that_only_forecasts_is_not():
    def policy(mode):
        return {"PolicyName": "predict", "PolicyType": "PredictiveScaling",
                "PredictiveScalingConfiguration": {"Mode": mode} if mode else {}}
    check = preflight.check_predictive(facts(policies=[policy("ForecastAndScale")]))
    assert check.status == "warn" and "predict" in check.message and "ForecastOnly" in check.fix
    # AWS's default Mode is ForecastOnly: it forecasts and never changes capacity.
    assert preflight.check_predictive(facts(policies=[policy("ForecastOnly"), policy(None)])).status == "pass"


def test_an_nlb_target_group_without_connection_termination_is_a_warning():
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tcp/0123"
    nlb = {arn: {"TargetGroupArn": arn, "Protocol": "TCP"}}
    check = preflight.check_nlb_termination(facts(target_groups=nlb, tg_attributes={arn: {}}))
    assert check.status == "warn" and "connection_termination.enabled,Value=true" in check.fix
    on = {arn: {"deregistration_delay.connection_termination.enabled": "true"}}
    assert preflight.check_nlb_termination(facts(target_groups=nlb, tg_attributes=on)).status == "pass"
    alb = {arn: {"TargetGroupArn": arn, "Protocol": "HTTP"}}
    assert preflight.check_nlb_termination(facts(target_groups=alb, tg_attributes={arn: {}})).status == "pass"


def test_a_copy_name_past_255_characters_refuses_the_deploy(fleet):
    # W1, A7: the copy of this alarm for demo-green would be named <alarm>--bluegreen-demo-green, 22 more
    # characters; CloudWatch would refuse it after the new fleet launched.
    name = "cpu-" + "x" * 230
    fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-blue", PolicyName="out", PolicyType="StepScaling",
                                 AdjustmentType="ChangeInCapacity",
                                 StepAdjustments=[{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}])
    (pol,) = fleet.asg.describe_policies(AutoScalingGroupName="demo-blue")["ScalingPolicies"]
    fleet.session.client("cloudwatch").put_metric_alarm(
        AlarmName=name, Namespace="AWS/EC2", MetricName="CPUUtilization", Statistic="Average", Period=60,
        EvaluationPeriods=2, Threshold=70, ComparisonOperator="GreaterThanThreshold", AlarmActions=[pol["PolicyARN"]])
    line = refused(fleet, "deploy", "demo", "2.0", check="copy-names")
    assert f"would be named with {len(name) + 22} characters, above AWS's 255" in line
    assert "--bluegreen-demo-green) fits 255" in line
