"""Auto Scaling catalogue calls: policies and scheduled actions per group (A7), tags (A12), pages (A9).

moto keys policies and scheduled actions by name alone, per Region, so the same name on blue and green
collides and DeletePolicy on one group deletes the other's. Here the layer keeps its own index by (group, name)
(LayerState.policies and .scheduled_actions) and answers from it; moto's dicts keep moto's keys. The describe
calls page with AWS's sizes instead of answering everything at once.
"""

from __future__ import annotations

import base64
from typing import Any

from . import asg_api, runtime, warm
from . import moto_seam as seam
from .moto_seam import (
    ActionResult,
    AutoScalingBackend,
    AutoScalingResponse,
    EmptyResult,
    FakeScalingPolicy,
    FakeScheduledAction,
    ValidationError,
    cloudwatch_backends,
)
from .state import GroupIndex

# A9: (default page, largest page) per describe call, from the Auto Scaling API reference.
PAGE_SIZES = {
    "DescribeAutoScalingGroups": (50, 100),
    "DescribeScalingActivities": (100, 100),
    "DescribeInstanceRefreshes": (50, 100),
    "DescribeAutoScalingInstances": (50, 50),
    "DescribeTags": (50, 100),
    "DescribePolicies": (50, 100),
    "DescribeScheduledActions": (50, 100),
}


def paginate(resp: AutoScalingResponse, operation: str, items: list[Any]) -> tuple[list[Any], str | None]:
    default, largest = PAGE_SIZES[operation]
    size = resp._get_int_param("MaxRecords")
    if size is None:
        size = default
    if not 1 <= size <= largest:
        raise ValidationError(f"1 validation error detected: Value '{size}' at 'maxRecords' failed to satisfy "
                              f"constraint: Member must have value between 1 and {largest}")
    start = 0
    token = resp._get_param("NextToken")
    if token:
        try:
            kind, offset = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
            start = int(offset)
            if kind != operation or start < 0:
                raise ValueError(kind)
        except ValueError:
            raise ValidationError("The NextToken value is invalid") from None
    page = items[start:start + size]
    end = start + len(page)
    next_token = None
    if end < len(items):
        next_token = base64.urlsafe_b64encode(f"{operation}:{end}".encode()).decode()
    return page, next_token


# -- describe calls with pages (A9) ------------------------------------------------------------------------

def describe_auto_scaling_groups(self: AutoScalingResponse) -> ActionResult:
    groups = self.autoscaling_backend.describe_auto_scaling_groups(
        self._get_param("AutoScalingGroupNames", []), filters=self._get_param("Filters", []))
    page, token = paginate(self, "DescribeAutoScalingGroups", groups)
    return ActionResult({"AutoScalingGroups": page, "NextToken": token})


def describe_auto_scaling_instances(self: AutoScalingResponse) -> ActionResult:
    ids = self._get_param("InstanceIds", [])
    if len(ids) > 50:
        raise ValidationError("The number of instance ids that may be passed in is limited to 50")
    states = self.autoscaling_backend.describe_auto_scaling_instances(instance_ids=ids)
    state = runtime.active()
    if state is not None:  # A17: warm pool instances too, in their Warmed:* states
        states += [s for s in warm.all_members(state, self.autoscaling_backend) if not ids or s.instance.id in ids]
    page, token = paginate(self, "DescribeAutoScalingInstances", states)
    return ActionResult({"AutoScalingInstances": page, "NextToken": token})


def describe_tags(self: AutoScalingResponse) -> ActionResult:
    tags = self.autoscaling_backend.describe_tags(filters=self._get_param("Filters", []))
    page, token = paginate(self, "DescribeTags", tags)
    return ActionResult({"Tags": page, "NextToken": token})


def _listed(resp: AutoScalingResponse, index: GroupIndex, names_param: str) -> list[Any]:
    """A7: the items of the layer's index that the request's group and names select (all when absent)."""
    group_name = resp._get_param("AutoScalingGroupName")
    if group_name:
        asg_api.require_group(resp, group_name)
    names = resp._get_param(names_param, []) or []
    return [item for (owner, name), item in index.in_backend(resp.autoscaling_backend)
            if (not group_name or owner == group_name) and (not names or name in names)]


