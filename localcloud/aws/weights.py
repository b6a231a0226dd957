"""A18: capacity units. With instance weights (MixedInstancesPolicy overrides with WeightedCapacity) or
`DesiredCapacityType` `vcpu`, the group's sizes are in units, each instance counts its weight, and the group
may overshoot its desired capacity.

moto stores the MixedInstancesPolicy, ignores DesiredCapacityType and reports no WeightedCapacity. Here the
group carries `desired_capacity_type` (DescribeAutoScalingGroups reports it when set), each launched instance
carries `weighted_capacity` (reported per instance by DescribeAutoScalingGroups and
DescribeAutoScalingInstances), and the layer's launch and scale-in count units (autoscaling.reconcile).
moto launches the launch template's own instance type; its weight is the override naming that type, else the
first override's. `vcpu` weighs an instance by its vCPUs (activities.vcpus); `memory-mib` is stored and
reported, but weighs by WeightedCapacity (or 1) as `units` does.
"""

from __future__ import annotations

from typing import Any

from . import activities
from .moto_seam import FakeAutoScalingGroup, InstanceState
from .state import LayerState

CAPACITY_TYPES = ("units", "vcpu", "memory-mib")


def capacity_type(state: LayerState, group: FakeAutoScalingGroup) -> str | None:
    return activities.group_record(state, group).desired_capacity_type


def _overrides(group: FakeAutoScalingGroup) -> list[dict[str, Any]]:
    policy = group.mixed_instances_policy or {}
    return list((policy.get("LaunchTemplate") or {}).get("Overrides") or [])


def weight_for(state: LayerState, group: FakeAutoScalingGroup, instance_type: str | None) -> int | None:
    """The weight of a new instance of this type, or None in a group that counts instances."""
    if capacity_type(state, group) == "vcpu":
        return activities.vcpus(instance_type or "")
    weighted = [o for o in _overrides(group) if o.get("WeightedCapacity") not in (None, "")]
    if not weighted:
        return None
    match = next((o for o in weighted if o.get("InstanceType") == instance_type), weighted[0])
    try:
        return max(1, int(match["WeightedCapacity"]))
    except (TypeError, ValueError):
        return 1


def weighted(state: LayerState, group: FakeAutoScalingGroup) -> bool:
    """Whether the group counts units other than instances (vcpu, or weighted overrides)."""
    return capacity_type(state, group) == "vcpu" or any(
        o.get("WeightedCapacity") not in (None, "") for o in _overrides(group))


def weight(inst: InstanceState) -> int:
    value = getattr(inst, "weighted_capacity", None)  # set by mark(); absent on instances moto made alone
    return int(value) if value else 1


def mark(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    w = weight_for(state, group, inst.instance.instance_type)
    inst.weighted_capacity = None if w is None else str(w)


def units(members: list[InstanceState]) -> int:
    return sum(weight(s) for s in members)
