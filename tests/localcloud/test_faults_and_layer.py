"""Fault injection (A10, A2 contention), Classic ELB (E3), shared target groups (E4), reset, serialisation.

The guard for the pinned moto is test_moto_seam.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import LAUNCH_SECONDS
from tests.helpers import wait_until
from tests.localcloud.support import aws_error, matching


def test_a10_throttling_is_the_real_error_and_botocore_retries_through_it(world):
    world.cloud.configure_faults(throttle_fraction=1.0)
    with pytest.raises(ClientError) as excinfo:
        world.asg.describe_auto_scaling_groups()
    err = excinfo.value.response
    assert (err["Error"]["Code"], err["Error"]["Message"]) == ("Throttling", "Rate exceeded")
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    world.cloud.configure_faults(throttle_fraction=0.5)  # every second call
    retrying = boto3.client("autoscaling", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    for _ in range(4):
        reply = retrying.describe_auto_scaling_groups()
        assert reply["AutoScalingGroups"] == []
        assert reply["ResponseMetadata"]["RetryAttempts"] in (0, 1)
    world.ec2.describe_vpcs()  # EC2 is not throttled by this fault: one bucket per Auto Scaling / ELB (A10)


def test_latency_is_added_per_call(world):
    world.cloud.configure_faults(latency_s=0.3)
    started = time.monotonic()
    world.asg.describe_auto_scaling_groups()
    assert time.monotonic() - started >= 0.3


def test_a2_exit_standby_resource_contention_once(world, stopped_clock):
    world.group("blue", desired=1)
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 1)
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    assert world.states("blue") == {ids[0]: "Standby"}  # no load balancer to drain
    body = json.dumps({"exit_standby_contention_once": True}).encode()
    req = urllib.request.Request(world.cloud.endpoint + "/_localcloud/faults", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    with pytest.raises(ClientError) as excinfo:
        world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)
    assert aws_error(excinfo)[0] == "ResourceContention"
    assert world.states("blue") == {ids[0]: "Standby"}
    world.asg.exit_standby(AutoScalingGroupName="blue", InstanceIds=ids)  # the retry succeeds
    assert world.states("blue") == {ids[0]: "Pending"}


def test_e3_classic_elb_out_of_service_then_in_service_and_draining(world, stopped_clock):
    world.classic_lb("classic", interval=5, healthy_threshold=2, draining=30)
    world.group("blue", desired=1, LoadBalancerNames=["classic"])
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 1)

    def health():
        return {s["InstanceId"]: (s["State"], s["Description"])
                for s in world.elb.describe_instance_health(LoadBalancerName="classic")["InstanceStates"]}

    assert health() == {ids[0]: ("OutOfService", "Instance registration is still in progress.")}
    stopped_clock.advance(2 * 5)  # HealthyThreshold x Interval
    assert health() == {ids[0]: ("InService", "N/A")}
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    assert health() == {ids[0]: ("InService", "Instance deregistration currently in progress.")}
    stopped_clock.advance(30)  # connection draining
    assert health() == {}


def test_e4_one_target_group_on_two_groups_holds_the_union(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=1, target_groups=(tg,))
    world.group("green", desired=2, target_groups=(tg,))
    stopped_clock.advance(LAUNCH_SECONDS)
    blue, green = world.in_service("blue", 1), world.in_service("green", 2)
    assert world.health(tg) == {i: "initial" for i in blue + green}
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=blue, ShouldDecrementDesiredCapacity=True)
    world.asg.set_desired_capacity(AutoScalingGroupName="green", DesiredCapacity=3)  # must not touch blue's
    assert world.health(tg) == {blue[0]: "draining", **{g: "initial" for g in green}}


def test_reset_leaves_no_state(world):
    tg = world.target_group()
    world.group("blue", desired=1, target_groups=(tg,))
    world.wait_in_service("blue", 1)
    world.asg.put_scaling_policy(AutoScalingGroupName="blue", PolicyName="out", AdjustmentType="ChangeInCapacity",
                                 ScalingAdjustment=1)
    world.cloud.configure_faults(latency_s=0.01, conditional_conflicts=3)
    world.cloud.set_target_health("i-forced", "unhealthy")
    world.cloud.configure_time(health_interval=1.0)
    world.cloud.reset()
    state = world.cloud.state
    assert (state.instances, state.targets, state.forced_health, state.events, state.backends, state.calls) == (
        {}, {}, {}, [], [], {})
    assert (len(state.policies), len(state.scheduled_actions)) == (0, 0)
    assert (state.activities, state.groups, state.tags_visible_at) == ([], {}, {})
    assert state.faults.as_dict() == {"throttle_fraction": 0.0, "latency_s": 0.0, "exit_standby_contention_once": False,
                                      "conditional_conflicts": 0, "insufficient_capacity_zones": [],
                                      "vcpu_limit": None, "broken_launch_templates": [],
                                      "tag_visibility_delay_s": 0.0, "put_events_failures": 0,
                                      "reregistered_standby_stuck": False}
    assert state.health_interval is None
    assert world.asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert world.elbv2.describe_target_groups()["TargetGroups"] == []
    assert world.ec2.describe_instances()["Reservations"] == []


def test_concurrent_clients_are_serialised(world):
    world.group("blue", desired=0, max_size=40)
    errors: list[Exception] = []

    def bump():
        client = boto3.client("autoscaling")
        try:
            for _ in range(5):
                client.create_or_update_tags(Tags=[{"ResourceId": "blue", "ResourceType": "auto-scaling-group",
                                                    "Key": threading.current_thread().name, "Value": "x",
                                                    "PropagateAtLaunch": False}])
        except ClientError as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=bump, name=f"t{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    keys = {t["Key"] for t in world.describe("blue")["Tags"]}
    assert keys == {f"t{n}" for n in range(8)}


def test_events_reach_subscribers_in_order(world):
    seen: list[tuple[str, str]] = []
    world.cloud.subscribe(lambda e: seen.append((e["type"], e["instance_id"])))
    tg = world.target_group()
    world.group("blue", desired=1, target_groups=(tg,))
    ids = world.wait_in_service("blue", 1)
    wait_until(matching(lambda: list(seen), lambda s: ("target_registered", ids[0]) in s), "the registration event")
    assert [t for t, i in seen if i == ids[0]][:3] == [
        "instance_launched", "instance_lifecycle_changed", "target_registered"]


def test_calls_are_counted_per_action_until_reset(world):
    world.cloud.reset()
    world.asg.describe_auto_scaling_groups()
    world.asg.describe_auto_scaling_groups()
    world.elbv2.describe_target_groups()
    with urllib.request.urlopen(world.cloud.endpoint + "/_localcloud/calls", timeout=5) as resp:
        calls = json.loads(resp.read())["calls"]
    assert calls == {"autoscaling:DescribeAutoScalingGroups": 2, "elasticloadbalancing:DescribeTargetGroups": 1}
    world.cloud.reset()
    assert world.cloud.call_counts() == {}
