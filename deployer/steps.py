"""Steps as data: the AWS calls a plan is made of, and the builders the planners share (no AWS here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .model import TAG_OPERATION, TAG_SAVED_SIZES, TAG_SAVED_SUSPENDED

# A1, A2, A3: at most 20 instance ids per EnterStandby / ExitStandby / DetachInstances call.
BATCH = 20
TERMINATE_BATCH = 100

@dataclass(frozen=True)
class Call:
    """One AWS call: the operation name as in the API reference, and its parameters."""

    op: str
    params: dict

    def as_json(self):
        return {"op": self.op, "params": self.params}

    def describe(self):
        parts = []
        for key, value in self.params.items():
            if isinstance(value, list) and len(value) > 3:
                value = f"[{len(value)} items]"
            parts.append(f"{key}={value}")
        return "{}({})".format(self.op, ", ".join(parts))


@dataclass(frozen=True)
class Step:
    name: str
    summary: str
    calls: tuple[Call, ...] = ()
    wait: str | None = None  # healthy | restored | deregistered | drained | settled | scaled-in
    color: str | None = None  # whose instances a wait watches
    then: Call | None = None  # made once the wait succeeds: records the next phase
    needs: tuple[str, ...] = ()  # snapshot extras this step must be planned with (policies, retired)
    abort_on_failure: bool = False  # deploy/canary: a failed wait aborts (new group to 0, lock cleared)
    gate: bool = False  # a wait that only confirms a condition: the steps planned after it still apply

    def as_json(self):
        out = {"name": self.name, "summary": self.summary, "calls": [c.as_json() for c in self.calls]}
        if self.wait:
            out["wait"] = self.wait
            out["then"] = self.then.as_json() if self.then else None
        return out


@dataclass(frozen=True)
class Context:
    me: str  # the holder string of this process: user@host:pid
    now: datetime
    holder_alive: Callable[[str], bool] = field(default=lambda holder: False)
    force_unlock: bool = False

    @property
    def stamp(self):
        return self.now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- calls -------------------------------------------------------------------------------------------


def tag(group_name, key, value, propagate=False):
    return {"ResourceId": group_name, "ResourceType": "auto-scaling-group", "Key": key, "Value": value,
            "PropagateAtLaunch": propagate}


def write_record(snap, record, extra_on_live=None):
    tags = [tag(snap.groups[c].name, TAG_OPERATION, record.encode()) for c in ("blue", "green")]
    for key, value in sorted((extra_on_live or {}).items()):
        tags.append(tag(snap.groups[record.live].name, key, value))
    return Call("CreateOrUpdateTags", {"Tags": tags})


def clear_record(snap, live):
    tags = [{"ResourceId": snap.groups[c].name, "ResourceType": "auto-scaling-group", "Key": TAG_OPERATION}
            for c in ("blue", "green") if TAG_OPERATION in snap.groups[c].tags]
    old = snap.groups[live]
    for key in (TAG_SAVED_SIZES, TAG_SAVED_SUSPENDED):
        if key in old.tags:
            tags.append({"ResourceId": old.name, "ResourceType": "auto-scaling-group", "Key": key})
    return Call("DeleteTags", {"Tags": tags})


def sizes_text(sizes):
    return "/".join(str(n) for n in sizes)


def batch_label(done, n, remaining):
    """'batch 2 of 3', counting the instances an earlier (killed) run already handled."""
    first = done // BATCH
    return f"batch {first + n} of {first + -(-remaining // BATCH)}"


def set_sizes(group, sizes):
    lo, want, hi = sizes
    return Call("UpdateAutoScalingGroup", {"AutoScalingGroupName": group.name, "MinSize": lo,
                                           "DesiredCapacity": want, "MaxSize": hi})


def batches(ids, size=BATCH):
    ids = list(ids)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def describe_calls(snap, color):
    """What one poll of a wait costs: one group describe, one health call per load balancer (A9, A10)."""
    group = snap.groups[color]
    calls = [Call("DescribeAutoScalingGroups", {"Filters": [{"Name": "tag:bluegreen:service",
                                                           "Values": [snap.service]}]})]
    calls += [Call("DescribeTargetHealth", {"TargetGroupArn": arn}) for arn in group.target_groups]
    calls += [Call("DescribeInstanceHealth", {"LoadBalancerName": n}) for n in group.classic_lbs]
    return tuple(calls)