def describe_policies(self: AutoScalingResponse) -> ActionResult:
    types = self._get_param("PolicyTypes", []) or []
    policies = [p for p in _listed(self, asg_api.require_state().policies, "PolicyNames")
                if not types or p.policy_type in types]
    page, token = paginate(self, "DescribePolicies", policies)
    _link_alarms(self.autoscaling_backend, page)
    return ActionResult({"ScalingPolicies": page, "NextToken": token})


def _link_alarms(backend: AutoScalingBackend, policies: list[FakeScalingPolicy]) -> None:
    """W1: a policy's `Alarms` ("the CloudWatch alarms related to the policy", DescribePolicies) lists the alarms
    whose actions name its ARN; moto lists none. Which action lists count is unverified: only AlarmActions here,
    the narrower reading, so a tool that finds its alarms through this field is not given more than AWS may give.
    Computed at every describe, so it follows PutMetricAlarm, DeleteAlarms and DeletePolicy."""
    alarms = cloudwatch_backends[backend.account_id][backend.region_name].alarms
    for policy in policies:
        policy.alarms = [{"AlarmName": a.name, "AlarmARN": a.alarm_arn} for a in alarms.values()
                         if policy.arn in a.alarm_actions]


def describe_scheduled_actions(self: AutoScalingResponse) -> ActionResult:
    actions = _listed(self, asg_api.require_state().scheduled_actions, "ScheduledActionNames")
    page, token = paginate(self, "DescribeScheduledActions", actions)
    return ActionResult({"ScheduledUpdateGroupActions": page, "NextToken": token})


# -- tags (A12) --------------------------------------------------------------------------------------------

def create_or_update_tags(self: AutoScalingResponse) -> ActionResult:
    tags = self._get_param("Tags", []) or []
    by_group: dict[str, list[dict[str, Any]]] = {}
    for tag in tags:
        by_group.setdefault(tag.get("ResourceId"), []).append(tag)
    for name, group_tags in by_group.items():
        group = asg_api.require_group(self, name)
        existing = {t["Key"] for t in group.tags}
        asg_api.check_tags(group_tags, existing=len(existing - {t.get("Key") for t in group_tags}))
    return seam.original(AutoScalingResponse, "create_or_update_tags")(self)


def delete_tags(self: AutoScalingResponse) -> ActionResult:
    for tag in self._get_params().get("Tags", []) or []:
        asg_api.require_group(self, tag.get("ResourceId"))
    return seam.original(AutoScalingResponse, "delete_tags")(self)


# -- scaling policies per (group, name) (A7) ---------------------------------------------------------------

@seam.replaces(AutoScalingBackend, "put_scaling_policy")
def _put_scaling_policy(self: AutoScalingBackend, *args: Any, **kwargs: Any) -> FakeScalingPolicy:
    # moto's arguments pass through unchanged (moto_seam records their signature); moto stores the policy
    # under its name alone, the layer's index under (group, name).
    policy = seam.original(AutoScalingBackend, "put_scaling_policy")(self, *args, **kwargs)
    state = runtime.active()
    if state is not None:
        state.policies.put(self, policy.auto_scaling_group_name, policy.name, policy)
    return policy


