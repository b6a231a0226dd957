"""A6 through boto3 over HTTP: launch lifecycle hooks hold instances in Pending:Wait, outside the load balancers."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import PROCEED_SECONDS
from tests.helpers import wait_until
from tests.localcloud.support import aws_error, matching


def _hooked_group(world, tg, timeout=60, default="ABANDON"):
    world.group("green", desired=0, target_groups=(tg,))
    world.asg.put_lifecycle_hook(AutoScalingGroupName="green", LifecycleHookName="boot",
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                 HeartbeatTimeout=timeout, DefaultResult=default)
    world.asg.set_desired_capacity(AutoScalingGroupName="green", DesiredCapacity=1)
    states = world.states("green")
    assert list(states.values()) == ["Pending:Wait"]
    return next(iter(states))


def test_a6_pending_wait_until_continue_and_only_then_registered(world, stopped_clock):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    stopped_clock.advance(3599)
    assert (world.states("green"), world.health(tg)) == ({iid: "Pending:Wait"}, {})
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        InstanceId=iid, LifecycleActionResult="CONTINUE")
    assert (world.states("green"), world.health(tg)) == ({iid: "Pending:Proceed"}, {})
    stopped_clock.advance(PROCEED_SECONDS)
    assert (world.states("green"), world.health(tg)) == ({iid: "InService"}, {iid: "initial"})


def test_a6_abandon_terminates_and_the_group_replaces_it(world):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        InstanceId=iid, LifecycleActionResult="ABANDON")
    states = wait_until(matching(lambda: world.states("green"), lambda s: iid not in s and len(s) == 1),
                        "the abandoned instance replaced", 5)
    assert list(states.values()) == ["Pending:Wait"]
    assert world.health(tg) == {}


def test_a6_timeout_applies_the_default_result_and_heartbeat_extends_it(world, stopped_clock):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=30, default="CONTINUE")
    stopped_clock.advance(20)
    world.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="green", LifecycleHookName="boot",
                                                InstanceId=iid)
    stopped_clock.advance(29)  # 49 s after launch: past the first timeout, not the one the heartbeat restarted
    assert world.states("green") == {iid: "Pending:Wait"}
    stopped_clock.advance(1)
    assert world.states("green") == {iid: "Pending:Proceed"}
    stopped_clock.advance(PROCEED_SECONDS)
    assert world.states("green") == {iid: "InService"}
    timeline = [e for e in world.cloud.events()
                if e["instance_id"] == iid and e["type"] == "instance_lifecycle_changed"]
    assert [e["state"] for e in timeline] == ["Pending:Proceed", "InService"]


def test_a6_complete_without_a_waiting_action_and_bad_timeouts_are_validation_errors(world):
    world.group("green", desired=0)
    with pytest.raises(ClientError) as excinfo:
        world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                            InstanceId="i-00000000000000001", LifecycleActionResult="CONTINUE")
    code, message = aws_error(excinfo)
    assert code == "ValidationError"
    assert "No active Lifecycle Action" in message
    with pytest.raises(ClientError) as excinfo:
        world.asg.put_lifecycle_hook(AutoScalingGroupName="green", LifecycleHookName="boot",
                                     LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=10)
    assert aws_error(excinfo)[0] == "ValidationError"


def test_a6_lifecycle_action_token_works_like_the_instance_id(world):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    token = world.cloud.state.instances[iid].hooks["boot"].token
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        LifecycleActionToken=token, LifecycleActionResult="CONTINUE")
    wait_until(matching(lambda: world.states("green"), lambda s: s == {iid: "InService"}),
               "InService after CONTINUE", 5)
