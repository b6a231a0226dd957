"""Steps as data: the AWS calls a plan is made of, typed steps, and the builders the planners share (no AWS here).

A plan is a list of steps, each of one of four types, and the runner dispatches on the type:
- `CallStep`: AWS calls made in order (idempotent: a rerun replans from what is left);
- `LockStep`: writes the operation record; the runner then observes again to confirm it holds the lock;
- `UnlockStep`: clears the record; the command is done;
- `WaitStep`: polls one group until its verdict (health.py) says ok, then makes its `then` call (the call that
  records the next phase); its failure policy says what a failed wait does to the operation.
A step may also name snapshot extras it must be planned with (`needs`): policies, retired instances. The runner
reads them before it applies such a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Union

from agent.contract import TAG_WORKERS

from .errors import PlanError
from .health import GATE, Verdict
from .model import TAG_OPERATION, TAG_SAVED_SIZES, TAG_SAVED_SUSPENDED, TAG_SERVICE

# A1, A2, A3: at most 20 instance ids per EnterStandby / ExitStandby / DetachInstances call.
BATCH = 20
TERMINATE_BATCH = 100
# RegisterTargets documents no per-call limit; (unverified) 100 a call, as Kubernetes' cloud-provider-aws
# registers (the AWS Load Balancer Controller uses 200). Classic ELBs: 20, with nothing documented either.
REGISTER_BATCH = 100
CLASSIC_REGISTER_BATCH = 20

# Every AWS operation a plan may name. DeployerAws has one method per entry (a test holds them together), so a
# planner naming anything else fails when the plan is built, with our error, not with a traceback mid-flip.
OPERATIONS = frozenset({
    "CreateOrUpdateTags", "DeleteTags", "UpdateAutoScalingGroup", "EnterStandby", "ExitStandby",
    "DetachInstances", "SuspendProcesses", "ResumeProcesses", "PutScalingPolicy",
    "PutScheduledUpdateGroupAction", "DeletePolicy", "DeleteScheduledAction", "CreateTags",
    "TerminateInstances", "SetInstanceProtection", "PutMetricAlarm", "DeleteAlarms",
    "RegisterTargets", "RegisterInstancesWithLoadBalancer",
    # read-only: what one poll of a wait costs (printed by --dry-run)
    "DescribeAutoScalingGroups", "DescribeTargetHealth", "DescribeInstanceHealth", "DescribeAlarms",
    "DescribeTags",
})
# Snapshot extras a step may need before it can be planned or applied (runner.observe reads them).
NEEDS = frozenset({"policies", "retired", "health"})

# What a failed wait does. ABORT (deploy, canary): the new group back to 0, the live group untouched, the lock
# cleared. STOP: exit 1 with the record kept, so rerunning the command (or `rollback`) carries on. ROLLBACK (a
# deploy's bake, after the flip): the steps of `bluegreen rollback`, at once, in the same process.
ABORT, STOP, ROLLBACK = "abort", "stop", "rollback"


@dataclass(frozen=True)
class Call:
    """One AWS call: the operation name as in the API reference, and its parameters."""

    op: str
    params: dict

    def __post_init__(self):
        if self.op not in OPERATIONS:
            raise PlanError(f"internal error: a plan names the AWS operation {self.op!r}, which the deployer does "
                            "not make; nothing was changed by it")

    def as_json(self):
        return {"op": self.op, "params": self.params}

    def describe(self):
        parts = []
        for key, value in self.params.items():
            if isinstance(value, list) and len(value) > 3:
                value = f"[{len(value)} items]"
            parts.append(f"{key}={value}")
        return "{}({})".format(self.op, ", ".join(parts))


def _check_needs(needs):
    unknown = set(needs) - NEEDS
    if unknown:
        raise PlanError(f"internal error: a step needs {sorted(unknown)}, which the runner cannot read")


@dataclass(frozen=True)
class CallStep:
    """AWS calls made back to back. With no calls and `needs`, a placeholder planned again once they are read."""

    name: str
    summary: str
    calls: tuple[Call, ...] = ()
    needs: tuple[str, ...] = ()
    # Settles the end state (a rollback emptying the new group): after taking over a holder that may still run,
    # the runner applies it only once that holder's last call can have landed, and plans again first.
    settling: bool = False

    kind = "call"

    def __post_init__(self):
        _check_needs(self.needs)

    def as_json(self):
        out = {"name": self.name, "kind": self.kind, "summary": self.summary,
               "calls": [c.as_json() for c in self.calls]}
        if self.needs:
            out["needs"] = list(self.needs)
        return out


@dataclass(frozen=True)
class LockStep(CallStep):
    """Writes the operation record (and, on a fresh lock, what the live group had)."""

    kind = "lock"


@dataclass(frozen=True)
class UnlockStep(CallStep):
    """Clears the operation record: the last step of a command."""

    kind = "unlock"


@dataclass(frozen=True)
class WaitStep:
    """Poll `color`'s group and its load balancers until `verdict` says ok; then make `then`.

    gate: the wait only confirms a condition; the steps planned after it still apply without a new observation.
    on_failure: ABORT or STOP (see above). `polls` are the describe calls one poll costs (for --dry-run).
    """

    name: str
    summary: str
    color: str
    verdict: Verdict
    polls: tuple[Call, ...] = ()
    then: Call | None = None
    on_failure: str = STOP
    gate: bool = False
    needs: tuple[str, ...] = ()
    # Calls a STOP failure makes before the command exits (the Standby gate resumes what the deploy suspended).
    undo: tuple[Call, ...] = ()

    kind = "wait"

    def __post_init__(self):
        if self.on_failure not in (ABORT, STOP, ROLLBACK):
            raise PlanError(f"internal error: wait {self.name} has failure policy {self.on_failure!r}")
        _check_needs(self.needs)

    @property
    def calls(self):
        return self.polls

    def as_json(self):
        return {"name": self.name, "kind": self.kind, "summary": self.summary, "wait": self.verdict.kind,
                "color": self.color, "calls": [c.as_json() for c in self.polls],
                "then": self.then.as_json() if self.then else None, "on_failure": self.on_failure,
                "gate": self.gate, "undo": [c.as_json() for c in self.undo]}


@dataclass(frozen=True)
class BakeStep(WaitStep):
    """The bake (bake.py): poll the alarms and `color`'s health until the absolute deadline `until` (a UTC stamp
    in the record), then make `then`. Reaching the deadline is its success; an alarm in ALARM or the fleet short
    of healthy capacity is its failure (a BakeFailed with the reason, handled per `on_failure`)."""

    until: str = ""
    alarms: tuple[str, ...] = ()
    capacity: int | None = None  # the group's desired capacity when the bake started (bake.verdict)

    kind = "bake"

    def as_json(self):
        return dict(super().as_json(), until=self.until, alarms=list(self.alarms))


Step = Union[CallStep, LockStep, UnlockStep, WaitStep, BakeStep]


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


@dataclass(frozen=True)
class RecordWrite(Call):
    """A write of the operation record: to the state store first (compare-and-set, store.py), when there is
    one, then to the groups' tags, which are then its mirror. `saved` (on the lock only): what the live group
    had, {"sizes": [min, desired, max], "suspended": [...]}."""

    record: object = None
    saved: dict | None = None
    # Finalize: instance ids about to be detached, added to the stored record before DetachInstances, so that
    # they are terminated by id, never only found again by a tag search that X1 can miss (finding 13).
    detached: tuple = ()
    # A transition that is no phase of its own (EVENT_BAKED): recorded in the store's phase list, with its time,
    # right before the phase this write moves to.
    event: str | None = None
    # Deploy and canary: what the calls after it create (policies.created_names), added to the stored record before
    # they are made, so a rerun or rollback reads and deletes exactly those (W1, A7); carried to the rollback or
    # finalize that takes the operation over.
    created: tuple = ()


@dataclass(frozen=True)
class RecordClear(Call):
    """The end of an operation: its tags removed, then the store's lock released with a journal entry."""

    live: str = ""
    result: str = "settled"  # the journal's result: an event of the contract's vocabulary


