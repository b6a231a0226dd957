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
