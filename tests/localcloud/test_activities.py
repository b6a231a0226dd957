"""A15: DescribeScalingActivities answers the group's real activities, and failed launches (fault injection:
a zone short of capacity, a vCPU limit, a broken launch template) are Failed activities the group retries."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from localcloud.aws.activities import LAUNCH_RETRY_SECONDS
from localcloud.aws.autoscaling import LAUNCH_SECONDS


def _activities(world, name: str) -> list[dict]:
    return world.asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]


def _by_instance(world, name: str) -> dict[tuple[str, str], str]:
    """(first word of the description, instance id) -> StatusCode."""
    out = {}
    for a in _activities(world, name):
        out[(a["Description"].split()[0], a["Description"].rsplit(" ", 1)[-1])] = a["StatusCode"]
    return out


def test_a15_launch_standby_detach_and_terminate_are_activities_with_their_status(world, stopped_clock):
    tg = world.target_group(delay=30)
    world.group("blue", desired=3, target_groups=(tg,))
    stopped_clock.advance(1)
    launched = sorted(world.states("blue"))
    assert _by_instance(world, "blue") == {("Launching", i): "InProgress" for i in launched}
    first = _activities(world, "blue")[-1]  # oldest last
    assert "in response to a difference between desired and actual capacity, increasing the capacity from 0 " \
           "to 1" in first["Cause"]
    assert json.loads(first["Details"])["Availability Zone"] == "us-east-1a"
    stopped_clock.advance(LAUNCH_SECONDS)
    a, b, c = world.in_service("blue", 3)
    assert set(_by_instance(world, "blue").values()) == {"Successful"}
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=[a], ShouldDecrementDesiredCapacity=True)
    world.asg.detach_instances(AutoScalingGroupName="blue", InstanceIds=[b], ShouldDecrementDesiredCapacity=True)
    reply = world.asg.terminate_instance_in_auto_scaling_group(InstanceId=c, ShouldDecrementDesiredCapacity=True)
    statuses = _by_instance(world, "blue")
    assert (statuses[("Moving", a)], statuses[("Detaching", b)], statuses[("Terminating", c)]) == (
        "InProgress", "Successful", "WaitingForELBConnectionDraining")
    # The reply's activity is the one DescribeScalingActivities lists.
    listed = world.asg.describe_scaling_activities(ActivityIds=[reply["Activity"]["ActivityId"]])["Activities"]
    assert [x["Description"] for x in listed] == [f"Terminating EC2 instance: {c}"]
    stopped_clock.advance(30)  # the drain
    statuses = _by_instance(world, "blue")
    assert (statuses[("Moving", a)], statuses[("Terminating", c)]) == ("Successful", "Successful")
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=[a])
    exits = [x for x in _activities(world, "blue") if x["Description"].startswith("Moving EC2 instance out")]
    assert [x["StatusCode"] for x in exits] == ["InProgress"]
    stopped_clock.advance(5)
    exits = [x for x in _activities(world, "blue") if x["Description"].startswith("Moving EC2 instance out")]
    assert [x["StatusCode"] for x in exits] == ["Successful"]


def test_a15_a_launch_held_by_a_hook_is_mid_lifecycle_and_abandon_cancels_it(world, stopped_clock):
    world.group("blue", desired=0)
    world.asg.put_lifecycle_hook(LifecycleHookName="boot", AutoScalingGroupName="blue", HeartbeatTimeout=300,
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", DefaultResult="ABANDON")
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=1)
    (iid,) = world.states("blue")
    assert _by_instance(world, "blue") == {("Launching", iid): "MidLifecycleAction"}
    world.asg.complete_lifecycle_action(AutoScalingGroupName="blue", LifecycleHookName="boot", InstanceId=iid,
                                        LifecycleActionResult="ABANDON")
    (launch,) = [a for a in _activities(world, "blue") if a["Description"].endswith(iid)
                 and a["Description"].startswith("Launching")]
    assert launch["StatusCode"] == "Cancelled"
    assert "Lifecycle Action Completed with ABANDON Result" in launch["StatusMessage"]


def test_a15_a_zone_short_of_capacity_fails_and_the_group_retries_in_another_zone(world, stopped_clock):
    subnets = world.zone_subnets(2)
    world.cloud.configure_faults(insufficient_capacity_zones=["us-east-1a"])
    world.group("blue", desired=2, VPCZoneIdentifier=",".join(subnets))
    assert world.states("blue") == {}
    (failed,) = _activities(world, "blue")
    message = ("We currently do not have sufficient t3.micro capacity in the Availability Zone you requested "
               "(us-east-1a). Our system will be working on provisioning additional capacity. You can currently "
               "get t3.micro capacity by not specifying an Availability Zone in your request or choosing "
               "us-east-1b. Launching EC2 instance failed.")
    assert (failed["StatusCode"], failed["StatusMessage"]) == ("Failed", message)
    assert failed["Description"] == f"Launching a new EC2 instance.  Status Reason: {message}"
    stopped_clock.advance(LAUNCH_RETRY_SECONDS - 1)
    assert world.states("blue") == {}  # not before the retry delay
    stopped_clock.advance(1)
    stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("blue", 2)
    zones = {i["AvailabilityZone"] for i in world.describe("blue")["Instances"]}
    assert zones == {"us-east-1b"}  # A15/A19: one zone short, the other serves
    # Capacity returns: AZRebalance evens the zones out (launch first, then terminate, A19).
    world.cloud.configure_faults()
    for _ in range(3):
        stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("blue", 2)
    assert sorted(i["AvailabilityZone"] for i in world.describe("blue")["Instances"]) == ["us-east-1a", "us-east-1b"]


def test_a15_a_vcpu_limit_keeps_failing_and_being_retried(world, stopped_clock):
    world.cloud.configure_faults(vcpu_limit=2)  # one t3.micro (2 vCPUs)
    world.group("blue", desired=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    for _ in range(3):
        stopped_clock.advance(LAUNCH_RETRY_SECONDS)
    world.in_service("blue", 1)
    failed = [a for a in _activities(world, "blue") if a["StatusCode"] == "Failed"]
    assert len(failed) >= 3  # retried on its own, failing each time
    assert all(a["StatusMessage"].startswith("You have requested more vCPU capacity than your current vCPU limit "
                                             "of 2 allows") for a in failed)


def test_a15_a_broken_launch_template_fails_every_launch_until_fixed(world, stopped_clock):
    body = json.dumps({"broken_launch_templates": [world.template]}).encode()
    req = urllib.request.Request(world.cloud.endpoint + "/_localcloud/faults", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    world.group("blue", desired=1)
    for _ in range(3):
        stopped_clock.advance(LAUNCH_RETRY_SECONDS)
    assert world.states("blue") == {}
    failed = _activities(world, "blue")
    assert len(failed) == 4
    assert {(a["StatusCode"], a["StatusMessage"]) for a in failed} == {
        ("Failed", "The image id '[ami-12c6146b]' does not exist. Launching EC2 instance failed.")}
    world.cloud.configure_faults()
    stopped_clock.advance(LAUNCH_RETRY_SECONDS)
    stopped_clock.advance(LAUNCH_SECONDS)
    world.in_service("blue", 1)
    assert _activities(world, "blue")[0]["StatusCode"] == "Successful"


def test_a15_activities_page_and_bad_fault_settings_are_refused(world, stopped_clock):
    world.group("blue", desired=3)
    pages = world.asg.get_paginator("describe_scaling_activities").paginate(
        AutoScalingGroupName="blue", PaginationConfig={"PageSize": 2})
    assert [len(p["Activities"]) for p in pages] == [2, 1]
    for bad in ({"insufficient_capacity_zones": "us-east-1a"}, {"vcpu_limit": -1}, {"vcpu_limit": True},
                {"broken_launch_templates": [""]}, {"tag_visibility_delay_s": 4000}):
        req = urllib.request.Request(world.cloud.endpoint + "/_localcloud/faults", data=json.dumps(bad).encode(),
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(req, timeout=5)
        assert excinfo.value.code == 400, bad
