"""The group's view of load-balancer health (A20) and the app timelines of new instances (E5).

With `HealthCheckType` ELB a group marks an InService instance `Unhealthy` once one of its load balancers
reports it unhealthy after `HealthCheckGracePeriod`, and replaces it: terminate (the targets drain), then
launch a new one (autoscaling.py's tick does both for every `Unhealthy` InService instance). With EC2, the
default, the group never looks at the load balancers.
autoscaling.py calls `launched` for every instance it launches and `check` once per group per tick.
"""

from __future__ import annotations

import logging

from . import targets
from .moto_seam import FakeAutoScalingGroup, InstanceState
from .state import LayerState

log = logging.getLogger(__name__)


def launched(state: LayerState, inst: InstanceState) -> None:
    """E5: start the app timeline of a new instance (apps.py: boot delay or broken app, when a test asked)."""
    apps = state.apps
    apps.launched(inst.instance.id, state.now(), state.scaled(apps.boot_seconds))


def _grace_over(state: LayerState, group: FakeAutoScalingGroup, registered_at: float) -> bool:
    # A20: the grace period runs from InService, which is when the group registers the instance (A6: after
    # CONTINUE with a launch hook). (unverified) After ExitStandby it runs again from the new registration.
    grace = float(group.health_check_grace_period or 0)  # 0: AWS's default for groups made through the API
    return state.now() - registered_at >= state.scaled(grace)


def elb_unhealthy(state: LayerState, group: FakeAutoScalingGroup, instance_id: str) -> str | None:
    """The first of the group's load balancers that reports `instance_id` unhealthy after the grace period."""
    backend = group.autoscaling_backend
    tgs = backend.elbv2_backend.target_groups
    for arn in group.target_group_arns:
        tg = tgs.get(arn)
        record = state.targets.get((arn, instance_id))
        if tg is None or record is None:
            continue
        if targets.tg_health(state, tg, instance_id) == "unhealthy" and _grace_over(state, group,
                                                                                  record["registered_at"]):
            return tg.name
    for name in group.load_balancer_names:
        lb = backend.elb_backend.get_load_balancer(name)
        key = targets.CLB_PREFIX + name
        record = state.targets.get((key, instance_id))
        if lb is None or record is None:
            continue
        if targets.clb_health(state, lb, instance_id) == "unhealthy" and _grace_over(state, group,
                                                                                   record["registered_at"]):
            return name
    return None


def check(state: LayerState, group: FakeAutoScalingGroup) -> None:
    """A20: with HealthCheckType ELB, mark InService instances the load balancers find unhealthy `Unhealthy`."""
    if str(group.health_check_type).upper() != "ELB" or "HealthCheck" in group._suspended_processes:
        return  # A8: a suspended HealthCheck process marks nothing
    for inst in group.instance_states:
        if inst.lifecycle_state != "InService" or inst.health_status == "Unhealthy":
            continue
        lb = elb_unhealthy(state, group, inst.instance.id)
        if lb is not None:
            log.info("A20: %s of %s is unhealthy in %s after the grace period: replacing it",
                     inst.instance.id, group.name, lb)
            inst.health_status = "Unhealthy"
