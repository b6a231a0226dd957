"""A16: instance refresh, as far as a tool must detect it and see it replace instances.

moto 5.2.1 has no StartInstanceRefresh, DescribeInstanceRefreshes or CancelInstanceRefresh (HTTP 500). Here:
- StartInstanceRefresh records a refresh `Pending` (one active refresh per group, else
  InstanceRefreshInProgress); the next tick makes it `InProgress`, unless `InstanceRefresh` is suspended (A8).
- InProgress replaces the instances the group had when it started, a batch at a time: it terminates
  max(1, desired x (100 - MinHealthyPercentage) / 100) of them (MinHealthyPercentage 90 by default) and lets the
  group launch the replacements (A5), and starts the next batch only when every counted instance is
  InService. StandbyInstances `Terminate` terminates old Standby instances too (`Ignore`, the default, leaves
  them; `Wait` waits while any is in Standby); ScaleInProtectedInstances `Refresh` replaces protected ones
  too (`Ignore`, the default, leaves them; `Wait` waits while any is protected). Then `Successful`.
- CancelInstanceRefresh: `Cancelling`, then `Cancelled` at the next tick; no further batch starts.
Not modelled: DesiredConfiguration is stored and returned but not applied (replacements use the group's own
launch template), SkipMatching, checkpoints, InstanceWarmup (a replacement counts once InService), bake time,
auto rollback, alarms, and a refresh failing because its replacements cannot launch (it waits instead).
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import activities, asg_api
from . import autoscaling as model
from . import moto_seam as seam
from .moto_seam import ActionResult, AutoscalingClientError, AutoScalingResponse, FakeAutoScalingGroup
from .state import LayerState

ACTIVE = ("Pending", "InProgress", "Cancelling")


class InstanceRefreshInProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class ActiveInstanceRefreshNotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"


@dataclass
class Refresh:
    group: str
    scope: tuple[str, str]
    preferences: dict[str, Any]
    desired_configuration: dict[str, Any] | None
    strategy: str
    to_replace: list[str]                       # instance ids the group had at the start
    refresh_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = "Pending"
    status_reason: str = ""
    start_time: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
    end_time: datetime.datetime | None = None
    replaced: set[str] = field(default_factory=set)

    def finish(self, status: str, reason: str) -> None:
        self.status, self.status_reason = status, reason
        self.end_time = datetime.datetime.now(datetime.timezone.utc)

    def as_dict(self) -> dict[str, Any]:
        total = len(self.to_replace)
        done = 100 if not total else int(100 * len(self.replaced) / total)
        out: dict[str, Any] = {
            "InstanceRefreshId": self.refresh_id, "AutoScalingGroupName": self.group, "Status": self.status,
            "StartTime": self.start_time, "PercentageComplete": done, "InstancesToUpdate": total - len(self.replaced),
            "Preferences": self.preferences, "Strategy": self.strategy,
            "ProgressDetails": {"LivePoolProgress": {"PercentageComplete": done,
                                                    "InstancesToUpdate": total - len(self.replaced)}}}
        if self.status_reason:
            out["StatusReason"] = self.status_reason
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.desired_configuration:
            out["DesiredConfiguration"] = self.desired_configuration
        return out


def _refreshes(state: LayerState, group: FakeAutoScalingGroup) -> list[Refresh]:
    return [r for r in state.refreshes if r.group == group.name and r.scope == activities.scope(group)]


def _active(state: LayerState, group: FakeAutoScalingGroup) -> Refresh | None:
    return next((r for r in _refreshes(state, group) if r.status in ACTIVE), None)


# -- requests ----------------------------------------------------------------------------------------------

def start_instance_refresh(self: AutoScalingResponse) -> ActionResult:
    group = asg_api.require_group(self)
    state = asg_api.require_state()
    if _active(state, group) is not None:
        raise InstanceRefreshInProgress(f"An Instance Refresh is already in progress and blocks the execution "
                                        f"of this Instance Refresh for {group.name}.")
    strategy = self._get_param("Strategy") or "Rolling"
    if strategy != "Rolling":
        raise asg_api.ValidationError(f"Invalid Strategy: {strategy}")
    prefs = self._get_params().get("Preferences") or {}
    healthy = int(prefs.get("MinHealthyPercentage", 90))
    if not 0 <= healthy <= 100:
        raise asg_api.ValidationError("MinHealthyPercentage must be between 0 and 100")
    prefs = {"MinHealthyPercentage": healthy, "SkipMatching": bool(prefs.get("SkipMatching", False)),
             "StandbyInstances": prefs.get("StandbyInstances", "Ignore"),
             "ScaleInProtectedInstances": prefs.get("ScaleInProtectedInstances", "Ignore"),
             **{k: v for k, v in prefs.items() if k in ("InstanceWarmup", "AutoRollback", "MaxHealthyPercentage")}}
    refresh = Refresh(group=group.name, scope=activities.scope(group), preferences=prefs, strategy=strategy,
                      desired_configuration=self._get_params().get("DesiredConfiguration"),
                      to_replace=[s.instance.id for s in group.instance_states
                                  if s.lifecycle_state not in ("Terminating",)])
    state.refreshes.append(refresh)
    return ActionResult({"InstanceRefreshId": refresh.refresh_id})


def describe_instance_refreshes(self: AutoScalingResponse) -> ActionResult:
    group = asg_api.require_group(self)
    state = asg_api.require_state()
    ids = set(self._get_param("InstanceRefreshIds", []) or [])
    chosen = [r for r in reversed(_refreshes(state, group)) if not ids or r.refresh_id in ids]  # newest first
    from . import asg_catalog  # asg_catalog imports asg_api, which this module imports

    page, token = asg_catalog.paginate(self, "DescribeInstanceRefreshes", chosen)
    return ActionResult({"InstanceRefreshes": [r.as_dict() for r in page], "NextToken": token})


def cancel_instance_refresh(self: AutoScalingResponse) -> ActionResult:
    group = asg_api.require_group(self)
    refresh = _active(asg_api.require_state(), group)
    if refresh is None:
        raise ActiveInstanceRefreshNotFound(f"No in progress or pending Instance Refresh found for Auto Scaling "
                                            f"group {group.name}")
    if refresh.status != "Cancelling":
        refresh.status = "Cancelling"
    return ActionResult({"InstanceRefreshId": refresh.refresh_id})


# -- the clock ---------------------------------------------------------------------------------------------

def tick(state: LayerState) -> None:
    for refresh in [r for r in state.refreshes if r.status in ACTIVE]:
        group = next((b.autoscaling_groups.get(refresh.group) for b in state.backends
                      if (b.account_id, b.region_name) == refresh.scope), None)
        if group is None:
            refresh.finish("Cancelled", "The Auto Scaling group was deleted.")
        elif refresh.status == "Cancelling":
            refresh.finish("Cancelled", "Cancelled by a CancelInstanceRefresh request.")
        elif not model.suspended(group, "InstanceRefresh"):  # A8, A16: a suspendable process
            refresh.status = "InProgress"
            _step(state, group, refresh)


def _step(state: LayerState, group: FakeAutoScalingGroup, refresh: Refresh) -> None:
    by_id = {s.instance.id: s for s in group.instance_states}
    for iid in refresh.to_replace:
        if iid not in by_id or by_id[iid].lifecycle_state == "Terminating":
            refresh.replaced.add(iid)  # gone: terminated by this refresh or otherwise
    if any(s.lifecycle_state in model.COUNTED and s.lifecycle_state != "InService" for s in group.instance_states):
        return  # a batch is still launching: the next one waits (MinHealthyPercentage)
    prefs = refresh.preferences
    left = [by_id[i] for i in refresh.to_replace if i not in refresh.replaced]
    standby = [s for s in left if s.lifecycle_state in ("Standby", "EnteringStandby")]
    protected = [s for s in left if s.protected_from_scale_in and s not in standby]
    if (prefs["StandbyInstances"] == "Wait" and standby) or (prefs["ScaleInProtectedInstances"] == "Wait"
                                                             and protected):
        refresh.status_reason = "Waiting for instances in Standby or protected from scale in."
        return
    eligible = [s for s in left if s.lifecycle_state == "InService"
                and (not s.protected_from_scale_in or prefs["ScaleInProtectedInstances"] == "Refresh")]
    if prefs["StandbyInstances"] == "Terminate":
        eligible += [s for s in standby if s.lifecycle_state == "Standby"]
    if not eligible:
        refresh.finish("Successful", "")
        return
    batch = max(1, (group.desired_capacity or 0) * (100 - prefs["MinHealthyPercentage"]) // 100)
    for inst in eligible[:batch]:
        model.begin_terminate(state, group, inst, cause=f"At {activities.stamp_now()} an instance was taken out "
                                                        f"of service in response to an instance refresh.")
        refresh.replaced.add(inst.instance.id)
    model.reconcile(state, group)  # the replacements (A5)


for _func in (start_instance_refresh, describe_instance_refreshes, cancel_instance_refresh):
    seam.register(AutoScalingResponse, _func.__name__, _func)
