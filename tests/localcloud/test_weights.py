"""A18: weights and DesiredCapacityType. Sizes are in capacity units: each instance counts its weight."""

from __future__ import annotations

from localcloud.aws.autoscaling import LAUNCH_SECONDS


def _mixed(world, weight: str) -> dict:
    return {"LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": world.template},
                               "Overrides": [{"InstanceType": "t3.micro", "WeightedCapacity": weight},
                                             {"InstanceType": "t3.large", "WeightedCapacity": "4"}]}}


def test_a18_weighted_capacity_counts_units_and_is_reported(world, stopped_clock):
    world.asg.create_auto_scaling_group(
        AutoScalingGroupName="blue", MinSize=0, MaxSize=20, DesiredCapacity=6, VPCZoneIdentifier=world.subnet,
        MixedInstancesPolicy=_mixed(world, "2"), DesiredCapacityType="units")
    stopped_clock.advance(LAUNCH_SECONDS)
    group = world.describe("blue")
    assert group["DesiredCapacityType"] == "units"
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert [(o["InstanceType"], o["WeightedCapacity"]) for o in overrides] == [("t3.micro", "2"), ("t3.large", "4")]
    # A18: 6 units of weight-2 t3.micro instances are 3 instances, not 6.
    assert [(i["LifecycleState"], i["WeightedCapacity"]) for i in group["Instances"]] == [("InService", "2")] * 3
    details = world.asg.describe_auto_scaling_instances()["AutoScalingInstances"]
    assert {d["WeightedCapacity"] for d in details} == {"2"}
    # Desired 5 units: 3 instances (6 units) overshoot, but 2 (4 units) would be below desired: none goes.
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=5)
    stopped_clock.advance(1)
    assert len(world.in_service("blue", 3)) == 3
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=2)
    stopped_clock.advance(1)
    world.in_service("blue", 1)


def test_a18_vcpu_capacity_type_weighs_instances_by_vcpus(world, stopped_clock):
    world.asg.create_auto_scaling_group(
        AutoScalingGroupName="blue", MinSize=0, MaxSize=20, DesiredCapacity=4, VPCZoneIdentifier=world.subnet,
        LaunchTemplate={"LaunchTemplateId": world.template}, DesiredCapacityType="vcpu")
    stopped_clock.advance(LAUNCH_SECONDS)
    group = world.describe("blue")
    assert group["DesiredCapacityType"] == "vcpu"
    assert [i["WeightedCapacity"] for i in group["Instances"]] == ["2", "2"]  # t3.micro: 2 vCPUs


def test_a18_without_weights_an_instance_is_one_unit_and_no_weight_is_reported(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    group = world.describe("blue")
    assert "DesiredCapacityType" not in group
    assert [i.get("WeightedCapacity") for i in group["Instances"]] == [None, None]
