"""Load balancer target health that moves with time (E1, E2, E3, E5), on top of moto's ELBv2 and Classic ELB.

A registered target is checked every HealthCheckIntervalSeconds from its registration. It starts `initial`;
HealthyThresholdCount consecutive passing checks make it `healthy` (E1), UnhealthyThresholdCount consecutive
failing ones `unhealthy` (E5), and from either, the other threshold turns it back. A check passes when the
instance's app answers then (apps.py; by default always). After deregistration it is `draining` for the
deregistration delay, then gone (E2). A test or another process may force `healthy` / `unhealthy` per instance
(the local fleet feeds real HTTP checks in that way); forced health wins over the checks.
Classic ELBs answer InService / OutOfService, with connection draining in the part of E2 (E3).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from . import cross_zone, runtime
from . import moto_seam as seam
from .moto_seam import ActionResult, ELBBackend, ELBResponse, ELBv2Backend, FakeHealthStatus, FakeTargetGroup
from .moto_seam import ELBv2ValidationError as ValidationError
from .state import LayerState

log = logging.getLogger(__name__)

CLB_PREFIX = "elb:"
# Classic ELB health check defaults (Elastic Load Balancing user guide, "Configure health checks").
CLB_DEFAULT_INTERVAL = 30
CLB_DEFAULT_HEALTHY_THRESHOLD = 10
CLB_DEFAULT_UNHEALTHY_THRESHOLD = 2
CLB_DEFAULT_DRAINING_TIMEOUT = 300


def _group_of(state: LayerState, instance_id: str) -> str | None:
    rec = state.instances.get(instance_id)
    return rec.group if rec is not None else None


def _note_registered(state: LayerState, lb_key: str, target_id: str, port: Any, **extra: Any) -> None:
    record = state.targets.get((lb_key, target_id))
    if record is not None and record["drain_until"] is None:
        return  # registering a registered target changes nothing (E8, unverified: AWS documents no effect)
    # E8: a draining target registered again is registered anew, `initial`, and needs its health-check run; the
    # drain it was in is over for the load balancer (the Auto Scaling instance keeps its own EnteringStandby, A1).
    now = state.now()
    # E1/E5: "status" after the checks counted so far; "checked_at" is the last check counted (the first
    # comes one interval after registration); "run" consecutive checks ended with result "run_up".
    state.targets[(lb_key, target_id)] = {"registered_at": now, "drain_until": None, "port": port,
                                          "status": "initial", "checked_at": now, "checks": 0,
                                          "run": 0, "run_up": None}
    state.emit("target_registered", target_id, _group_of(state, target_id), port=_int_or_none(port), **extra)


def _note_deregistered(state: LayerState, lb_key: str, target_id: str, delay_aws: float, **extra: Any) -> None:
    record = state.targets.get((lb_key, target_id))
    if record is None or record["drain_until"] is not None:
        return
    record["drain_until"] = state.now() + state.scaled(delay_aws)
    state.emit("target_deregistered", target_id, _group_of(state, target_id), port=_int_or_none(record["port"]),
               **extra)


def _int_or_none(port: Any) -> int | None:
    try:
        return int(port)
    except (TypeError, ValueError):
        return None


def _lb_extra(lb_key: str) -> dict[str, Any]:
    if lb_key.startswith(CLB_PREFIX):
        return {"load_balancer": lb_key[len(CLB_PREFIX):]}
    return {"target_group_arn": lb_key}


def expire_draining(state: LayerState) -> None:
    """E2: a draining target disappears once the deregistration delay is over."""
    now = state.now()
    for (lb_key, target_id), record in list(state.targets.items()):
        if record["drain_until"] is not None and now >= record["drain_until"]:
            del state.targets[(lb_key, target_id)]
            state.emit("target_removed", target_id, _group_of(state, target_id), port=_int_or_none(record["port"]),
                       **_lb_extra(lb_key))


def health_of(state: LayerState, lb_key: str, target_id: str, interval_aws: float, threshold: int,
              unhealthy_threshold: int = 2) -> str | None:
    """'initial' | 'healthy' | 'unhealthy' | 'draining', or None when the target is not registered."""
    record = state.targets.get((lb_key, target_id))
    if record is None:
        return None
    if record["drain_until"] is not None:
        return "draining" if state.now() < record["drain_until"] else None
    _count_checks(state, record, target_id, state.health_check_interval(interval_aws), threshold,
                  unhealthy_threshold)
    forced = state.forced(target_id, lb_key)
    if forced is not None:
        return forced
    return record["status"]


def _count_checks(state: LayerState, record: dict[str, Any], target_id: str, interval: float, healthy_n: int,
                  unhealthy_n: int) -> None:
    """Count the checks due since the last one counted (E1, E5).

    Between two changes of the app's answer (apps.py) every check has the same result, so a whole run of
    them is counted at once: the cost is per change, not per check, however far a fake clock jumps.
    """
    now = state.now()
    apps = state.apps
    if interval <= 0:  # health_interval 0: checks without pause, the status follows the app at once,
        up = apps.answers(target_id, now + 1e-9)  # a change made at this very instant included
        record.update(status="healthy" if up else "unhealthy", checked_at=now, checks=record["checks"] + 1)
        return
    eps = 1e-9 * max(1.0, interval)
    while record["checked_at"] + interval <= now + eps:
        first = record["checked_at"] + interval
        up = apps.answers(target_id, first)
        change = apps.next_change(target_id, first)
        count = int((now - first + eps) // interval) + 1
        if change != float("inf"):
            count = min(count, int((change - first + eps) // interval) + 1)
        record["run"] = record["run"] + count if record["run_up"] == up else count
        record["run_up"] = up
        record["checks"] += count
        record["checked_at"] = first + (count - 1) * interval
        if up and record["run"] >= healthy_n:
            record["status"] = "healthy"
        elif not up and record["run"] >= unhealthy_n:
            record["status"] = "unhealthy"


def reason_of(health: str, record: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """E5: every state but `healthy` carries a reason code (ELBv2 TargetHealth.Reason)."""
    if health == "initial":
        if record is not None and record.get("checks"):
            return "Elb.InitialHealthChecking", "Initial health checks in progress"
        return "Elb.RegistrationInProgress", "Target registration is in progress"
    return {
        "unhealthy": ("Target.FailedHealthChecks", "Health checks failed"),
        "draining": ("Target.DeregistrationInProgress", "Target deregistration is in progress"),
        "unavailable": ("Target.HealthCheckDisabled", "Health checks are disabled"),
        "healthy": (None, None),
    }[health]


# -- ELBv2 (target groups) ---------------------------------------------------------------------------------

@seam.replaces(FakeTargetGroup, "register")
def _tg_register(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
    seam.original(FakeTargetGroup, "register")(self, targets)
    state = runtime.active()
    if state is None:
        return
    for target in targets:
        port = self.targets[target["Id"]]["Port"]
        _note_registered(state, self.arn, target["Id"], port, target_group_arn=self.arn)


def _tg_delay(tg: FakeTargetGroup) -> float:
    return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))


@seam.replaces(FakeTargetGroup, "deregister")
def _tg_deregister(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
    seam.original(FakeTargetGroup, "deregister")(self, targets)
    state = runtime.active()
    if state is None:
        return
    for target in targets:
        _note_deregistered(state, self.arn, target["Id"], _tg_delay(self), target_group_arn=self.arn)


@seam.replaces(FakeTargetGroup, "deregister_terminated_instances")
def _tg_deregister_terminated(self: FakeTargetGroup, instance_ids: list[str]) -> None:
    # moto parks terminated targets as `draining` forever; ELB really drains them for the delay (E2).
    registered = [{"Id": i} for i in instance_ids if i in self.targets]
    if registered:
        _tg_deregister(self, registered)


@seam.replaces(FakeTargetGroup, "health_for")
def _tg_health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> FakeHealthStatus:
    state = runtime.active()
    if state is None:
        return seam.original(FakeTargetGroup, "health_for")(self, target, ec2_backend)
    record = state.targets.get((self.arn, target["Id"]))
    health = tg_health(state, self, target["Id"])
    if health is None:
        if record is not None:
            expire_draining(state)
        # Not registered (any more): moto answers `unused` with Target.NotRegistered.
        return seam.original(FakeTargetGroup, "health_for")(self, target, ec2_backend)
    reason, description = reason_of(health, record)
    return FakeHealthStatus(target["Id"], record["port"], self.health_check_port, health, reason, description)


def tg_health(state: LayerState, tg: FakeTargetGroup, target_id: str) -> str | None:
    """One target's state in one target group, as DescribeTargetHealth reports it; None: not registered."""
    health = health_of(state, tg.arn, target_id, float(tg.health_check_interval_seconds),
                       int(tg.healthy_threshold_count), int(tg.unhealthy_threshold_count))
    if health in ("initial", "healthy", "unhealthy") and not tg.health_check_enabled:
        # E5: health checks disabled: `unavailable` (AWS allows that only for Lambda targets; moto and the
        # emulation do not refuse it for instances).
        return "unavailable"
    return health


