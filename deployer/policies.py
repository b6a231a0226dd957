"""Scaling policies and scheduled actions (A7): what to copy to the new group, what to delete (no AWS here).

A copy is named like an alarm copy, `<original>--bluegreen-<group>` (alarms.MARKER): the name is the tool's marker.
Where the new group already has the operator's own policy or scheduled action of the original's name, that one
stays and nothing is copied over it (an IaC that declares it on both groups keeps its own).
"""

from __future__ import annotations

from .alarms import copy_name, is_copy_for, original_name, regroup
from .steps import Call

# What PutScalingPolicy accepts for each policy type; describe answers may carry the others, empty.
POLICY_KEYS = {
    "SimpleScaling": ("AdjustmentType", "ScalingAdjustment", "Cooldown", "MinAdjustmentMagnitude"),
    "StepScaling": ("AdjustmentType", "StepAdjustments", "MetricAggregationType", "EstimatedInstanceWarmup",
                    "MinAdjustmentMagnitude"),
    "TargetTrackingScaling": ("TargetTrackingConfiguration", "EstimatedInstanceWarmup"),
    "PredictiveScaling": ("PredictiveScalingConfiguration",),
}
SCHEDULED_KEYS = ("Recurrence", "MinSize", "MaxSize", "DesiredCapacity", "TimeZone", "EndTime")

def _pruned(value):
    """`value` without empty members: a describe answer may carry `Dimensions: []` beside `Metrics` in a customized
    metric (moto does), and whether PutScalingPolicy accepts both at once is unverified, so the copy names neither
    empty part."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _policy_params(pol, group_name, name=None):
    kind = pol.get("PolicyType") or "SimpleScaling"
    params = {"AutoScalingGroupName": group_name, "PolicyName": name or pol["PolicyName"], "PolicyType": kind}
    params.update({k: pol[k] for k in POLICY_KEYS.get(kind, ()) + ("Enabled",) if pol.get(k) not in (None, {}, [])})
    if "TargetTrackingConfiguration" in params:
        params["TargetTrackingConfiguration"] = _pruned(params["TargetTrackingConfiguration"])
    return params


def _scheduled_params(act, group_name, name=None):
    params = {"AutoScalingGroupName": group_name, "ScheduledActionName": name or act["ScheduledActionName"]}
    params.update({k: act[k] for k in SCHEDULED_KEYS if act.get(k) is not None})
    return params


def _to_copy(items, key, group_name, have):
    """(item, copy name) for each item of the source group to copy to `group_name`: one per original name (the
    operator's original before an older copy of it), none where `have` (the group's names) holds the operator's
    own of that name."""
    out, seen = [], set()
    for item in sorted(items, key=lambda i: original_name(i[key]) != i[key]):
        name = copy_name(item[key], group_name)
        own = original_name(item[key])
        if name in seen or own in have:
            continue
        seen.add(name)
        out.append((item, name))
    return out


def policy_copies(snap, src, dst, now):
    """Put calls that make group `dst` carry a copy of every scaling policy and scheduled action of `src`.

    A copy `dst` already has is put again only when its body differs (PutScalingPolicy and
    PutScheduledUpdateGroupAction replace by name, A7): a policy changed on the live group since a crashed run must
    reach the copy (audit finding 24), and an identical one costs no call. The operator's own of the same name on
    `dst` is never overwritten.
    """
    name = snap.groups[dst].name
    have = {p["PolicyName"]: _policy_params(p, name) for p in snap.policies[dst]}
    calls = []
    for pol, copy in _to_copy(snap.policies[src], "PolicyName", name, have):
        # W1: a customized target tracking metric may name the source group in a dimension; the copy watches dst.
        params = regroup(_policy_params(pol, name, copy), snap.groups[src].name, name)
        if have.get(copy) != params:
            calls.append(Call("PutScalingPolicy", params))
    have = {a["ScheduledActionName"]: _scheduled_params(a, name) for a in snap.scheduled[dst]}
    for act, copy in _to_copy(snap.scheduled[src], "ScheduledActionName", name, have):
        params = _scheduled_params(act, name, copy)
        end = act.get("EndTime")
        if end is not None and end <= now:
            # AWS refuses an action that ends in the past (PutScheduledUpdateGroupAction): a recurring action
            # past its EndTime will never run again, so there is nothing to copy (audit finding 24).
            continue
        start = act.get("StartTime")
        # AWS refuses a StartTime in the past; a recurring action needs none, a one-off in the past is spent.
        if start is not None and start > now:
            params["StartTime"] = start
        elif "Recurrence" not in act:
            continue
        current = have.get(copy)
        if current is not None and {k: v for k, v in params.items() if k != "StartTime"} == current:
            continue
        calls.append(Call("PutScheduledUpdateGroupAction", params))
    return calls


def policy_deletions(snap, color, copies_only=False, also_of=None):
    """Delete calls for the policies and scheduled actions of `color`: with `copies_only` (rollback) only the
    tool's copies for it (alarms.MARKER), else all of them (finalize completes the move: the old group keeps no
    policy or scheduled action that could scale it, docs/deployer.md). `also_of`: a color whose names, unmarked on
    `color`, are copies too (an operation an older version started, which copied under the same names)."""
    group = snap.groups[color]
    legacy = set()
    if also_of is not None:
        legacy = {p["PolicyName"] for p in snap.policies[also_of]}
        legacy |= {a["ScheduledActionName"] for a in snap.scheduled[also_of]}

    def chosen(name):
        return not copies_only or is_copy_for(name, group.name) or name in legacy

    calls = [Call("DeletePolicy", {"AutoScalingGroupName": group.name, "PolicyName": p["PolicyName"]})
             for p in snap.policies[color] if chosen(p["PolicyName"])]
    calls += [Call("DeleteScheduledAction", {"AutoScalingGroupName": group.name,
                                             "ScheduledActionName": a["ScheduledActionName"]})
              for a in snap.scheduled[color] if chosen(a["ScheduledActionName"])]
    return calls


def created_names(calls):
    """What `calls` create, as the operation record lists it: [kind, group, name] (alarms: [kind, "", name])."""
    out = []
    for call in calls:
        if call.op == "PutScalingPolicy":
            out.append(["policy", call.params["AutoScalingGroupName"], call.params["PolicyName"]])
        elif call.op == "PutScheduledUpdateGroupAction":
            out.append(["scheduled", call.params["AutoScalingGroupName"], call.params["ScheduledActionName"]])
        elif call.op == "PutMetricAlarm":
            out.append(["alarm", "", call.params["AlarmName"]])
    return out
