"""A19: a group spreads its instances over the zones of its subnets and rebalances them.

moto launches every instance of a group into the first subnet of VPCZoneIdentifier (and a random zone
without one). Here each launch picks the subnet of the zone with the fewest of the group's counted
instances (ties: the subnets' order), skipping zones the caller asks to avoid (a zone that just failed for
capacity, A15); scale-in picks its victims from the zone with the most; and AZRebalance (when not suspended,
A8) evens out an imbalance of more than one instance by launching in the smallest zone first and
terminating in the largest only once that launch is InService.
"""

from __future__ import annotations

from collections.abc import Iterable

from .moto_seam import FakeAutoScalingGroup, InstanceState


def subnets(group: FakeAutoScalingGroup) -> list[tuple[str, str | None]]:
    """(zone, subnet id or None) the group may launch into, in the order the group names them."""
    if group.vpc_zone_identifier:
        ec2 = group.autoscaling_backend.ec2_backend
        ids = [s.strip() for s in group.vpc_zone_identifier.split(",") if s.strip()]
        return [(ec2.get_subnet(sid).availability_zone, sid) for sid in ids]
    return [(zone, None) for zone in group.availability_zones]


def zone_of(group: FakeAutoScalingGroup, inst: InstanceState) -> str:
    subnet_id = inst.instance.subnet_id
    if subnet_id:
        return group.autoscaling_backend.ec2_backend.get_subnet(subnet_id).availability_zone
    return group.availability_zones[0] if group.availability_zones else ""


def counts(group: FakeAutoScalingGroup, members: Iterable[InstanceState]) -> dict[str, int]:
    """Instances per zone of the group (every zone of its subnets listed, 0 where none runs)."""
    per_zone = {zone: 0 for zone, _ in subnets(group)}
    for inst in members:
        zone = zone_of(group, inst)
        per_zone[zone] = per_zone.get(zone, 0) + 1
    return per_zone


def next_subnet(group: FakeAutoScalingGroup, per_zone: dict[str, int],
                avoid: Iterable[str] = ()) -> tuple[str, str | None]:
    """The (zone, subnet) for the next launch: the group's least-used zone, zones in `avoid` last."""
    avoided = set(avoid)
    options = subnets(group)
    if not options:
        raise ValueError(f"group {group.name} names no subnet and no zone")
    seen: set[str] = set()
    ranked = []
    for order, (zone, subnet_id) in enumerate(options):
        if zone in seen:  # one subnet per zone: the first the group names
            continue
        seen.add(zone)
        ranked.append(((zone in avoided, per_zone.get(zone, 0), order), zone, subnet_id))
    _, zone, subnet_id = min(ranked)
    return zone, subnet_id


def victims(group: FakeAutoScalingGroup, candidates: list[InstanceState], count: int) -> list[InstanceState]:
    """Scale-in victims: from the zone with the most candidates each time, oldest first within it (A19;
    (unverified) AWS's default policy then prefers the oldest launch template and the next billing hour)."""
    by_zone: dict[str, list[InstanceState]] = {zone: [] for zone, _ in subnets(group)}
    for inst in candidates:
        by_zone.setdefault(zone_of(group, inst), []).append(inst)
    order = list(by_zone)
    chosen: list[InstanceState] = []
    for _ in range(min(count, len(candidates))):
        zone = max(order, key=lambda z: (len(by_zone[z]), -order.index(z)))
        chosen.append(by_zone[zone].pop(0))
    return chosen


def imbalance(group: FakeAutoScalingGroup, members: list[InstanceState]) -> tuple[str, str] | None:
    """(smallest zone, largest zone) when they differ by more than one instance, else None."""
    if len({zone for zone, _ in subnets(group)}) < 2:
        return None  # one zone: nothing to balance (and no per-instance pass on every tick)
    per_zone = counts(group, members)
    if len(per_zone) < 2:
        return None
    order = list(per_zone)
    small = min(order, key=lambda z: (per_zone[z], order.index(z)))
    large = max(order, key=lambda z: (per_zone[z], -order.index(z)))
    return (small, large) if per_zone[large] - per_zone[small] > 1 else None


def launch_into(group: FakeAutoScalingGroup, zone: str, subnet_id: str | None, count: int = 1) -> list[InstanceState]:
    """`count` instances through moto's own launch, which always takes the first subnet (or a random zone): it
    is shown only the chosen one for the call. One call, so one EC2 reservation for all of them: moto looks an
    instance up by walking (and copying) every reservation, so one reservation per instance made each later
    lookup O(N), and a 1,000-instance launch O(N^2) (tens of seconds inside one UpdateAutoScalingGroup)."""
    saved = group.vpc_zone_identifier, group.availability_zones
    group.vpc_zone_identifier, group.availability_zones = subnet_id, [zone]
    try:
        group.replace_autoscaling_group_instances(count, group.get_propagated_tags())
    finally:
        group.vpc_zone_identifier, group.availability_zones = saved
    return group.instance_states[-count:]