@seam.replaces(ELBv2Backend, "describe_target_health")
def _describe_target_health(self: ELBv2Backend, target_group_arn: str,
                            targets: list[dict[str, Any]]) -> list[FakeHealthStatus]:
    state = runtime.active()
    tg = self.target_groups.get(target_group_arn)
    if state is not None and tg is not None and not targets:
        # E2: DescribeTargetHealth lists draining targets too; moto forgets them at deregistration.
        expire_draining(state)
        targets = list(tg.targets.values())
        for (lb_key, target_id), record in state.targets.items():
            if lb_key == tg.arn and record["drain_until"] is not None and target_id not in tg.targets:
                targets.append({"Id": target_id, "Port": record["port"]})
    return seam.original(ELBv2Backend, "describe_target_health")(self, target_group_arn, targets)


# E1: interval 5-300 s, thresholds 2-10; E2: deregistration delay 0-3600 s. botocore checks the lower bounds
# client-side; moto checks no upper bound and refuses 3600 (off by one).
RANGES = {"HealthCheckIntervalSeconds": (5, 300), "HealthyThresholdCount": (2, 10),
          "UnhealthyThresholdCount": (2, 10)}


def _check_health_check(**values: Any) -> None:
    for name, value in values.items():
        low, high = RANGES[name]
        if value is not None and not low <= int(value) <= high:
            raise ValidationError(f"{name} must be between {low} and {high}, got {value}")


