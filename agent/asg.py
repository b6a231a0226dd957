"""The instance's Auto Scaling group, the group's tags, and the launch lifecycle hook.

The client is a boto3 "autoscaling" client made in the CLI entry (standard retries: A10) and passed in.
"""

import logging
import threading
import time
from dataclasses import dataclass

from agent.errors import GroupError, LifecycleError

log = logging.getLogger(__name__)

PENDING_WAIT = "Pending:Wait"


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
    """With a launch hook named, a plain `Pending` is only a moment before Pending:Wait (A6, A5): look again until
    the state moves on, so that the hook is not missed."""
    until = clock() + deadline
    while membership.lifecycle_state == "Pending" and clock() + interval <= until:
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
