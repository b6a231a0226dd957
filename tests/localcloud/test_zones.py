"""A19: a group over several zones spreads its instances evenly, scales in from the fullest zone, and
AZRebalance launches first, then terminates, to even out an imbalance."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import LAUNCH_SECONDS
from localcloud.scenario import create_service
from tests.localcloud.support import aws_error


def _zones(world, name: str) -> dict[str, str]:
    return {i["InstanceId"]: i["AvailabilityZone"] for i in world.describe(name)["Instances"]}


def test_a19_a_group_spreads_evenly_over_its_subnets_zones(world, stopped_clock):
    subnets = world.zone_subnets(3)
    world.group("blue", desired=6, VPCZoneIdentifier=",".join(subnets))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 6)
    zones = _zones(world, "blue")
    assert Counter(zones.values()) == {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 2}
    # EC2 agrees: each instance is in the subnet of the zone the group reports.
    subnet_zone = dict(zip(subnets, ("us-east-1a", "us-east-1b", "us-east-1c")))
    reservations = world.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        assert inst["Placement"]["AvailabilityZone"] == zones[inst["InstanceId"]]
        assert subnet_zone[inst["SubnetId"]] == zones[inst["InstanceId"]]
    # Scale-in takes from the fullest zones: 4 left, never 2 from one zone and 0 from another.
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=4)
    stopped_clock.advance(1)
    assert sorted(Counter(_zones(world, "blue").values()).values()) == [1, 1, 2]


def test_a19_az_rebalance_launches_first_then_terminates(world, stopped_clock):
    world.group("blue", desired=4)  # one subnet: all in us-east-1a
    stopped_clock.advance(LAUNCH_SECONDS)
    old = world.in_service("blue", 4)
    subnets = world.zone_subnets(2)
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", VPCZoneIdentifier=",".join(subnets))
    stopped_clock.advance(1)
    states = world.states("blue")
    new = [i for i in states if i not in old]
    # Launch first: one new instance in us-east-1b, nothing terminated yet; the group runs above desired.
    assert len(new) == 1 and states[new[0]] == "Pending"
    assert [states[i] for i in old] == ["InService"] * 4
    assert _zones(world, "blue")[new[0]] == "us-east-1b"
    assert world.describe("blue")["DesiredCapacity"] == 4
    for _ in range(4):
        stopped_clock.advance(LAUNCH_SECONDS)
    # Then terminate: two and two, desired never changed.
    world.in_service("blue", 4)
    assert Counter(_zones(world, "blue").values()) == {"us-east-1a": 2, "us-east-1b": 2}
    assert world.describe("blue")["DesiredCapacity"] == 4


def test_a19_az_rebalance_suspended_leaves_the_imbalance(world, stopped_clock):
    world.group("blue", desired=4)
    stopped_clock.advance(LAUNCH_SECONDS)
    old = world.in_service("blue", 4)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["AZRebalance"])
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", VPCZoneIdentifier=",".join(world.zone_subnets(2)))
    stopped_clock.advance(LAUNCH_SECONDS)
    assert world.in_service("blue", 4) == old


def test_a19_scenario_creates_a_pair_over_several_zones(world, stopped_clock):
    svc = create_service(boto3.session.Session(), name="multi", capacity=3, zones=3)
    assert svc["zones"] == ["us-east-1a", "us-east-1b", "us-east-1c"] and len(svc["subnet_ids"]) == 3
    for color in ("blue", "green"):
        assert world.describe(svc["groups"][color])["VPCZoneIdentifier"] == ",".join(svc["subnet_ids"])
    stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("multi-blue", 3)
    assert sorted(_zones(world, "multi-blue").values()) == svc["zones"]


def test_a19_lifecycle_hook_specification_list_holds_the_very_first_instances(world, stopped_clock):
    world.group("blue", desired=2, LifecycleHookSpecificationList=[{
        "LifecycleHookName": "boot", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
        "HeartbeatTimeout": 300, "DefaultResult": "ABANDON"}])
    hooks = world.asg.describe_lifecycle_hooks(AutoScalingGroupName="blue")["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["HeartbeatTimeout"], h["DefaultResult"]) for h in hooks] == [
        ("boot", 300, "ABANDON")]
    stopped_clock.advance(LAUNCH_SECONDS)
    states = world.states("blue")
    assert sorted(states.values()) == ["Pending:Wait", "Pending:Wait"]  # A6 from the very first launch
    for iid in states:
        world.asg.complete_lifecycle_action(AutoScalingGroupName="blue", LifecycleHookName="boot", InstanceId=iid,
                                            LifecycleActionResult="CONTINUE")
    stopped_clock.advance(2)
    world.in_service("blue", 2)


def test_a19_a_bad_hook_specification_refuses_the_group(world):
    with pytest.raises(ClientError) as excinfo:
        world.group("blue", desired=1, LifecycleHookSpecificationList=[{
            "LifecycleHookName": "boot", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "HeartbeatTimeout": 10}])
    assert aws_error(excinfo) == ("ValidationError", "Heartbeat timeout must be between 30 and 7200 seconds, got 10")
    assert world.asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_a19_scale_in_takes_from_the_fullest_zone_not_simply_the_oldest(world, stopped_clock):
    world.group("blue", desired=2)  # both in us-east-1a: the oldest two
    stopped_clock.advance(LAUNCH_SECONDS)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["AZRebalance"])
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", VPCZoneIdentifier=",".join(world.zone_subnets(2)),
                                        DesiredCapacity=4)
    stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("blue", 4)
    assert Counter(_zones(world, "blue").values()) == {"us-east-1a": 2, "us-east-1b": 2}
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=2)
    stopped_clock.advance(1)
    world.in_service("blue", 2)
    assert Counter(_zones(world, "blue").values()) == {"us-east-1a": 1, "us-east-1b": 1}


def test_a19_standby_can_unbalance_the_zones_and_az_rebalance_acts_unless_held(world, stopped_clock):
    subnets = ",".join(world.zone_subnets(2))
    for name, held in (("blue", False), ("green", True)):
        world.group(name, desired=6, VPCZoneIdentifier=subnets)
        stopped_clock.advance(LAUNCH_SECONDS)
        if held:
            world.asg.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
        in_a = sorted(i for i, z in _zones(world, name).items() if z == "us-east-1a")[:2]
        world.asg.enter_standby(AutoScalingGroupName=name, InstanceIds=in_a, ShouldDecrementDesiredCapacity=True)
        for _ in range(3):
            stopped_clock.advance(LAUNCH_SECONDS)
        serving = [i["AvailabilityZone"] for i in world.describe(name)["Instances"] if i["LifecycleState"] == "InService"]
        # A19: 1 in us-east-1a against 3 in us-east-1b is evened out to 2 and 2, unless AZRebalance is held.
        assert Counter(serving) == ({"us-east-1a": 1, "us-east-1b": 3} if held else {"us-east-1a": 2, "us-east-1b": 2})
