"""What the load balancer and the target group should be told, as a pure function of what each reports.

Two sources of truth, kept apart as on AWS:
- the TARGET GROUP (the emulated AWS, DescribeTargetHealth) decides which targets exist and which get traffic:
  HAProxy routes only to targets the group reports `healthy`, drains the ones it reports `draining` (E2), and
  drops the ones it no longer lists;
- HAProxy's own HTTP checks decide what the target group reports: a target turns `healthy` only after `rise`
  consecutive real requests succeeded (HealthyThresholdCount, E1), `unhealthy` when the last one failed.
Feeding goes through the emulation's forced health; None hands the target back to the emulation (which the
fleet configures so that its own timer never turns a target healthy).
"""

from __future__ import annotations

from typing import NamedTuple


class Action(NamedTuple):
    kind: str  # "add" | "route" | "drain" | "reset" | "remove" | "feed"
    instance_id: str
    value: object = None  # add: app port; feed: "healthy" | "unhealthy" | None


def plan_load_balancer(targets, servers, ports, fed):
    """targets: {id: "initial"|"healthy"|"unhealthy"|"draining"} from the target group;
    servers: {id: haproxy.ServerState}; ports: {id: app port} of running instances;
    fed: {id: the health last fed to the target group, or None}. Returns a list of Actions, in order."""
    actions: list[Action] = []
    for instance_id in sorted(set(targets) | set(servers)):
        target = targets.get(instance_id)
        server = servers.get(instance_id)
        last_fed = fed.get(instance_id)
        if target is None:
            # Gone from the target group (draining over, E2): out of the balancer, health back to the emulation.
            if server is not None:
                actions.append(Action("remove", instance_id))
            if last_fed is not None:
                actions.append(Action("feed", instance_id, None))
            continue
        if target == "draining":
            if server is not None and server.routed:
                actions.append(Action("drain", instance_id))
            if last_fed is not None:
                # Deregistered: if it comes back (ExitStandby, A2), it starts at `initial` and must pass the
                # checks again before the target group may call it healthy (E1).
                if server is not None:
                    actions.append(Action("reset", instance_id))
                actions.append(Action("feed", instance_id, None))
            continue
        if server is None:
            if instance_id in ports:
                actions.append(Action("add", instance_id, ports[instance_id]))
            continue
        if server.up:
            health: str | None = "healthy"
        elif server.failing:
            health = "unhealthy"
        else:
            health = last_fed  # no verdict yet: leave the target where it is (`initial` at first)
        if health != last_fed:
            actions.append(Action("feed", instance_id, health))
        if target == "healthy" and server.up and not server.routed:
            actions.append(Action("route", instance_id))
        elif target != "healthy" and server.routed:
            actions.append(Action("drain", instance_id))
    return actions


def merge_target_health(descriptions):
    """DescribeTargetHealth answers (one per target group) -> {instance id: state}. With several target groups
    the balancer stands for their union (E4): a target counts as healthy if any group calls it healthy."""
    rank = {"healthy": 4, "initial": 3, "unhealthy": 2, "draining": 1}
    merged: dict[str, str] = {}
    for description in descriptions:
        for item in description.get("TargetHealthDescriptions", []):
            instance_id = item["Target"]["Id"]
            state = item["TargetHealth"]["State"]
            if state not in rank:
                continue  # `unused`: not registered
            if rank[state] > rank.get(merged.get(instance_id), 0):
                merged[instance_id] = state
    return merged


def routes_by_zone(targets, zone_of, zones, cross_zone):
    """E6: the targets a client in each zone reaches, {zone: sorted ids}, from the merged target health
    ({id: state}), each target's zone ({id: zone}), the load balancer's zones (one node each) and the
    resolved cross-zone setting (localcloud.aws.cross_zone.resolve).

    Cross-zone on: every node routes to every healthy target. Off: a node routes only to the healthy targets
    of its own zone, so a zone with none answers 503 to its clients (an ALB whose target group has cross-zone
    off; an NLB would take that zone out of DNS instead, which is not modelled). With no healthy target at
    all nothing is routed (HAProxy's 503, where AWS fails open: E4).
    """
    healthy = sorted(i for i, state in targets.items() if state == "healthy")
    if cross_zone:
        return {zone: list(healthy) for zone in zones}
    return {zone: [i for i in healthy if zone_of.get(i) == zone] for zone in zones}