def write_record(snap, record, saved=None, detached=(), event=None, created=()):
    tags = [tag(snap.groups[c].name, TAG_OPERATION, record.encode()) for c in ("blue", "green")]
    if saved is not None:
        old = snap.groups[record.live].name
        tags.append(tag(old, TAG_SAVED_SIZES, sizes_text(saved["sizes"])))
        tags.append(tag(old, TAG_SAVED_SUSPENDED, ",".join(saved["suspended"]) or "none"))
    return RecordWrite("CreateOrUpdateTags", {"Tags": tags}, record=record, saved=saved, detached=tuple(detached),
                       event=event, created=tuple(tuple(c) for c in created))


def clear_record(snap, live, result="settled"):
    """Removes the record's tags (those present: an apply may have wiped them, X3) and releases the lock."""
    tags = [{"ResourceId": snap.groups[c].name, "ResourceType": "auto-scaling-group", "Key": TAG_OPERATION}
            for c in ("blue", "green") if TAG_OPERATION in snap.groups[c].tags]
    old = snap.groups[live]
    for key in (TAG_SAVED_SIZES, TAG_SAVED_SUSPENDED):
        if key in old.tags:
            tags.append({"ResourceId": old.name, "ResourceType": "auto-scaling-group", "Key": key})
    return RecordClear("DeleteTags", {"Tags": tags}, live=live, result=result)


