"""The instance's Auto Scaling group, the group's tags, and the launch lifecycle hook (found by name or by
DescribeLifecycleHooks; also in a warm pool, A17).

The client is a boto3 "autoscaling" client made in the CLI entry (standard retries: A10) and passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from agent.errors import GroupError, LifecycleError

log = logging.getLogger(__name__)

PENDING_WAIT = "Pending:Wait"
# A17: an instance launched into a warm pool pauses here when the group has a launch hook, and again at
# Pending:Wait when it leaves the pool for the group.
WARMED_PENDING_WAIT = "Warmed:Pending:Wait"
# The states in which a launch hook holds the instance and waits for CompleteLifecycleAction (A6, A17).
HOOK_WAIT_STATES = (PENDING_WAIT, WARMED_PENDING_WAIT)
# Only a moment before one of the above when the group has a launch hook (A5, A6, A17).
PENDING_STATES = ("Pending", "Warmed:Pending")
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
# The heartbeat interval derived from the hook's HeartbeatTimeout: a third of it, so two heartbeats may fail
# before the hook lapses; a derived interval is never below MIN_HEARTBEAT_S (AWS's HeartbeatTimeout is >= 30 s).
HEARTBEAT_FRACTION = 3.0
MIN_HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class Membership:
    group: str
    lifecycle_state: str


def _client_error():
    from botocore.exceptions import BotoCoreError, ClientError  # lazily: keeps `--help` fast

    return (BotoCoreError, ClientError)


def find_group(client, instance_id, deadline=120.0, interval=2.0, sleep=time.sleep, clock=time.monotonic):
    """Which group lists this instance, and in what lifecycle state.

    Right after launch the group may not list the instance yet: ask again until the deadline.
    """
    until = clock() + deadline
    while True:
        try:
            pages = client.get_paginator("describe_auto_scaling_instances").paginate(InstanceIds=[instance_id])
            items = [i for page in pages for i in page.get("AutoScalingInstances", [])]  # A9
        except _client_error() as exc:
            raise GroupError(f"DescribeAutoScalingInstances for {instance_id} failed: {exc}") from None
        for item in items:
            if item.get("InstanceId") == instance_id:
                return Membership(group=item["AutoScalingGroupName"], lifecycle_state=item["LifecycleState"])
        if clock() + interval > until:
            raise GroupError(f"instance {instance_id} is not in any Auto Scaling group (waited {deadline:.0f}s for "
                             "DescribeAutoScalingInstances to list it)")
        log.info("instance %s not listed by any group yet; asking again in %.0fs", instance_id, interval)
        sleep(interval)


def settle_pending(client, instance_id, membership, deadline=120.0, interval=1.0, sleep=time.sleep,
                   clock=time.monotonic):
    """With a launch hook, a plain `Pending` (or `Warmed:Pending`, A17) is only a moment before Pending:Wait
    (Warmed:Pending:Wait) (A6, A5): look again until the state moves on, so that the hook is not missed."""
    until = clock() + deadline
    while membership.lifecycle_state in PENDING_STATES and clock() + interval <= until:
        sleep(interval)
        membership = find_group(client, instance_id, deadline=max(0.0, until - clock()), interval=interval,
                                sleep=sleep, clock=clock)
    return membership


def group_tags(client, group) -> dict[str, str]:
    """The group's own tags (A12: never the instance's, which may not be there yet), all pages (A9)."""
    try:
        pages = client.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "auto-scaling-group", "Values": [group]}])
        return {t["Key"]: t["Value"] for page in pages for t in page.get("Tags", [])
                if t.get("ResourceId") == group}
    except _client_error() as exc:
        raise GroupError(f"DescribeTags for group {group} failed: {exc}") from None


@dataclass(frozen=True)
class LaunchHook:
    name: str
    heartbeat_timeout: float | None
    default_result: str | None


def launch_hooks(client, group):
    """The group's EC2_INSTANCE_LAUNCHING hooks (audit F14), with their HeartbeatTimeout and DefaultResult."""
    try:
        found = client.describe_lifecycle_hooks(AutoScalingGroupName=group).get("LifecycleHooks", [])
    except _client_error() as exc:
        raise LifecycleError(f"DescribeLifecycleHooks for group {group} failed: {exc}") from None
    return [LaunchHook(h["LifecycleHookName"], h.get("HeartbeatTimeout"), h.get("DefaultResult"))
            for h in found if h.get("LifecycleTransition") == LAUNCHING]


def choose_hook(named, hooks, group):
    """The launch hook this agent completes: the named one (tag or config), else the group's only launch hook,
    else none. Pure. Two or more unnamed launch hooks are refused: completing the wrong one would release the
    launch before the other owner is done."""
    if named:
        return next((h for h in hooks if h.name == named), LaunchHook(named, None, None))
    if len(hooks) > 1:
        names = ", ".join(sorted(h.name for h in hooks))
        raise LifecycleError(f"group {group} has {len(hooks)} launch hooks ({names}): name the agent's one in the "
                             "bluegreen:lifecycle-hook tag")
    return hooks[0] if hooks else None


def heartbeat_interval(hook, configured):
    """How often to send heartbeats: the configured interval, or a third of the hook's HeartbeatTimeout if that is
    shorter (audit F14: a 30 s hook with the default 60 s interval would lapse between two heartbeats)."""
    if hook is None or not hook.heartbeat_timeout:
        return configured
    return min(configured, max(MIN_HEARTBEAT_S, float(hook.heartbeat_timeout) / HEARTBEAT_FRACTION))


def complete_lifecycle(client, group, hook, instance_id, result):
    """CompleteLifecycleAction CONTINUE or ABANDON (A6)."""
    try:
        client.complete_lifecycle_action(AutoScalingGroupName=group, LifecycleHookName=hook,
                                         InstanceId=instance_id, LifecycleActionResult=result)
    except _client_error() as exc:
        raise LifecycleError(f"CompleteLifecycleAction {result} for hook {hook} failed: {exc}") from None
    log.info("lifecycle hook %s completed with %s", hook, result)


class Heartbeat:
    """RecordLifecycleActionHeartbeat every `interval` seconds while long steps run (A6: the hook's
    HeartbeatTimeout would otherwise apply its DefaultResult to an instance that is only slow)."""

    def __init__(self, client, group, hook, instance_id, interval):
        self._args = {"AutoScalingGroupName": group, "LifecycleHookName": hook, "InstanceId": instance_id}
        self._client, self._interval = client, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle-heartbeat", daemon=True)
        self.sent = 0

    def _run(self):
        while not self._stop.wait(self._interval):
            try:
                self._client.record_lifecycle_action_heartbeat(**self._args)
                self.sent += 1
                log.debug("lifecycle heartbeat sent")
            except _client_error() as exc:
                # A missed heartbeat is not fatal by itself; the hook's timeout is the real limit.
                log.warning("lifecycle heartbeat failed: %s", exc)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
