"""A15: scaling activities, and the launch failures a group meets (fault injection).

moto answers DescribeScalingActivities with nothing. Here every launch, termination, Standby move and
detach is an activity whose StatusCode follows the instance: a launch is `MidLifecycleAction` while it waits
for a launch hook, `InProgress` while Pending, `Successful` once InService, `Cancelled` if it is abandoned; a
termination is `WaitingForELBConnectionDraining` while its targets drain, then `Successful`; Standby moves are
`InProgress` until they are done. A launch that fails (the faults `insufficient_capacity_zones`,
`vcpu_limit`, `broken_launch_templates`) is a `Failed` activity with EC2's message as StatusMessage; the
group tries again on its own after LAUNCH_RETRY_SECONDS, preferring another zone after a capacity failure.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import moto_seam as seam
from .moto_seam import ActionResult, AutoScalingResponse, FakeAutoScalingGroup
from .state import GroupRecord, LayerState

# (unverified) AWS backs off between failed launches (seconds to minutes) and publishes no figure; 10 AWS s.
LAUNCH_RETRY_SECONDS = 10.0
FINAL = ("Successful", "Failed", "Cancelled")
LAUNCH_STATUS = {"Pending:Wait": "MidLifecycleAction", "Pending": "InProgress", "Pending:Proceed": "InProgress"}
MAX_RECORDS = 100  # DescribeScalingActivities: default and largest page (A9)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_now() -> str:
    return _stamp(_now())


@dataclass
class Activity:
    group: str
    scope: tuple[str, str]          # (account, Region)
    kind: str                       # launch, terminate, enter_standby, exit_standby, detach
    instance_id: str | None
    description: str
    cause: str
    status_code: str
    status_message: str = ""
    details: dict[str, str] = field(default_factory=dict)
    activity_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    start_time: datetime.datetime = field(default_factory=_now)
    end_time: datetime.datetime | None = None

    def set_status(self, code: str, message: str = "") -> None:
        if self.status_code in FINAL:
            return
        self.status_code = code
        if message:
            self.status_message = message
        if code in FINAL:
            self.end_time = _now()

    def as_dict(self, arn: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ActivityId": self.activity_id, "AutoScalingGroupName": self.group, "Description": self.description,
            "Cause": self.cause, "StartTime": self.start_time, "StatusCode": self.status_code,
            "Progress": 100 if self.status_code in FINAL else (0 if self.kind == "launch" else 50),
            "Details": json.dumps(self.details)}
        if arn:
            out["AutoScalingGroupARN"] = arn
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.status_message:
            out["StatusMessage"] = self.status_message
        return out


def scope(group: FakeAutoScalingGroup) -> tuple[str, str]:
    backend = group.autoscaling_backend
    return backend.account_id, backend.region_name


def group_record(state: LayerState, group: FakeAutoScalingGroup) -> GroupRecord:
    key = (*scope(group), group.name)
    rec = state.groups.get(key)
    if rec is None:
        rec = state.groups[key] = GroupRecord()
    return rec


def add(state: LayerState, group: FakeAutoScalingGroup, kind: str, instance_id: str | None, description: str,
        cause: str, status_code: str, status_message: str = "", activity_id: str | None = None,
        details: dict[str, str] | None = None) -> Activity:
    activity = Activity(group=group.name, scope=scope(group), kind=kind, instance_id=instance_id,
                        description=description, cause=cause, status_code="", details=details or {})
    if activity_id:
        activity.activity_id = activity_id
    activity.set_status(status_code, status_message)
    state.activities.append(activity)
    if instance_id and activity.status_code not in FINAL:
        state.open_activities.setdefault(instance_id, []).append(activity)
    return activity


def open_activities(state: LayerState, instance_id: str, kind: str | None = None) -> list[Activity]:
    """The instance's activities still under way (an index: a long run holds thousands of activities)."""
    still = [a for a in state.open_activities.get(instance_id, []) if a.status_code not in FINAL]
    if still:
        state.open_activities[instance_id] = still
    else:
        state.open_activities.pop(instance_id, None)
    return [a for a in still if kind is None or a.kind == kind]


def follow(state: LayerState, instance_id: str, new_state: str) -> None:
    """Move the open activities of an instance along with its lifecycle state."""
    for activity in open_activities(state, instance_id):
        if activity.kind in ("launch", "exit_standby") and new_state == "InService":
            activity.set_status("Successful")
        elif activity.kind == "launch" and new_state in LAUNCH_STATUS:
            activity.set_status(LAUNCH_STATUS[new_state])
        elif activity.kind == "launch" and new_state == "Terminating":
            activity.set_status("Cancelled", "The instance was terminated before it entered service.")
        elif activity.kind == "enter_standby" and new_state == "Standby":
            activity.set_status("Successful")