def sizes_text(sizes):
    return "/".join(str(n) for n in sizes)


def batch_label(done, n, remaining):
    """'batch 2 of 3', counting the instances an earlier (killed) run already handled."""
    first = done // BATCH
    return f"batch {first + n} of {first + math.ceil(remaining / BATCH)}"


def set_sizes(group, sizes):
    lo, want, hi = sizes
    return Call("UpdateAutoScalingGroup", {"AutoScalingGroupName": group.name, "MinSize": lo,
                                           "DesiredCapacity": want, "MaxSize": hi})


def batches(ids, size=BATCH):
    ids = list(ids)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def poll_calls(snap, color, alone=True):
    """What one poll of a wait costs: one group describe, one health call per load balancer (A9, A10). The
    describe names the watched group alone when the state store keeps the record and the wait reads no other
    group (`alone`; runner.observe's `only`); else it is the pair's."""
    group = snap.groups[color]
    if alone and snap.store_url is not None:
        calls = [Call("DescribeAutoScalingGroups", {"AutoScalingGroupNames": [group.name]})]
    else:
        calls = [Call("DescribeAutoScalingGroups", {"Filters": [{"Name": "tag:" + TAG_SERVICE,
                                                               "Values": [snap.service]}]})]
    calls += [Call("DescribeTargetHealth", {"TargetGroupArn": arn}) for arn in group.target_groups]
    calls += [Call("DescribeInstanceHealth", {"LoadBalancerName": n}) for n in group.classic_lbs]
    return tuple(calls)


def wait_step(snap, name, summary, color, verdict, **kwargs):
    """A WaitStep on `color`'s group, with what one of its polls costs (a workers wait also reads the group's
    `bluegreen:workers` tags, issue 16: one DescribeTags per 200 instances)."""
    polls = poll_calls(snap, color, alone=verdict.kind != GATE.kind)
    if verdict.workers_needed:
        ids = sorted(i.id for i in snap.groups[color].instances)
        polls += tuple(Call("DescribeTags", {"Filters": [{"Name": "key", "Values": [TAG_WORKERS]},
                                                         {"Name": "resource-id", "Values": ids[n:n + 200]}]})
                       for n in range(0, len(ids), 200))
    return WaitStep(name, summary, color, verdict, polls=polls, **kwargs)


def bake_step(snap, name, summary, color, verdict, until, alarms, **kwargs):
    """A BakeStep on `color`'s group: one poll also reads the alarms, by name, 100 a call (never the Region)."""
    names = list(alarms)
    reads = tuple(Call("DescribeAlarms", {"AlarmNames": names[i:i + 100]}) for i in range(0, len(names), 100))
    return BakeStep(name, summary, color, verdict, polls=poll_calls(snap, color) + reads, until=until,
                    alarms=tuple(alarms), **kwargs)
