"""A6 through boto3 over HTTP: launch lifecycle hooks hold instances in Pending:Wait, outside the load balancers."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def _hooked_group(world, tg, timeout=60, default="ABANDON"):
    world.group("green", desired=0, target_groups=(tg,))
    world.asg.put_lifecycle_hook(AutoScalingGroupName="green", LifecycleHookName="boot",
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                 HeartbeatTimeout=timeout, DefaultResult=default)
    world.asg.set_desired_capacity(AutoScalingGroupName="green", DesiredCapacity=1)
    states = world.states("green")
    assert list(states.values()) == ["Pending:Wait"]
    return next(iter(states))


def test_a6_pending_wait_until_continue_and_only_then_registered(world, wait_for):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    assert world.health(tg) == {}
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        InstanceId=iid, LifecycleActionResult="CONTINUE")
    wait_for(lambda: world.states("green"), lambda s: s == {iid: "InService"}, "InService after CONTINUE", 5)
    assert world.health(tg) == {iid: "initial"}


def test_a6_abandon_terminates_and_the_group_replaces_it(world, wait_for):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        InstanceId=iid, LifecycleActionResult="ABANDON")
    states = wait_for(lambda: world.states("green"), lambda s: iid not in s and len(s) == 1,
                      "the abandoned instance replaced", 5)
    assert list(states.values()) == ["Pending:Wait"]
    assert world.health(tg) == {}


def test_a6_timeout_applies_the_default_result_and_heartbeat_extends_it(world, wait_for):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=30, default="CONTINUE")  # 0.3 s at the test time scale
    world.asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="green", LifecycleHookName="boot",
                                                InstanceId=iid)
    wait_for(lambda: world.states("green"), lambda s: s == {iid: "InService"}, "DefaultResult CONTINUE", 5)
    timeline = [e for e in world.cloud.events() if e["instance_id"] == iid and e["type"] == "instance_lifecycle_changed"]
    assert [e["state"] for e in timeline] == ["Pending:Proceed", "InService"]


def test_a6_complete_without_a_waiting_action_and_bad_timeouts_are_validation_errors(world):
    world.group("green", desired=0)
    with pytest.raises(ClientError) as excinfo:
        world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                            InstanceId="i-00000000000000001", LifecycleActionResult="CONTINUE")
    assert excinfo.value.response["Error"]["Code"] == "ValidationError"
    assert "No active Lifecycle Action" in excinfo.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as excinfo:
        world.asg.put_lifecycle_hook(AutoScalingGroupName="green", LifecycleHookName="boot",
                                     LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", HeartbeatTimeout=10)
    assert excinfo.value.response["Error"]["Code"] == "ValidationError"


def test_a6_lifecycle_action_token_works_like_the_instance_id(world, wait_for):
    tg = world.target_group()
    iid = _hooked_group(world, tg, timeout=3600)
    token = world.cloud.state.instances[iid].hooks["boot"].token
    world.asg.complete_lifecycle_action(AutoScalingGroupName="green", LifecycleHookName="boot",
                                        LifecycleActionToken=token, LifecycleActionResult="CONTINUE")
    wait_for(lambda: world.states("green"), lambda s: s == {iid: "InService"}, "InService after CONTINUE", 5)