@seam.replaces(ELBv2Backend, "create_target_group")
def _create_target_group(self: ELBv2Backend, name: str, **kwargs: Any) -> FakeTargetGroup:
    _check_health_check(HealthCheckIntervalSeconds=kwargs.get("healthcheck_interval_seconds"),
                        HealthyThresholdCount=kwargs.get("healthy_threshold_count"),
                        UnhealthyThresholdCount=kwargs.get("unhealthy_threshold_count"))
    if isinstance(kwargs.get("healthcheck_enabled"), bool):
        # moto's request parser hands a boolean where moto's model expects "true"/"false", and moto then
        # ignores HealthCheckEnabled=false (E5's `unavailable` needs it).
        kwargs["healthcheck_enabled"] = str(kwargs["healthcheck_enabled"]).lower()
    return seam.original(ELBv2Backend, "create_target_group")(self, name, **kwargs)


@seam.replaces(ELBv2Backend, "modify_target_group")
def _modify_target_group(self: ELBv2Backend, arn: str, *args: Any, **kwargs: Any) -> FakeTargetGroup:
    original = seam.original(ELBv2Backend, "modify_target_group")
    call = inspect.signature(original).bind(self, arn, *args, **kwargs).arguments  # moto passes them positionally
    _check_health_check(HealthCheckIntervalSeconds=call.get("health_check_interval"),
                        HealthyThresholdCount=call.get("healthy_threshold_count"),
                        UnhealthyThresholdCount=call.get("unhealthy_threshold_count"))
    return original(self, arn, *args, **kwargs)


@seam.replaces(ELBv2Backend, "modify_target_group_attributes")
def _modify_target_group_attributes(self: ELBv2Backend, target_group_arn: str, attributes: dict[str, Any]) -> None:
    cross_zone.check_target_group_attributes(attributes)  # E6
    key = "deregistration_delay.timeout_seconds"
    rest = dict(attributes)
    delay = rest.pop(key, None)
    if delay is not None:
        try:
            valid = 0 <= int(delay) <= 3600
        except ValueError:
            valid = False
        if not valid:
            raise ValidationError(f"'{key}' value '{delay}' must be between '0-3600' inclusive")
    seam.original(ELBv2Backend, "modify_target_group_attributes")(self, target_group_arn, rest)
    if delay is not None:
        self.target_groups[target_group_arn].attributes[key] = delay


# -- Classic ELB (E3) --------------------------------------------------------------------------------------

def _clb_port(backend: ELBBackend, name: str) -> int | None:
    lb = backend.get_load_balancer(name)
    if lb is not None and lb.listeners:
        return _int_or_none(lb.listeners[0].instance_port)
    return None


def clb_draining_seconds(lb: Any) -> float:
    """E3: the Classic ELB's connection-draining timeout in AWS seconds; 0 when draining is off.

    moto keeps the attribute as the request spelled it: lowercase keys by default ({"enabled": False}), but
    ModifyLoadBalancerAttributes stores {"Enabled": True, "Timeout": 30} and adds a lowercase default
    "timeout": 300 beside it. The request's own spelling wins.
    """
    draining = lb.attributes.get("connection_draining", {}) if lb is not None else {}
    enabled = draining.get("Enabled", draining.get("enabled", False))
    if str(enabled).lower() != "true":
        return 0.0
    return float(draining.get("Timeout", draining.get("timeout", CLB_DEFAULT_DRAINING_TIMEOUT)))


