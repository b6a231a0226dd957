"""A13 (suspended Launch blocks ExitStandby) and A14 (scale-in protection), through boto3 over HTTP."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import LAUNCH_SECONDS
from tests.localcloud.support import aws_error


def test_a13_exit_standby_is_refused_while_launch_is_suspended(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["Launch"])
    # A13: entering Standby still works with Launch suspended.
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    stopped_clock.advance(30)  # the drain (deregistration delay 30 s)
    assert world.states("blue") == {ids[0]: "Standby", ids[1]: "InService"}
    with pytest.raises(ClientError) as excinfo:
        world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1])
    code, message = aws_error(excinfo)
    assert code == "ValidationError"
    assert message.startswith("Cannot move instances out of Standby")
    assert "while the Launch process is suspended" in message
    # Nothing changed: still Standby, desired not incremented, not registered again.
    assert world.states("blue") == {ids[0]: "Standby", ids[1]: "InService"}
    assert world.describe("blue")["DesiredCapacity"] == 1
    assert ids[0] not in world.health(tg)
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["Launch"])
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids[:1])
    assert world.states("blue")[ids[0]] == "Pending"
    assert world.describe("blue")["DesiredCapacity"] == 2


def _protection(world, name: str) -> dict[str, bool]:
    return {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in world.describe(name)["Instances"]}


def test_a14_new_instances_protected_survive_scale_in_and_the_group_runs_above_desired(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=2, target_groups=(tg,), NewInstancesProtectedFromScaleIn=True)
    stopped_clock.advance(LAUNCH_SECONDS)
    stopped_clock.advance(30 * 5)  # healthy (E1 defaults: 30 s x 5)
    ids = world.in_service("blue", 2)
    assert _protection(world, "blue") == {ids[0]: True, ids[1]: True}
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=0)
    stopped_clock.advance(60)
    # A14: desired is decremented, but the protected instances stay InService and registered.
    assert world.describe("blue")["DesiredCapacity"] == 0
    assert world.in_service("blue", 2) == ids
    assert world.health(tg) == {ids[0]: "healthy", ids[1]: "healthy"}
    # Clearing one instance's protection lets the group scale it in (it drains first, E2).
    world.asg.set_instance_protection(AutoScalingGroupName="blue", InstanceIds=ids[:1], ProtectedFromScaleIn=False)
    assert _protection(world, "blue") == {ids[0]: False, ids[1]: True}
    assert world.states("blue") == {ids[0]: "Terminating", ids[1]: "InService"}
    stopped_clock.advance(30)
    assert world.states("blue") == {ids[1]: "InService"}


def test_a14_set_instance_protection_protects_one_instance_from_scale_in(world, stopped_clock):
    world.group("blue", desired=3)
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 3)
    assert set(_protection(world, "blue").values()) == {False}
    oldest = ids[0]
    world.asg.set_instance_protection(AutoScalingGroupName="blue", InstanceIds=[oldest], ProtectedFromScaleIn=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=1)
    stopped_clock.advance(1)
    assert world.states("blue") == {oldest: "InService"}


def test_a14_set_instance_protection_refuses_a_stranger(world, stopped_clock):
    world.group("blue", desired=1)
    world.group("green", desired=1)
    stopped_clock.advance(LAUNCH_SECONDS)
    stranger = world.in_service("green", 1)[0]
    with pytest.raises(ClientError) as excinfo:
        world.asg.set_instance_protection(AutoScalingGroupName="blue", InstanceIds=[stranger],
                                          ProtectedFromScaleIn=True)
    assert aws_error(excinfo) == ("ValidationError", f"The instance {stranger} is not part of Auto Scaling group blue.")
    assert _protection(world, "green") == {stranger: False}


def test_a14_terminate_suspended_keeps_in_service_instances_above_desired(world, stopped_clock):
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 2)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["Terminate"])
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=0)
    stopped_clock.advance(60)
    assert world.describe("blue")["DesiredCapacity"] == 0
    assert world.in_service("blue", 2) == ids
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["Terminate"])
    stopped_clock.advance(1)
    assert world.states("blue") == {}  # no load balancer to drain: terminated at once
