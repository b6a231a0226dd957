"""A1-A5 through boto3 over HTTP: standby, detach, terminate, capacity, all leaving/joining the load balancers."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def _error(excinfo) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def test_a5_launches_pass_through_pending_then_join_the_target_group_initial(world, wait_for):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    assert sorted(world.states("blue").values()) == ["Pending", "Pending"]
    assert world.health(tg) == {}  # not registered before InService
    ids = world.wait_in_service("blue", 2)
    assert world.health(tg) == {i: "initial" for i in ids}
    # E1 at the test time scale: 5 x 30 s x 0.01 = 1.5 s
    wait_for(lambda: world.health(tg), lambda h: h == {i: "healthy" for i in ids}, "both targets healthy", 5)


def test_a1_enter_standby_with_decrement_drains_then_leaves_and_capacity_drops_by_the_batch(world, wait_for):
    tg = world.target_group(delay=50)  # 0.5 s here
    world.group("blue", desired=3, target_groups=(tg,))
    ids = world.wait_in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:2], ShouldDecrementDesiredCapacity=True)
    group = world.describe("blue")
    assert group["DesiredCapacity"] == 1
    assert world.health(tg)[ids[0]] == "draining"
    assert world.health(tg)[ids[1]] == "draining"
    wait_for(lambda: world.health(tg), lambda h: set(h) == {ids[2]}, "standby targets gone after draining", 5)
    states = wait_for(lambda: world.states("blue"), lambda s: s[ids[0]] == "Standby" and s[ids[1]] == "Standby",
                      "Standby after EnteringStandby", 5)
    assert states[ids[2]] == "InService"
    assert len(states) == 3  # no replacements with decrement


def test_a1_standby_without_decrement_launches_replacements(world):
    world.group("blue", desired=2)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=False)
    states = world.states("blue")
    assert world.describe("blue")["DesiredCapacity"] == 2
    assert len(states) == 3
    assert sorted(states.values()) == ["InService", "Pending", "Standby"] or \
        sorted(states.values()) == ["EnteringStandby", "InService", "Pending"]


def test_a1_standby_with_decrement_below_min_size_is_refused(world):
    world.group("blue", desired=2, min_size=2)
    ids = world.wait_in_service("blue", 2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    code, message = _error(excinfo)
    assert code == "ValidationError"
    assert "min-size=2" in message
    assert world.states("blue") == {i: "InService" for i in ids}


def test_a1_only_in_service_instances_and_at_most_20_ids(world, wait_for):
    world.group("blue", desired=1)
    wait_for(lambda: world.states("blue"), lambda s: len(s) == 1, "one instance")
    pending = list(world.states("blue"))
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=pending,
                                ShouldDecrementDesiredCapacity=True)
    assert _error(excinfo)[0] == "ValidationError"
    with pytest.raises(ClientError) as excinfo:
        world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=[f"i-{n:017d}" for n in range(21)],
                                ShouldDecrementDesiredCapacity=True)
    assert _error(excinfo) == ("ValidationError", "The number of instance ids that may be passed in is limited to 20")


def test_a1_capacity_changes_do_not_reregister_standby_instances(world, wait_for):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=3)
    new = wait_for(lambda: world.states("blue"),
                   lambda s: list(s.values()).count("InService") == 3 and s[ids[0]] == "Standby",
                   "3 InService and 1 Standby", 6)
    assert len(new) == 4
    assert ids[0] not in world.health(tg)


def test_a2_exit_standby_registers_again_initial_and_increments_desired(world, wait_for):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    wait_for(lambda: world.states("blue"), lambda s: set(s.values()) == {"Standby"}, "both Standby", 5)
    assert world.describe("blue")["DesiredCapacity"] == 0
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)
    assert world.describe("blue")["DesiredCapacity"] == 2
    assert set(world.states("blue").values()) == {"Pending"}
    world.wait_in_service("blue", 2)
    assert world.health(tg) == {i: "initial" for i in ids}


def test_a2_exit_standby_above_max_is_refused(world, wait_for):
    world.group("blue", desired=2, max_size=2)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=False)
    wait_for(lambda: world.states("blue"), lambda s: list(s.values()).count("InService") == 2, "replacement up")
    with pytest.raises(ClientError) as excinfo:
        world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1])
    code, message = _error(excinfo)
    assert code == "ValidationError"
    assert "max-size=2" in message


def test_a3_detach_leaves_the_target_group_keeps_running_and_loses_the_group_tag(world):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    ids = world.wait_in_service("blue", 2)
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
    assert _error(excinfo)[0] == "ValidationError"
    assert len(world.states("blue")) == 2


def test_a3_detach_standby_without_decrement_keeps_desired(world, wait_for):
    """The seed's footnote 2: Standby entered with decrement is already out of the desired capacity."""
    world.group("blue", desired=2, min_size=0)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    wait_for(lambda: world.states("blue"), lambda s: set(s.values()) == {"Standby"}, "Standby")
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=False)
    group = world.describe("blue")
    assert group["DesiredCapacity"] == 0
    assert group["Instances"] == []