def launch_cause(group: FakeAutoScalingGroup, before: int, rebalance: bool) -> str:
    stamp = _stamp(_now())
    if rebalance:
        return (f"At {stamp} an instance was launched to aid in balancing the group's zones.")
    return (f"At {stamp} an instance was started in response to a difference between desired and actual "
            f"capacity, increasing the capacity from {before} to {before + 1}.")


def terminate_cause(group: FakeAutoScalingGroup, unhealthy: bool, counted: int) -> str:
    stamp = _stamp(_now())
    if unhealthy:
        return (f"At {stamp} an instance was taken out of service in response to a health check indicating it "
                f"has been terminated, stopped or marked unhealthy.")
    return (f"At {stamp} an instance was taken out of service in response to a difference between desired and "
            f"actual capacity, shrinking the capacity from {counted} to {group.desired_capacity}.")


# -- launch failures (fault injection) ---------------------------------------------------------------------

def vcpus(instance_type: str) -> int:
    """vCPUs of an instance type, from its size (nano..large: 2, xlarge: 4, Nxlarge: 4N); enough for a limit."""
    size = instance_type.split(".", 1)[-1]
    if size.endswith("xlarge"):
        factor = size[:-len("xlarge")]
        return 4 * (int(factor) if factor.isdigit() else 1)
    return 96 if size == "metal" else 2


def _runningvcpus(group: FakeAutoScalingGroup) -> int:
    ec2 = group.autoscaling_backend.ec2_backend
    return sum(vcpus(i.instance_type) for i in ec2.all_instances() if i.state in ("pending", "running"))


def launch_failure(state: LayerState, group: FakeAutoScalingGroup, zone: str) -> str | None:
    """EC2's message for a launch into `zone` that the configured faults make fail, else None."""
    faults = state.faults
    template = group.ec2_launch_template
    if template is not None and ({template.id, template.name} & set(faults.broken_launch_templates)):
        return f"The image id '[{group.image_id}]' does not exist. Launching EC2 instance failed."
    itype = group.instance_type or "m1.small"
    if faults.vcpu_limit is not None and _runningvcpus(group) + vcpus(itype) > faults.vcpu_limit:
        return (f"You have requested more vCPU capacity than your current vCPU limit of {faults.vcpu_limit} "
                f"allows for the instance bucket that the specified instance type belongs to. Please visit "
                f"http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. "
                f"Launching EC2 instance failed.")
    if zone in faults.insufficient_capacity_zones:
        others = [z for z in dict.fromkeys(group.availability_zones)
                  if z != zone and z not in faults.insufficient_capacity_zones]
        elsewhere = ", ".join(others) or "another Availability Zone"
        return (f"We currently do not have sufficient {itype} capacity in the Availability Zone you requested "
                f"({zone}). Our system will be working on provisioning additional capacity. You can currently "
                f"get {itype} capacity by not specifying an Availability Zone in your request or choosing "
                f"{elsewhere}. Launching EC2 instance failed.")
    return None


def record_failed_launch(state: LayerState, group: FakeAutoScalingGroup, zone: str, subnet_id: str | None,
                         message: str, before: int, rebalance: bool) -> None:
    """A Failed activity; the group waits LAUNCH_RETRY_SECONDS, then avoids this zone if capacity failed."""
    add(state, group, "launch", None, f"Launching a new EC2 instance.  Status Reason: {message}",
        launch_cause(group, before, rebalance), "Failed", message,
        details={"Subnet ID": subnet_id or "", "Availability Zone": zone})
    rec = group_record(state, group)
    rec.retry_at = state.now() + state.scaled(LAUNCH_RETRY_SECONDS)
    if "capacity in the Availability Zone" in message:
        rec.failed_zones.add(zone)


# -- DescribeScalingActivities -----------------------------------------------------------------------------

def describe_scaling_activities(self: AutoScalingResponse) -> ActionResult:
    from . import asg_api, asg_catalog  # asg_api imports this module

    state = asg_api.require_state()
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    if name:
        asg_api.require_group(self, name)
    ids = set(self._get_param("ActivityIds", []) or [])
    include_deleted = self._get_bool_param("IncludeDeletedGroups", False)
    scope = (backend.account_id, backend.region_name)
    live = backend.autoscaling_groups
    chosen = [a for a in reversed(state.activities)  # newest first, as AWS lists them
              if a.scope == scope and (not name or a.group == name) and (not ids or a.activity_id in ids)
              and (include_deleted or a.group in live)]
    page, token = asg_catalog.paginate(self, "DescribeScalingActivities", chosen)
    arns = {g: live[g].arn for g in {a.group for a in page} if g in live}
    return ActionResult({"Activities": [a.as_dict(arns.get(a.group)) for a in page], "NextToken": token})


seam.register(AutoScalingResponse, "describe_scaling_activities", describe_scaling_activities)
