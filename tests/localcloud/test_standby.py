"""A1-A5 through boto3 over HTTP: standby, detach, terminate, capacity, all leaving/joining the load balancers."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import EXIT_STANDBY_SECONDS, LAUNCH_SECONDS
from tests.helpers import wait_until
from tests.localcloud.support import aws_error, matching


def test_a5_launches_pass_through_pending_then_join_the_target_group_initial(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS - 1)
    assert sorted(world.states("blue").values()) == ["Pending", "Pending"]
    assert world.health(tg) == {}  # not registered before InService
    stopped_clock.advance(1)
    ids = world.in_service("blue", 2)
    assert world.health(tg) == {i: "initial" for i in ids}
    stopped_clock.advance(5 * 30)  # E1: HealthyThresholdCount 5 x HealthCheckIntervalSeconds 30 (the defaults)
    assert world.health(tg) == {i: "healthy" for i in ids}


def test_a1_enter_standby_with_decrement_drains_then_leaves_and_capacity_drops_by_the_batch(world, stopped_clock):
    tg = world.target_group(delay=50)
    world.group("blue", desired=3, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:2], ShouldDecrementDesiredCapacity=True)
    assert world.describe("blue")["DesiredCapacity"] == 1
    assert world.health(tg) == {ids[0]: "draining", ids[1]: "draining", ids[2]: "initial"}
    assert world.states("blue") == {ids[0]: "EnteringStandby", ids[1]: "EnteringStandby", ids[2]: "InService"}
    stopped_clock.advance(50)  # the deregistration delay
    assert set(world.health(tg)) == {ids[2]}
    # no replacements with decrement
    assert world.states("blue") == {ids[0]: "Standby", ids[1]: "Standby", ids[2]: "InService"}


def test_a1_standby_without_decrement_launches_replacements(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=False)
    assert world.describe("blue")["DesiredCapacity"] == 2
    # No load balancer to drain: Standby at once; the replacement stays Pending while the clock stands still.
    states = world.states("blue")
    assert (states[ids[0]], states[ids[1]]) == ("Standby", "InService")
    assert sorted(states.values()) == ["InService", "Pending", "Standby"]


def test_a1_standby_with_decrement_below_min_size_is_refused(world):
    world.group("blue", desired=2, min_size=2)
    ids = world.wait_in_service("blue", 2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    code, message = aws_error(excinfo)
    assert code == "ValidationError"
    assert "min-size=2" in message
    assert world.states("blue") == {i: "InService" for i in ids}


def test_a1_only_in_service_instances_and_at_most_20_ids(world, stopped_clock):
    world.group("blue", desired=1)
    states = world.states("blue")
    assert list(states.values()) == ["Pending"]
    pending = list(states)
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=pending,
                                ShouldDecrementDesiredCapacity=True)
    assert aws_error(excinfo)[0] == "ValidationError"
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=[f"i-{n:017d}" for n in range(21)],
                                ShouldDecrementDesiredCapacity=True)
    assert aws_error(excinfo) == ("ValidationError",
                                  "The number of instance ids that may be passed in is limited to 20")


def test_a1_capacity_changes_do_not_reregister_standby_instances(world):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=3)
    new = wait_until(matching(lambda: world.states("blue"),
                              lambda s: list(s.values()).count("InService") == 3 and s[ids[0]] == "Standby"),
                     "3 InService and 1 Standby", 6)
    assert len(new) == 4
    assert ids[0] not in world.health(tg)


def test_a2_exit_standby_registers_again_initial_and_increments_desired(world, stopped_clock):
    tg = world.target_group(delay=30)
    world.group("blue", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    stopped_clock.advance(30)  # the deregistration delay
    assert world.states("blue") == {i: "Standby" for i in ids}
    assert world.describe("blue")["DesiredCapacity"] == 0
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)
    assert world.describe("blue")["DesiredCapacity"] == 2
    assert world.states("blue") == {i: "Pending" for i in ids}
    stopped_clock.advance(EXIT_STANDBY_SECONDS)
    assert world.in_service("blue", 2) == ids
    assert world.health(tg) == {i: "initial" for i in ids}


def test_a2_exit_standby_above_max_is_refused(world):
    world.group("blue", desired=2, max_size=2)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=False)
    wait_until(matching(lambda: world.states("blue"), lambda s: list(s.values()).count("InService") == 2),
               "replacement up")
    with pytest.raises(ClientError) as excinfo:
        world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1])
    code, message = aws_error(excinfo)
    assert code == "ValidationError"
    assert "max-size=2" in message


def test_a3_detach_leaves_the_target_group_keeps_running_and_loses_the_group_tag(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    assert world.describe("blue")["DesiredCapacity"] == 1
    assert world.health(tg)[ids[0]] == "draining"
    inst = world.ec2.describe_instances(InstanceIds=ids[:1])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running"
    assert "aws:autoscaling:groupName" not in {t["Key"] for t in inst.get("Tags", [])}
    assert world.asg.describe_auto_scaling_instances(InstanceIds=ids[:1])["AutoScalingInstances"] == []


def test_a3_detach_with_decrement_below_min_size_is_refused(world):
    world.group("blue", desired=2, min_size=2)
    ids = world.wait_in_service("blue", 2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1],
                                   ShouldDecrementDesiredCapacity=True)
    assert aws_error(excinfo)[0] == "ValidationError"
    assert len(world.states("blue")) == 2


def test_a3_detach_standby_without_decrement_keeps_desired(world):
    """The seed's footnote 2: Standby entered with decrement is already out of the desired capacity."""
    world.group("blue", desired=2, min_size=0)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    wait_until(matching(lambda: world.states("blue"), lambda s: set(s.values()) == {"Standby"}), "Standby")
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=False)
    group = world.describe("blue")
    assert group["DesiredCapacity"] == 0
    assert group["Instances"] == []


