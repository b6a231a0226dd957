"""A17: warm pools, as far as a tool must see them.

moto stores a warm pool's configuration and lists no instance in it. Here a group with a warm pool keeps
max(MinSize, MaxGroupPreparedCapacity (or the group's MaxSize) - DesiredCapacity) instances in the pool:
each is launched as `Warmed:Pending` and becomes `Warmed:Stopped`, `Warmed:Running` or `Warmed:Hibernated`
(the PoolState) after the launch time. They are listed by DescribeWarmPool and DescribeAutoScalingInstances,
never by DescribeAutoScalingGroups, and are never in service or in a load balancer. A scale-out takes a
ready pool instance first ("Launching a new EC2 instance from warm pool: i-..."): it enters the group as
Pending (Pending:Wait with a launch hook) WITHOUT a fresh boot, keeping what it ran in the pool. The pool is
refilled; DeleteWarmPool terminates its instances.
Not modelled: lifecycle hooks in `Warmed:Pending:Wait`, the EC2 state of Stopped / Hibernated pool instances
(they stay `running` in EC2), InstanceReusePolicy (scale-in terminates), launch faults on pool launches,
warm pool Status `PendingDelete`.
"""

from __future__ import annotations

from typing import Any

from . import moto_seam as seam
from . import weights, zones
from .moto_seam import ActionResult, AutoScalingResponse, FakeAutoScalingGroup, InstanceState
from .state import InstanceRecord, LayerState

READY = {"Stopped": "Warmed:Stopped", "Running": "Warmed:Running", "Hibernated": "Warmed:Hibernated"}


def _key(group: FakeAutoScalingGroup) -> tuple[str, str, str]:
    return group.autoscaling_backend.account_id, group.autoscaling_backend.region_name, group.name


def members(state: LayerState, group: FakeAutoScalingGroup) -> list[InstanceState]:
    return state.warm_pools.setdefault(_key(group), [])


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def size(group: FakeAutoScalingGroup) -> int:
    pool = group.warm_pool
    if pool is None:
        return 0
    prepared = _int(pool.max_group_prepared_capacity, -1)
    if prepared < 0:
        prepared = group.max_size
    return max(0, _int(pool.min_size, 0), prepared - (group.desired_capacity or 0))


def take(state: LayerState, group: FakeAutoScalingGroup) -> InstanceState | None:
    """A ready pool instance for a scale-out, moved into the group, or None (A17)."""
    pool = members(state, group)
    ready = next((s for s in pool if s.lifecycle_state in READY.values()), None)
    if ready is not None:
        pool.remove(ready)
        group.instance_states.append(ready)
        weights.mark(state, group, ready)  # A18
    return ready


def tick(state: LayerState, launch_seconds: float) -> None:
    now = state.now()
    for backend in list(state.backends):
        for group in list(backend.autoscaling_groups.values()):
            pool = members(state, group)
            ready_state = READY.get(getattr(group.warm_pool, "pool_state", "Stopped"), "Warmed:Stopped")
            for inst in pool:
                rec = state.instances.get(inst.instance.id)
                if (inst.lifecycle_state == "Warmed:Pending" and rec and rec.deadline is not None
                        and now >= rec.deadline):
                    inst.lifecycle_state = ready_state
                    rec.deadline = None
            want = size(group)
            while len(pool) < want:
                counted = [*group.instance_states, *pool]
                zone, subnet_id = zones.next_subnet(group, zones.counts(group, counted))
                inst, = zones.launch_into(group, zone, subnet_id)
                group.instance_states.remove(inst)
                inst.lifecycle_state = "Warmed:Pending"
                state.instances[inst.instance.id] = InstanceRecord(group=group.name,
                                                                   deadline=now + state.scaled(launch_seconds))
                pool.append(inst)
                state.emit("instance_launched", inst.instance.id, group.name, state="Warmed:Pending")
            while len(pool) > want:
                inst = pool.pop()
                backend.ec2_backend.terminate_instances([inst.instance.id])
                state.instances.pop(inst.instance.id, None)
                state.emit("instance_terminated", inst.instance.id, group.name)


def all_members(state: LayerState, backend: Any) -> list[InstanceState]:
    return [s for (account, region, _), pool in state.warm_pools.items()
            if (account, region) == (backend.account_id, backend.region_name) for s in pool]


def describe_warm_pool(self: AutoScalingResponse) -> ActionResult:
    from . import asg_api  # asg_api imports autoscaling, which imports this module

    group = asg_api.require_group(self)
    pool = members(asg_api.require_state(), group) if group.warm_pool is not None else []
    return ActionResult({"WarmPoolConfiguration": group.warm_pool, "Instances": list(pool)})


seam.register(AutoScalingResponse, "describe_warm_pool", describe_warm_pool)
