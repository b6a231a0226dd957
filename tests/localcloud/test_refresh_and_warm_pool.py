"""A16 (instance refresh) and A17 (warm pools), as far as a tool must detect them."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import LAUNCH_SECONDS
from tests.localcloud.support import aws_error


def _refresh(world, name: str) -> dict:
    return world.asg.describe_instance_refreshes(AutoScalingGroupName=name)["InstanceRefreshes"][0]


def test_a16_an_instance_refresh_replaces_the_instances_batch_by_batch(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    old = world.in_service("blue", 2)
    refresh_id = world.asg.start_instance_refresh(AutoScalingGroupName="blue")["InstanceRefreshId"]
    listed = _refresh(world, "blue")
    assert (listed["InstanceRefreshId"], listed["Status"], listed["InstancesToUpdate"]) == (refresh_id, "InProgress", 1)
    # One batch at a time (MinHealthyPercentage 90: one instance of two): one old one is replaced first.
    states = world.states("blue")
    assert [states.get(i) for i in old].count("InService") == 1
    assert [v for i, v in states.items() if i not in old] == ["Pending"]
    with pytest.raises(ClientError) as excinfo:
        world.asg.start_instance_refresh(AutoScalingGroupName="blue")
    assert aws_error(excinfo)[0] == "InstanceRefreshInProgress"
    for _ in range(4):
        stopped_clock.advance(LAUNCH_SECONDS)
    new = world.in_service("blue", 2)
    assert not set(new) & set(old)
    done = _refresh(world, "blue")
    assert (done["Status"], done["PercentageComplete"], done["InstancesToUpdate"]) == ("Successful", 100, 0)


def test_a16_suspended_instance_refresh_waits_and_cancel_stops_it(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    old = world.in_service("blue", 2)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["InstanceRefresh"])
    world.asg.start_instance_refresh(AutoScalingGroupName="blue", Preferences={"MinHealthyPercentage": 100})
    stopped_clock.advance(LAUNCH_SECONDS)
    assert _refresh(world, "blue")["Status"] == "Pending"
    assert world.in_service("blue", 2) == old
    world.asg.cancel_instance_refresh(AutoScalingGroupName="blue")
    stopped_clock.advance(1)
    assert _refresh(world, "blue")["Status"] == "Cancelled"
    with pytest.raises(ClientError) as excinfo:
        world.asg.cancel_instance_refresh(AutoScalingGroupName="blue")
    assert aws_error(excinfo)[0] == "ActiveInstanceRefreshNotFound"
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["InstanceRefresh"])
    stopped_clock.advance(LAUNCH_SECONDS)
    assert world.in_service("blue", 2) == old


def test_a16_standby_instances_terminate_preference_terminates_them(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    old = world.in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=old[:1], ShouldDecrementDesiredCapacity=True)
    stopped_clock.advance(1)
    world.asg.start_instance_refresh(AutoScalingGroupName="blue", Preferences={"StandbyInstances": "Terminate"})
    for _ in range(4):
        stopped_clock.advance(LAUNCH_SECONDS)
    assert old[0] not in world.states("blue")  # the Standby instance (A16: a flip's old fleet) is gone
    assert _refresh(world, "blue")["Status"] == "Successful"


def _pool(world, name: str) -> dict[str, str]:
    reply = world.asg.describe_warm_pool(AutoScalingGroupName=name)
    return {i["InstanceId"]: i["LifecycleState"] for i in reply["Instances"]}


def test_a17_a_warm_pool_is_listed_apart_and_a_scale_out_takes_from_it(world, stopped_clock):
    world.group("blue", desired=1, max_size=3)
    world.asg.put_warm_pool(AutoScalingGroupName="blue", PoolState="Running", MinSize=1)
    stopped_clock.advance(1)
    # A17: MaxSize 3 - desired 1 = 2 pool instances, launching, outside the group.
    pool = _pool(world, "blue")
    assert sorted(pool.values()) == ["Warmed:Pending"] * 2
    stopped_clock.advance(LAUNCH_SECONDS)
    assert sorted(_pool(world, "blue").values()) == ["Warmed:Running"] * 2
    (member,) = world.in_service("blue", 1)
    assert not set(pool) & {member}  # DescribeAutoScalingGroups lists no pool instance
    listed = {d["InstanceId"]: d["LifecycleState"]
              for d in world.asg.describe_auto_scaling_instances()["AutoScalingInstances"]}
    assert listed == {member: "InService", **{i: "Warmed:Running" for i in pool}}
    config = world.asg.describe_warm_pool(AutoScalingGroupName="blue")["WarmPoolConfiguration"]
    assert (config["PoolState"], config["MinSize"]) == ("Running", 1)
    # A scale-out takes a warmed instance (no fresh launch); the pool refills to max(MinSize, 3 - 2) = 1.
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=2)
    states = world.states("blue")
    (taken,) = [i for i in states if i != member]
    assert taken in pool and states[taken] == "Pending"
    activity = world.asg.describe_scaling_activities(AutoScalingGroupName="blue")["Activities"][0]
    assert activity["Description"] == f"Launching a new EC2 instance from warm pool: {taken}"
    stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("blue", 2)
    assert list(_pool(world, "blue").values()) == ["Warmed:Running"]
    world.asg.delete_warm_pool(AutoScalingGroupName="blue", ForceDelete=True)
    stopped_clock.advance(1)
    assert world.asg.describe_warm_pool(AutoScalingGroupName="blue")["Instances"] == []
    assert len(world.asg.describe_auto_scaling_instances()["AutoScalingInstances"]) == 2
