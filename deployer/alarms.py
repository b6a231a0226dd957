"""What the tool copies to the new group and may delete (W1, A7): alarms, and the names that mark its copies.

A step or simple policy acts only through an alarm whose actions name the policy's ARN, and the alarm watches
its group's metric (W1). A copied policy has a new ARN and no alarm, so each such alarm is copied too: the same
definition, the `AutoScalingGroupName` dimension rewritten to the new group, the actions remapped to the new
policy's ARN.

Ownership. Every copy the tool makes (alarm, scaling policy, scheduled action) is named
`<original><MARKER><new group name>`: the name is the tool's marker (policies have no tags, and a name survives a
lost state store and an IaC apply, X3). Rollback and the next deploy delete or overwrite only names carrying the
marker for that group, so an operator's own policy or alarm never is, whatever its name; and a rerun after a crash
finds what the tool created from the names alone (Put* replaces by name, deleting a missing name is skipped). The
operation record also lists the names (store.py, `created`), so the alarms are read by name, never the whole
Region. No AWS here.
"""

from __future__ import annotations

from .steps import Call

MARKER = "--bluegreen-"
NAME_MAX = 255  # AlarmName, PolicyName and ScheduledActionName all take at most 255 characters
ALARMED_POLICIES = ("SimpleScaling", "StepScaling")  # target tracking owns its alarms (W1)
ACTION_LISTS = ("AlarmActions", "OKActions", "InsufficientDataActions")
# What PutMetricAlarm accepts of a DescribeAlarms MetricAlarms record.
ALARM_KEYS = ("AlarmDescription", "ActionsEnabled", *ACTION_LISTS, "MetricName", "Namespace", "Statistic",
              "ExtendedStatistic", "Dimensions", "Period", "Unit", "EvaluationPeriods", "DatapointsToAlarm",
              "Threshold", "ComparisonOperator", "TreatMissingData", "EvaluateLowSampleCountPercentile", "Metrics",
              "ThresholdMetricId")
DELETE_BATCH = 100  # DeleteAlarms takes at most 100 names


def original_name(name):
    """The operator's name a copy was made from (the name itself when it is no copy)."""
    return name.split(MARKER, 1)[0]


def copy_name(name, group_name):
    """The tool's copy of `name` (an alarm, policy or scheduled action) for `group_name`; a copy of a copy is
    named from the original."""
    return original_name(name) + MARKER + group_name


def is_copy_for(name, group_name):
    return name.endswith(MARKER + group_name)


def too_long(names, group_name):
    """The copies of `names` for `group_name` whose name would pass NAME_MAX: (name, length of its copy)."""
    return [(n, len(copy_name(n, group_name))) for n in names if len(copy_name(n, group_name)) > NAME_MAX]


def linked_alarm_names(policies):
    """The alarm names DescribePolicies lists in the `Alarms` of the step and simple policies among `policies`
    (W1: the alarms whose actions name them). The deployer reads only these alarms, by name."""
    return {a["AlarmName"] for p in policies if (p.get("PolicyType") or "SimpleScaling") in ALARMED_POLICIES
            for a in p.get("Alarms") or ()}


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
    policy's ARN, which exists only after PutScalingPolicy. Only a policy the tool copied is remapped: where the
    operator's own policy of that name is on `dst` (kept, never overwritten), so are the operator's alarms for it,
    and a second alarm would scale twice. A copy `dst` already has as it would be put costs no call.
    """
    old, new = snap.groups[src].name, snap.groups[dst].name
    have = _arns(snap.policies[dst])
    remap = {arn: have[copy_name(name, new)] for name, arn in _arns(snap.policies[src]).items()
             if copy_name(name, new) in have}
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