def test_a4_terminating_a_standby_instance_without_detach_leaves_a_stale_standby_entry(world, wait_for):
    world.group("blue", desired=1)
    ids = world.wait_in_service("blue", 1)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    wait_for(lambda: world.states("blue"), lambda s: s == {ids[0]: "Standby"}, "Standby")
    world.ec2.terminate_instances(InstanceIds=ids)
    inst = world.describe("blue")["Instances"]
    assert [(i["InstanceId"], i["LifecycleState"], i["HealthStatus"]) for i in inst] == [
        (ids[0], "Standby", "Healthy")]
    # Returned to service, the group finds it unhealthy and launches a replacement.
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)
    states = wait_for(lambda: world.states("blue"), lambda s: ids[0] not in s and list(s.values()) == ["InService"],
                      "the stale instance replaced", 5)
    assert len(states) == 1


def test_a5_desired_outside_min_max_is_refused(world):
    world.group("blue", desired=1, min_size=1, max_size=10)
    for desired, word in ((50, "above max value 10"), (0, "below min value 1")):
        with pytest.raises(ClientError) as excinfo:
            world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=desired)
        code, message = _error(excinfo)
        assert code == "ValidationError"
        assert word in message
    with pytest.raises(ClientError) as excinfo:
        world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", DesiredCapacity=11)
    assert _error(excinfo)[0] == "ValidationError"
    with pytest.raises(ClientError) as excinfo:
        world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=5, MaxSize=4)
    assert _error(excinfo)[0] == "ValidationError"


def test_a5_scale_in_never_picks_a_standby_instance(world, wait_for):
    world.group("blue", desired=3)
    ids = world.wait_in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=0)
    states = wait_for(lambda: world.states("blue"), lambda s: len(s) == 1, "scale-in done", 5)
    assert states == {ids[0]: "Standby"}


def test_a5_terminate_in_group_drains_then_the_instance_is_terminated(world, wait_for):
    tg = world.target_group()
    world.group("blue", desired=1, target_groups=(tg,))
    ids = world.wait_in_service("blue", 1)
    world.asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    assert world.states("blue") == {ids[0]: "Terminating"}
    assert world.health(tg) == {ids[0]: "draining"}
    wait_for(lambda: world.states("blue"), lambda s: s == {}, "terminated instance gone", 6)
    inst = world.ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "terminated"
    types = [e["type"] for e in world.cloud.events() if e["instance_id"] == ids[0]]
    assert types[0] == "instance_launched"
    assert types[-1] == "instance_terminated"
    assert "target_deregistered" in types


def test_a3_detaching_standby_with_decrement_shrinks_the_group_a_second_time(world, wait_for):
    """The seed's footnote 2, the hazard: decrement again and an InService instance is scaled in."""
    world.group("blue", desired=3, min_size=0)
    ids = world.wait_in_service("blue", 3)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    wait_for(lambda: world.states("blue"), lambda s: s[ids[0]] == "Standby", "Standby")
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1],
                                   ShouldDecrementDesiredCapacity=True)
    assert _error(excinfo)[0] == "ValidationError"
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MinSize=0)
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    assert world.describe("blue")["DesiredCapacity"] == 1
    wait_for(lambda: world.states("blue"), lambda s: list(s.values()) == ["InService"], "one InService left", 6)
