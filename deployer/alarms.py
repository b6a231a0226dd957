"""CloudWatch alarms of step and simple scaling policies (W1): what to copy to the new group, what to delete.

A step or simple policy acts only through an alarm whose actions name the policy's ARN, and the alarm watches
its group's metric (W1). A copied policy has a new ARN and no alarm, so each such alarm is copied too: the same
definition, the `AutoScalingGroupName` dimension rewritten to the new group, the actions remapped to the new
policy's ARN. A copy is named `<original><MARKER><new group name>`: the name is the tool's marker. Only alarms
carrying it for a group are ever deleted, so an operator's own alarm never is; and a rerun after a crash finds
what the tool created from the names alone (PutMetricAlarm replaces by name, DeleteAlarms of a missing name is
no error), with no record to keep in step with CloudWatch. No AWS here.
"""

from __future__ import annotations

from .steps import Call

MARKER = "--bluegreen-"
ALARMED_POLICIES = ("SimpleScaling", "StepScaling")  # target tracking owns its alarms (W1)
ACTION_LISTS = ("AlarmActions", "OKActions", "InsufficientDataActions")
# What PutMetricAlarm accepts of a DescribeAlarms MetricAlarms record.
ALARM_KEYS = ("AlarmDescription", "ActionsEnabled", *ACTION_LISTS, "MetricName", "Namespace", "Statistic",
              "ExtendedStatistic", "Dimensions", "Period", "Unit", "EvaluationPeriods", "DatapointsToAlarm",
              "Threshold", "ComparisonOperator", "TreatMissingData", "EvaluateLowSampleCountPercentile", "Metrics",
              "ThresholdMetricId")
DELETE_BATCH = 100  # DeleteAlarms takes at most 100 names


def copy_name(alarm_name, group_name):
    """The tool's copy of `alarm_name` for `group_name`; a copy of a copy is named from the original."""
    return alarm_name.split(MARKER, 1)[0] + MARKER + group_name


def is_copy_for(alarm_name, group_name):
    return alarm_name.endswith(MARKER + group_name)


def regroup(value, old, new):
    """`value` with every `AutoScalingGroupName` dimension naming group `old` rewritten to `new` (W1): alarm
    dimensions, metric math queries, customized target tracking metrics."""
    if isinstance(value, list):
        return [regroup(v, old, new) for v in value]
    if isinstance(value, dict):
        if value.get("Name") == "AutoScalingGroupName" and value.get("Value") == old:
            return {**value, "Value": new}
        return {k: regroup(v, old, new) for k, v in value.items()}
    return value


def _arns(policies):
    """PolicyName -> PolicyARN of the step and simple policies among `policies` (DescribePolicies records)."""
    return {p["PolicyName"]: p["PolicyARN"] for p in policies
            if (p.get("PolicyType") or "SimpleScaling") in ALARMED_POLICIES and p.get("PolicyARN")}


def _actions(alarm):
    return {a for key in ACTION_LISTS for a in alarm.get(key) or ()}


def _params(alarm, name, old, new, remap):
    params = {"AlarmName": name}
    for key in ALARM_KEYS:
        value = alarm.get(key)
        if value is None or value in ([], ""):
            continue
        if key in ACTION_LISTS:
            value = [remap.get(a, a) for a in value]
        params[key] = regroup(value, old, new)
    return params


def alarm_copies(snap, src, dst):
    """PutMetricAlarm calls giving group `dst` a copy of every alarm acting on a step or simple policy of `src`.

    Plan it once `dst` has the policies (policies.policy_copies returns nothing): a copy's actions name the new
    policy's ARN, which exists only after PutScalingPolicy. A copy `dst` already has as it would be put costs no
    call.
    """
    old, new = snap.groups[src].name, snap.groups[dst].name
    have = _arns(snap.policies[dst])
    remap = {arn: have[name] for name, arn in _arns(snap.policies[src]).items() if name in have}
    by_name = {a["AlarmName"]: a for a in snap.alarms}
    calls = []
    for alarm in snap.alarms:
        if not _actions(alarm) & set(remap) or is_copy_for(alarm["AlarmName"], new):
            continue
        name = copy_name(alarm["AlarmName"], new)
        params = _params(alarm, name, old, new, remap)
        current = by_name.get(name)
        if current is not None and _params(current, name, new, new, {}) == params:
            continue
        calls.append(Call("PutMetricAlarm", params))
    return calls


def alarm_deletions(snap, color):
    """DeleteAlarms calls for the tool's copies made for group `color`; never an alarm without the marker."""
    name = snap.groups[color].name
    names = sorted(a["AlarmName"] for a in snap.alarms if is_copy_for(a["AlarmName"], name))
    return [Call("DeleteAlarms", {"AlarmNames": names[i:i + DELETE_BATCH]})
            for i in range(0, len(names), DELETE_BATCH)]


def left_without_action(snap, color):
    """Alarms of the operator's (no marker) acting on a step or simple policy of `color`: deleting the policy
    strips that action and keeps the alarm (W1), so the operator is told which."""
    arns = set(_arns(snap.policies[color]).values())
    name = snap.groups[color].name
    return sorted(a["AlarmName"] for a in snap.alarms
                  if _actions(a) & arns and not is_copy_for(a["AlarmName"], name))
