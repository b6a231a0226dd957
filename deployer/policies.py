"""Scaling policies and scheduled actions (A7): what to copy to the new group, what to delete (no AWS here)."""

from __future__ import annotations

from .alarms import regroup
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

def _policy_params(pol, group_name):
    kind = pol.get("PolicyType") or "SimpleScaling"
    params = {"AutoScalingGroupName": group_name, "PolicyName": pol["PolicyName"], "PolicyType": kind}
    params.update({k: pol[k] for k in POLICY_KEYS.get(kind, ()) + ("Enabled",) if pol.get(k) not in (None, {}, [])})
    return params


def _scheduled_params(act, group_name):
    params = {"AutoScalingGroupName": group_name, "ScheduledActionName": act["ScheduledActionName"]}
    params.update({k: act[k] for k in SCHEDULED_KEYS if act.get(k) is not None})
    return params


def policy_copies(snap, src, dst, now):
    """Put calls that make group `dst` carry every scaling policy and scheduled action of `src` as `src` has it.

    A name `dst` already has is put again only when its body differs (PutScalingPolicy and
    PutScheduledUpdateGroupAction replace by name, A7): a policy changed on the live group since the last deploy
    must reach the copy (audit finding 24), and an identical one costs no call.
    """
    name = snap.groups[dst].name
    have = {p["PolicyName"]: _policy_params(p, name) for p in snap.policies[dst]}
    calls = []
    for pol in snap.policies[src]:
        # W1: a customized target tracking metric may name the source group in a dimension; the copy watches dst.
        params = regroup(_policy_params(pol, name), snap.groups[src].name, name)
        if have.get(pol["PolicyName"]) != params:
            calls.append(Call("PutScalingPolicy", params))
    have = {a["ScheduledActionName"]: _scheduled_params(a, name) for a in snap.scheduled[dst]}
    for act in snap.scheduled[src]:
        params = _scheduled_params(act, name)
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
        current = have.get(act["ScheduledActionName"])
        if current is not None and {k: v for k, v in params.items() if k != "StartTime"} == current:
            continue
        calls.append(Call("PutScheduledUpdateGroupAction", params))
    return calls


def policy_deletions(snap, color, only_names_of=None):
    """Delete calls for the policies and scheduled actions of `color` (those also on `only_names_of`)."""
    group = snap.groups[color]
    keep_pol = keep_act = None
    if only_names_of is not None:
        keep_pol = {p["PolicyName"] for p in snap.policies[only_names_of]}
        keep_act = {a["ScheduledActionName"] for a in snap.scheduled[only_names_of]}
    calls = [Call("DeletePolicy", {"AutoScalingGroupName": group.name, "PolicyName": p["PolicyName"]})
             for p in snap.policies[color] if keep_pol is None or p["PolicyName"] in keep_pol]
    calls += [Call("DeleteScheduledAction", {"AutoScalingGroupName": group.name,
                                             "ScheduledActionName": a["ScheduledActionName"]})
              for a in snap.scheduled[color] if keep_act is None or a["ScheduledActionName"] in keep_act]
    return calls