def _find_policy(resp: AutoScalingResponse) -> tuple[str, FakeScalingPolicy]:
    """The policy the request names, and its group."""
    name = resp._get_param("PolicyName")
    group_name = resp._get_param("AutoScalingGroupName")
    policies = asg_api.require_state().policies.in_backend(resp.autoscaling_backend)
    if name and name.startswith("arn:"):
        for (owner, _), policy in policies:
            if policy.arn == name:
                return owner, policy
    elif group_name:
        asg_api.require_group(resp, group_name)
        for (owner, policy_name), policy in policies:
            if (owner, policy_name) == (group_name, name):
                return owner, policy
    else:
        # (unverified) a bare name without the group is ambiguous once two groups share it; AWS resolves it
        # in the caller's account, so only an unambiguous bare name is accepted here.
        matches = [(owner, policy) for (owner, policy_name), policy in policies if policy_name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValidationError(f"Policy name {name} exists in several groups: pass AutoScalingGroupName")
    raise ValidationError(f"Policy not found: {name}")


def delete_policy(self: AutoScalingResponse) -> ActionResult:
    group_name, policy = _find_policy(self)
    asg_api.require_state().policies.remove(self.autoscaling_backend, group_name, policy.name)
    _strip_alarm_actions(self.autoscaling_backend, policy.arn)
    return EmptyResult()


def _strip_alarm_actions(backend: AutoScalingBackend, arn: str) -> None:
    """W1: deleting a step or simple policy deletes the alarm action that names it, never the alarm; moto leaves
    the dead ARN in place. (A target tracking policy's own alarms are not modelled: moto makes none.)"""
    alarms = cloudwatch_backends[backend.account_id][backend.region_name].alarms
    for alarm in alarms.values():
        for attr in ("alarm_actions", "ok_actions", "insufficient_data_actions"):
            actions = getattr(alarm, attr)
            if arn in actions:
                setattr(alarm, attr, [a for a in actions if a != arn])


def execute_policy(self: AutoScalingResponse) -> ActionResult:
    _, policy = _find_policy(self)
    group = asg_api.require_group(self, policy.auto_scaling_group_name)
    desired = new_capacity(group, policy.adjustment_type, policy.scaling_adjustment or 0)
    self.autoscaling_backend.set_desired_capacity(group.name, desired)
    return EmptyResult()


def new_capacity(group: Any, adjustment_type: str, adjustment: int) -> int:
    """The desired capacity a scaling adjustment gives the group (ExecutePolicy, and alarms.py's actions)."""
    if adjustment_type == "ExactCapacity":
        desired = adjustment
    elif adjustment_type == "PercentChangeInCapacity":
        # AWS rounds a change between -1 and 1 away from zero, and any other change toward zero.
        change = group.desired_capacity * adjustment / 100.0
        step = int(change) if abs(change) >= 1 else (1 if change > 0 else -1 if change < 0 else 0)
        desired = group.desired_capacity + step
    else:
        desired = group.desired_capacity + adjustment
    # Scaling policies never take a group outside [MinSize, MaxSize] (A5).
    return max(group.min_size, min(group.max_size, desired))


# -- scheduled actions per (group, name) (A7) --------------------------------------------------------------

@seam.replaces(AutoScalingBackend, "put_scheduled_update_group_action")
def _put_scheduled_action(self: AutoScalingBackend, *args: Any, **kwargs: Any) -> FakeScheduledAction:
    # moto's arguments pass through unchanged; its first one, `name`, is the GROUP's name here.
    action = seam.original(AutoScalingBackend, "put_scheduled_update_group_action")(self, *args, **kwargs)
    state = runtime.active()
    if state is not None:
        state.scheduled_actions.put(self, action.auto_scaling_group_name, action.scheduled_action_name, action)
    return action


@seam.replaces(AutoScalingBackend, "delete_scheduled_action")
def _delete_scheduled_action(self: AutoScalingBackend, auto_scaling_group_name: str,
                             scheduled_action_name: str) -> None:
    # moto's BatchDeleteScheduledAction comes here too, one name at a time.
    state = runtime.active()
    if state is None:
        return seam.original(AutoScalingBackend, "delete_scheduled_action")(
            self, auto_scaling_group_name, scheduled_action_name)
    if state.scheduled_actions.remove(self, auto_scaling_group_name, scheduled_action_name) is None:
        raise ValidationError("Scheduled action name not found")


REPLACED = (describe_auto_scaling_groups, describe_auto_scaling_instances, describe_tags, describe_policies,
            describe_scheduled_actions, create_or_update_tags, delete_tags, delete_policy, execute_policy)


for _func in REPLACED:
    seam.register(AutoScalingResponse, _func.__name__, _func)