def test_a4_terminating_a_standby_instance_without_detach_leaves_a_stale_standby_entry(world):
    world.group("blue", desired=1)
    ids = world.wait_in_service("blue", 1)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    wait_until(matching(lambda: world.states("blue"), lambda s: s == {ids[0]: "Standby"}), "Standby")
    world.ec2.terminate_instances(InstanceIds=ids)
    inst = world.describe("blue")["Instances"]
    assert [(i["InstanceId"], i["LifecycleState"], i["HealthStatus"]) for i in inst] == [
        (ids[0], "Standby", "Healthy")]
    # Returned to service, the group finds it unhealthy and launches a replacement.
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)
    states = wait_until(matching(lambda: world.states("blue"),
                                 lambda s: ids[0] not in s and list(s.values()) == ["InService"]),
                        "the stale instance replaced", 5)
    assert len(states) == 1


def test_a5_desired_outside_min_max_is_refused(world):
    world.group("blue", desired=1, min_size=1, max_size=10)
    for desired, word in ((50, "above max value 10"), (0, "below min value 1")):
        with pytest.raises(ClientError) as excinfo:
            world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=desired)
        code, message = aws_error(excinfo)
        assert code == "ValidationError"
        assert word in message
    with pytest.raises(ClientError) as excinfo:
        world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", DesiredCapacity=11)
    assert aws_error(excinfo)[0] == "ValidationError"
    with pytest.raises(ClientError) as excinfo:
        world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=5, MaxSize=4)
    assert aws_error(excinfo)[0] == "ValidationError"


def test_a5_scale_in_never_picks_a_standby_instance(world):
    world.group("blue", desired=3)
    ids = world.wait_in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=0)
    states = wait_until(matching(lambda: world.states("blue"), lambda s: len(s) == 1), "scale-in done", 5)
    assert states == {ids[0]: "Standby"}


def test_a5_terminate_in_group_drains_then_the_instance_is_terminated(world, stopped_clock):
    tg = world.target_group(delay=30)
    world.group("blue", desired=1, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 1)
    world.asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    assert world.states("blue") == {ids[0]: "Terminating"}
    assert world.health(tg) == {ids[0]: "draining"}
    stopped_clock.advance(30)  # the deregistration delay
    assert world.states("blue") == {}
    inst = world.ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "terminated"
    types = [e["type"] for e in world.cloud.events() if e["instance_id"] == ids[0]]
    assert types[0] == "instance_launched"
    assert types[-1] == "instance_terminated"
    assert "target_deregistered" in types


def test_a3_detaching_standby_with_decrement_shrinks_the_group_a_second_time(world):
    """The seed's footnote 2, the hazard: decrement again and an InService instance is scaled in."""
    world.group("blue", desired=3, min_size=0)
    ids = world.wait_in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    wait_until(matching(lambda: world.states("blue"), lambda s: s[ids[0]] == "Standby"), "Standby")
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1],
                                   ShouldDecrementDesiredCapacity=True)
    assert aws_error(excinfo)[0] == "ValidationError"
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=0)
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    assert world.describe("blue")["DesiredCapacity"] == 1
    wait_until(matching(lambda: world.states("blue"), lambda s: list(s.values()) == ["InService"]),
               "one InService left", 6)


def test_e8_a_draining_target_registered_again_serves_while_its_instance_still_enters_standby(world, stopped_clock):
    tg = world.target_group(delay=300)
    world.group("blue", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    stopped_clock.advance(5 * 30)
    assert world.health(tg) == {i: "healthy" for i in ids}
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    stopped_clock.advance(10)
    assert world.health(tg) == {i: "draining" for i in ids}
    # E8: RegisterTargets while it drains registers it anew: `initial`, then the health-check run (E1).
    world.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": ids[0]}])
    assert world.health(tg) == {ids[0]: "initial", ids[1]: "draining"}
    stopped_clock.advance(5 * 30)
    assert world.health(tg) == {ids[0]: "healthy", ids[1]: "draining"}
    # A1 (unverified, conservative): the instance stays EnteringStandby until the delay the flip started is over,
    # and reaching Standby does not deregister it again.
    assert world.states("blue") == {i: "EnteringStandby" for i in ids}
    stopped_clock.advance(300 - 10 - 5 * 30)
    assert world.states("blue") == {i: "Standby" for i in ids}
    assert world.health(tg) == {ids[0]: "healthy"}
    # ExitStandby registers it again: a registered target is left as it is, still healthy (A2, E8).
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=[ids[0]])
    stopped_clock.advance(EXIT_STANDBY_SECONDS)
    assert world.states("blue")[ids[0]] == "InService"
    assert world.health(tg) == {ids[0]: "healthy"}
