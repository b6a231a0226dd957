"""Edges of A3, A5, A8, A11, A12 and the load balancer attachment calls, through boto3 over HTTP."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import EXIT_STANDBY_SECONDS, LAUNCH_SECONDS
from localcloud.aws.moto_seam import AutoScalingBackend
from tests.helpers import wait_until
from tests.localcloud.support import aws_error, matching


def test_a5_new_max_below_desired_clamps_the_desired_capacity(world):
    world.group("blue", desired=3, max_size=5)
    world.asg.update_auto_scaling_group(AutoScalingGroupName="blue", MaxSize=1)
    group = world.describe("blue")
    assert (group["MaxSize"], group["DesiredCapacity"]) == (1, 1)
    wait_until(matching(lambda: world.states("blue"), lambda s: list(s.values()) == ["InService"]), "scale-in to 1", 6)


def test_a5_scale_in_spares_protected_instances(world):
    world.group("blue", desired=2)
    ids = world.wait_in_service("blue", 2)
    world.asg.set_instance_protection(AutoScalingGroupName="blue", InstanceIds=ids[:1], ProtectedFromScaleIn=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=1)
    left = wait_until(matching(lambda: world.states("blue"), lambda s: len(s) == 1), "scale-in to 1", 6)
    assert left == {ids[0]: "InService"}


def test_a8_unhealthy_instances_are_replaced_unless_replace_unhealthy_is_suspended(world):
    world.group("blue", desired=1)
    ids = world.wait_in_service("blue", 1)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["ReplaceUnhealthy"])
    world.asg.set_instance_health(InstanceId=ids[0], HealthStatus="Unhealthy")
    world.cloud.tick()
    assert world.states("blue") == {ids[0]: "InService"}
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["ReplaceUnhealthy"])
    states = wait_until(matching(lambda: world.states("blue"),
                                 lambda s: ids[0] not in s and list(s.values()) == ["InService"]),
                        "the unhealthy instance replaced", 6)
    assert len(states) == 1


def test_a5_terminating_a_standby_instance_keeps_the_desired_capacity(world):
    world.group("blue", desired=2)
    ids = world.wait_in_service("blue", 2)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    wait_until(matching(lambda: world.states("blue"), lambda s: s[ids[0]] == "Standby"), "Standby")
    world.asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    states = wait_until(matching(lambda: world.states("blue"), lambda s: ids[0] not in s),
                        "the Standby instance terminated", 6)
    assert states == {ids[1]: "InService"}
    assert world.describe("blue")["DesiredCapacity"] == 1


def test_a5_terminate_with_decrement_below_min_is_refused(world):
    world.group("blue", desired=1, min_size=1)
    ids = world.wait_in_service("blue", 1)
    with pytest.raises(ClientError) as excinfo:
        world.asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    assert aws_error(excinfo)[0] == "ValidationError"
    assert world.states("blue") == {ids[0]: "InService"}


def test_a3_attach_instances_join_and_respect_max_size(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=0, max_size=1, target_groups=(tg,))
    loose = world.instances(2)
    with pytest.raises(ClientError) as excinfo:
        world.asg.attach_instances(AutoScalingGroupName="blue", InstanceIds=loose)
    assert aws_error(excinfo)[0] == "ValidationError"
    world.asg.attach_instances(AutoScalingGroupName="blue", InstanceIds=loose[:1])
    assert world.describe("blue")["DesiredCapacity"] == 1
    assert world.states("blue") == {loose[0]: "Pending"}
    stopped_clock.advance(EXIT_STANDBY_SECONDS)
    assert world.in_service("blue", 1) == loose[:1]
    assert world.health(tg) == {loose[0]: "initial"}


def test_attach_and_detach_target_groups_register_and_drain_in_service_instances(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=1)
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 1)
    world.asg.attach_load_balancer_target_groups(AutoScalingGroupName="blue", TargetGroupARNs=[tg])
    assert world.health(tg) == {ids[0]: "initial"}
    world.asg.detach_load_balancer_target_groups(AutoScalingGroupName="blue", TargetGroupARNs=[tg])
    assert world.health(tg) == {ids[0]: "draining"}
    assert world.asg.describe_load_balancer_target_groups(AutoScalingGroupName="blue")["LoadBalancerTargetGroups"] == []


def test_a12_create_with_a_reserved_tag_is_refused(world):
    with pytest.raises(ClientError) as excinfo:
        world.group("blue", desired=0, Tags=[{"Key": "aws:owner", "Value": "x", "PropagateAtLaunch": True}])
    assert aws_error(excinfo)[0] == "ValidationError"
    assert world.asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_a11_an_unforeseen_moto_failure_is_an_xml_internal_failure(world, monkeypatch):
    def broken(self, group_name):
        raise RuntimeError("moto bug")

    world.group("blue", desired=0)
    monkeypatch.setattr(AutoScalingBackend, "delete_warm_pool", broken)
    with pytest.raises(ClientError) as excinfo:
        world.asg.delete_warm_pool(AutoScalingGroupName="blue")
    assert aws_error(excinfo)[0] == "InternalFailure"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