@seam.replaces(ELBBackend, "register_instances")
def _clb_register(self: ELBBackend, load_balancer_name: str, instance_ids: Any,
                  from_autoscaling: bool = False) -> Any:
    instance_ids = list(instance_ids)
    lb = self.get_load_balancer(load_balancer_name)
    already = set(lb.instance_ids) if lb is not None else set()
    result = seam.original(ELBBackend, "register_instances")(
        self, load_balancer_name, [i for i in instance_ids if i not in already], from_autoscaling)
    state = runtime.active()
    if state is not None:
        for instance_id in instance_ids:
            _note_registered(state, CLB_PREFIX + load_balancer_name, instance_id,
                             _clb_port(self, load_balancer_name), load_balancer=load_balancer_name)
    return result


@seam.replaces(ELBBackend, "deregister_instances")
def _clb_deregister(self: ELBBackend, load_balancer_name: str, instance_ids: Any,
                    from_autoscaling: bool = False) -> Any:
    instance_ids = list(instance_ids)
    result = seam.original(ELBBackend, "deregister_instances")(self, load_balancer_name, instance_ids,
                                                                   from_autoscaling)
    state = runtime.active()
    if state is not None:
        delay = clb_draining_seconds(self.get_load_balancer(load_balancer_name))
        for instance_id in instance_ids:
            _note_deregistered(state, CLB_PREFIX + load_balancer_name, instance_id, delay,
                               load_balancer=load_balancer_name)
    return result


def clb_health(state: LayerState, lb: Any, instance_id: str, name: str | None = None) -> str | None:
    """One instance's state in a Classic ELB ('initial' | 'healthy' | 'unhealthy' | 'draining' | None)."""
    check = lb.health_check if lb is not None else None
    interval = float(check.interval) if check is not None else CLB_DEFAULT_INTERVAL
    threshold = int(check.healthy_threshold) if check is not None else CLB_DEFAULT_HEALTHY_THRESHOLD
    unhealthy_threshold = int(check.unhealthy_threshold) if check is not None else CLB_DEFAULT_UNHEALTHY_THRESHOLD
    return health_of(state, CLB_PREFIX + (name or lb.name), instance_id, interval, threshold, unhealthy_threshold)


def _clb_instance_states(backend: ELBBackend, state: LayerState, name: str,
                         requested: list[str]) -> list[dict[str, str]]:
    lb = backend.get_load_balancer(name)
    key = CLB_PREFIX + name
    expire_draining(state)
    ids = requested or [tid for (k, tid) in state.targets if k == key] + [
        i for i in (lb.instance_ids if lb is not None else []) if (key, i) not in state.targets]
    out = []
    for instance_id in ids:
        health = clb_health(state, lb, instance_id, name)
        if health == "healthy":
            out.append({"InstanceId": instance_id, "State": "InService", "ReasonCode": "N/A", "Description": "N/A"})
        elif health == "draining":
            # (unverified) AWS keeps a draining instance InService with this description until the timeout.
            out.append({"InstanceId": instance_id, "State": "InService", "ReasonCode": "N/A",
                        "Description": "Instance deregistration currently in progress."})
        elif health == "initial":
            out.append({"InstanceId": instance_id, "State": "OutOfService", "ReasonCode": "ELB",
                        "Description": "Instance registration is still in progress."})
        elif health == "unhealthy":
            out.append({"InstanceId": instance_id, "State": "OutOfService", "ReasonCode": "Instance",
                        "Description": "Instance has failed at least the UnhealthyThreshold number of health checks "
                                       "consecutively."})
        elif lb is not None and instance_id in lb.instance_ids:
            out.append({"InstanceId": instance_id, "State": "InService", "ReasonCode": "N/A", "Description": "N/A"})
        else:
            out.append({"InstanceId": instance_id, "State": "Unknown", "ReasonCode": "N/A", "Description": "N/A"})
    return out


@seam.replaces(ELBResponse, "describe_instance_health")
def _clb_describe_instance_health_response(self: ELBResponse) -> ActionResult:
    state = runtime.active()
    if state is None:
        return seam.original(ELBResponse, "describe_instance_health")(self)
    name = self._get_param("LoadBalancerName")
    requested = [i["InstanceId"] for i in self._get_param("Instances", [])]
    # moto raises LoadBalancerNotFound for an unknown name; keep its error.
    self.elb_backend.describe_instance_health(name, [])
    return ActionResult({"InstanceStates": _clb_instance_states(self.elb_backend, state, name, requested)})

