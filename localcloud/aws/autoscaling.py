"""Auto Scaling group behaviour over time (A1-A6, A8, E3 membership) on top of moto's models.

moto launches instances straight into InService, re-registers every group instance (Standby included) with
the target groups on each capacity change, and may scale in a Standby instance. Here instead:
- capacity counts Pending / Pending:Wait / Pending:Proceed / InService instances, never Standby (A1, A5);
- launches go Pending -> InService after LAUNCH_SECONDS of AWS time, or wait in Pending:Wait for every
  launch lifecycle hook (A6), and only then join the group's target groups and Classic ELBs;
- instances leave the load balancers when they enter Standby, are detached or terminated (A1, A3, E2, E3),
  and terminating instances stay `Terminating` while their targets drain;
- suspended processes do not run (A8).
The request-level rules (validation, new actions, pagination) live in asg_api.py.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from . import activities, group_health, runtime, targets, warm, weights, zones
from . import moto_seam as seam
from .moto_seam import ASG_NAME_TAG, AutoScalingBackend, FakeAutoScalingGroup, InstanceState
from .state import HookWait, InstanceRecord, LayerState

log = logging.getLogger(__name__)

COUNTED = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")
# AWS time, scaled by LayerState.time_scale. (unverified) AWS publishes no figure for these; they are typical.
LAUNCH_SECONDS = 30.0        # Pending -> InService without hooks
PROCEED_SECONDS = 2.0        # Pending:Proceed -> InService after CompleteLifecycleAction CONTINUE
EXIT_STANDBY_SECONDS = 5.0   # Pending -> InService after ExitStandby
LAUNCH_HOOK = "autoscaling:EC2_INSTANCE_LAUNCHING"
# A12: tags propagated at launch reach the instance "eventually" (the seed's footnote 1); here after 10 AWS s.
TAG_PROPAGATION_SECONDS = 10.0


# -- records ---------------------------------------------------------------------------------------------

def record(state: LayerState, inst: InstanceState) -> InstanceRecord:
    rec = state.instances.get(inst.instance.id)
    if rec is None:
        rec = state.instances[inst.instance.id] = InstanceRecord(group=inst.auto_scaling_group_name)
    return rec


def remember_backend(state: LayerState, backend: AutoScalingBackend) -> None:
    if all(b is not backend for b in state.backends):
        state.backends.append(backend)


def suspended(group: FakeAutoScalingGroup, process: str) -> bool:
    return process in group._suspended_processes


def set_lifecycle(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState, new: str,
                  after_aws_seconds: float | None = None) -> None:
    previous = inst.lifecycle_state
    inst.lifecycle_state = new
    rec = record(state, inst)
    rec.deadline = None if after_aws_seconds is None else state.now() + state.scaled(after_aws_seconds)
    if previous != new:
        state.emit("instance_lifecycle_changed", inst.instance.id, group.name, state=new, previous=previous)
        activities.follow(state, inst.instance.id, new)  # A15


# -- load balancer membership ------------------------------------------------------------------------------

def _target_groups(group: FakeAutoScalingGroup) -> list[Any]:
    tgs = group.autoscaling_backend.elbv2_backend.target_groups
    return [tgs[arn] for arn in group.target_group_arns if arn in tgs]


def _classic_lbs(group: FakeAutoScalingGroup) -> list[Any]:
    elb = group.autoscaling_backend.elb_backend
    return [lb for lb in (elb.get_load_balancer(n) for n in group.load_balancer_names) if lb is not None]


def _registered_again(state: LayerState, instance_id: str) -> bool:
    """Whether a load balancer lists the instance as registered (not draining): E8, registered again while it
    drained for EnterStandby."""
    return any(target == instance_id and record["drain_until"] is None
               for (_, target), record in state.targets.items())


def join_lbs(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    """Register an InService instance with the group's load balancers; it starts `initial` (E1)."""
    rec = record(state, inst)
    if suspended(group, "AddToLoadBalancer"):
        # A8: (AWS user guide) instances launched while AddToLoadBalancer is suspended are not added later.
        rec.lb_skipped = True
        return
    if rec.ec2_terminated or inst.instance.state != "running":
        return
    iid = inst.instance.id
    for tg in _target_groups(group):
        if iid not in tg.targets:
            tg.register([{"Id": iid, "Port": tg.port}])
    for lb in _classic_lbs(group):
        if iid not in lb.instance_ids:
            group.autoscaling_backend.elb_backend.register_instances(lb.name, [iid], from_autoscaling=True)


def leave_lbs(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState,
              target_group_arns: list[str] | None = None, lb_names: list[str] | None = None) -> float:
    """Deregister from the group's load balancers (they drain, E2/E3); returns the longest drain (AWS s)."""
    iid = inst.instance.id
    longest = 0.0
    for tg in _target_groups(group):
        if (target_group_arns is None or tg.arn in target_group_arns) and iid in tg.targets:
            tg.deregister([{"Id": iid}])
            longest = max(longest, float(tg.attributes.get("deregistration_delay.timeout_seconds", 300)))
    elb = group.autoscaling_backend.elb_backend
    for lb in _classic_lbs(group):
        if (lb_names is None or lb.name in lb_names) and iid in lb.instance_ids:
            elb.deregister_instances(lb.name, [iid], from_autoscaling=iid in lb.instance_autoscaling_ids)
            longest = max(longest, targets.clb_draining_seconds(lb))
    return longest


# -- launching and terminating -----------------------------------------------------------------------------

def launch_hooks(group: FakeAutoScalingGroup) -> list[Any]:
    return [h for h in group.autoscaling_backend.lifecycle_hooks.values()
            if h.auto_scaling_group_name == group.name and h.lifecycle_transition == LAUNCH_HOOK]


def launch(state: LayerState, group: FakeAutoScalingGroup, count: int, rebalance: bool = False,
           zone: str | None = None) -> None:
    """Launch `count` instances, one at a time, each into the subnet of the group's least-used zone (A19),
    or of `zone`. A launch the faults make fail is a Failed activity and ends this round (A15)."""
    hooks = launch_hooks(group)
    grec = activities.group_record(state, group)
    counted = [s for s in group.instance_states if s.lifecycle_state in COUNTED]
    per_zone = zones.counts(group, counted)  # kept up to date below: one pass, not one per launch
    pending: dict[tuple[str, str | None], list[int]] = {}  # (zone, subnet) -> the `before` of each launch

    def flush() -> None:
        # One moto launch per zone for the instances decided so far (zones.launch_into: one reservation each).
        for (where, subnet_id), befores in pending.items():
            for inst, before in zip(zones.launch_into(group, where, subnet_id, len(befores)), befores):
                weights.mark(state, group, inst)  # A18
                _start(state, group, inst, hooks, rebalance, where, subnet_id, before)
        pending.clear()

    for before in range(len(counted), len(counted) + count):
        warmed = None if rebalance else warm.take(state, group)  # A17: a ready pool instance first
        if warmed is not None:
            where = zones.zone_of(group, warmed)
            _start(state, group, warmed, hooks, rebalance, where, warmed.instance.subnet_id, before, warmed=True)
            per_zone[where] = per_zone.get(where, 0) + 1
            continue
        if zone is None:
            # A15: after a capacity failure the group tries another zone first.
            where, subnet_id = zones.next_subnet(group, per_zone, avoid=grec.failed_zones)
        else:
            where, subnet_id = zone, dict(zones.subnets(group)).get(zone)
        if state.faults.vcpu_limit is not None:
            flush()  # the vCPU limit counts running instances: launch what was decided before checking it
        failure = activities.launch_failure(state, group, where)
        if failure is not None:
            flush()
            activities.record_failed_launch(state, group, where, subnet_id, failure, before, rebalance)
            return
        grec.failed_zones.discard(where)
        pending.setdefault((where, subnet_id), []).append(before)
        per_zone[where] = per_zone.get(where, 0) + 1
    flush()


def _start(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState, hooks: list[Any], rebalance: bool,
       where: str, subnet_id: str | None, before: int, warmed: bool = False) -> None:
    """A launched (or warm pool) instance enters the group: Pending, or Pending:Wait for its hooks (A6)."""
    rec = record(state, inst)
    rec.rebalance = rebalance
    if hooks:
        # A6: the instance boots while it waits; it joins no load balancer before CONTINUE.
        inst.lifecycle_state = "Pending:Wait"
        rec.hooks = {h.name: HookWait(token=str(uuid.uuid4()), default_result=h.default_result,
                                      timeout=float(h.heartbeat_timeout),
                                      deadline=state.now() + state.scaled(float(h.heartbeat_timeout)))
                     for h in hooks}
    else:
        inst.lifecycle_state = "Pending"
        rec.deadline = state.now() + state.scaled(LAUNCH_SECONDS)
    if not warmed:  # a warm pool instance has carried its tags since it entered the pool (A12)
        _hold_back_tags(state, group, inst)
    group_health.launched(state, inst)  # E5: its app's boot (apps.py)
    iid = inst.instance.id
    description = "Launching a new EC2 instance from warm pool" if warmed else "Launching a new EC2 instance"
    activities.add(state, group, "launch", iid, f"{description}: {iid}",
                   activities.launch_cause(group, before, rebalance),
                   activities.LAUNCH_STATUS[inst.lifecycle_state],
                   details={"Subnet ID": subnet_id or "", "Availability Zone": where})
    state.emit("instance_launched", iid, group.name, state=inst.lifecycle_state)


def _hold_back_tags(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    """A12: moto tags the instance at once; hold the propagated tags back so that a reader of its own
    instance tags at boot finds none, as it may on AWS."""
    ec2 = group.autoscaling_backend.ec2_backend
    propagated = dict(group.get_propagated_tags(), **{ASG_NAME_TAG: group.name})
    # Only the group's own tags: launch template TagSpecifications are applied by RunInstances itself.
    tags = {k: v for k, v in ec2.tags.get(inst.instance.id, {}).items() if propagated.get(k) == v}
    if tags:
        ec2.delete_tags([inst.instance.id], tags)
        rec = record(state, inst)
        rec.held_tags = tags
        rec.tags_due = state.now() + state.scaled(TAG_PROPAGATION_SECONDS)


def _release_tags(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    rec = record(state, inst)
    held, rec.held_tags, rec.tags_due = rec.held_tags, None, None
    if not held or rec.ec2_terminated:
        return
    ec2 = group.autoscaling_backend.ec2_backend
    existing = ec2.tags.get(inst.instance.id, {})
    # Tags someone set on the instance meanwhile were set after the launch: they win.
    missing = {k: v for k, v in held.items() if k not in existing}
    if missing:
        ec2.create_tags([inst.instance.id], missing)


def begin_terminate(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState,
                    cause: str | None = None, activity_id: str | None = None) -> None:
    """Terminating while the targets drain (E2), then Terminated (finish_terminate); an activity (A15)."""
    counted = len([s for s in group.instance_states if s.lifecycle_state in COUNTED])
    drain = leave_lbs(state, group, inst)
    set_lifecycle(state, group, inst, "Terminating", after_aws_seconds=drain)
    iid = inst.instance.id
    if cause is None:
        cause = activities.terminate_cause(group, inst.health_status == "Unhealthy", counted)
    activities.add(state, group, "terminate", iid, f"Terminating EC2 instance: {iid}", cause,
                   "WaitingForELBConnectionDraining" if drain > 0 else "InProgress", activity_id=activity_id)


def finish_terminate(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    group.instance_states = [s for s in group.instance_states if s is not inst]
    for activity in activities.open_activities(state, inst.instance.id, "terminate"):
        activity.set_status("Successful")  # A15
    rec = record(state, inst)
    if not rec.ec2_terminated:  # else EC2 TerminateInstances came first and emitted the event
        group.autoscaling_backend.ec2_backend.terminate_instances([inst.instance.id])
        rec.ec2_terminated = True
        state.emit("instance_terminated", inst.instance.id, group.name)


def reconcile(state: LayerState, group: FakeAutoScalingGroup) -> None:
    """Launch or terminate until the counted instances match DesiredCapacity (A5), unless suspended (A8);
    then even out the zones (A19)."""
    counted = [s for s in group.instance_states if s.lifecycle_state in COUNTED]
    # A19: an instance AZRebalance launched stays outside the desired capacity until its partner goes.
    extra = [s for s in counted if record(state, s).rebalance]
    # A18: sizes are in capacity units (an instance's weight; 1 without weights), and may overshoot desired.
    desired = group.desired_capacity or 0
    size = weights.units if weights.weighted(state, group) else len
    delta = desired - (size(counted) - size(extra))
    launch_due = state.now() >= activities.group_record(state, group).retry_at  # A15: retry after a delay
    if delta > 0 and not suspended(group, "Launch"):
        if launch_due:
            step = weights.weight_for(state, group, group.instance_type) or 1
            launch(state, group, -(-delta // step))
    elif delta < 0 and not suspended(group, "Terminate"):
        # A5: scale-in picks among InService/Pending instances only, never Standby; not protected ones (A14).
        candidates = [s for s in counted if not s.protected_from_scale_in and not record(state, s).rebalance]
        surplus = -delta
        for inst in zones.victims(group, candidates, -delta):  # at most one victim per surplus unit
            if weights.weight(inst) <= surplus:  # never below desired
                surplus -= weights.weight(inst)
                begin_terminate(state, group, inst)
    elif delta == 0:
        _rebalance(state, group, counted, extra)


def _rebalance(state: LayerState, group: FakeAutoScalingGroup, counted: list[InstanceState],
               extra: list[InstanceState]) -> None:
    """A19 AZRebalance: launch in the smallest zone first; once that instance is InService, terminate one in
    the largest. (unverified) one instance at a time; protected instances are not chosen."""
    if any(suspended(group, p) for p in ("AZRebalance", "Launch", "Terminate")):
        return
    for inst in extra:
        if inst.lifecycle_state != "InService":
            return  # still launching: nothing is terminated before its replacement serves
        record(state, inst).rebalance = False
        members = [s for s in counted if s is not inst]
        largest = max(zones.counts(group, members).items(), key=lambda kv: kv[1])[0]
        pool = [s for s in members if zones.zone_of(group, s) == largest and s.lifecycle_state == "InService"
                and not s.protected_from_scale_in]
        if pool:
            begin_terminate(state, group, pool[0])
        return
    uneven = zones.imbalance(group, counted)
    if uneven is not None and state.now() >= activities.group_record(state, group).retry_at:
        launch(state, group, 1, rebalance=True, zone=uneven[0])


def become_in_service(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState) -> None:
    set_lifecycle(state, group, inst, "InService")
    if record(state, inst).ec2_terminated:
        # A4: a Standby instance terminated behind the group's back is found unhealthy once back in service.
        inst.health_status = "Unhealthy"
        return
    join_lbs(state, group, inst)


def apply_hook_result(state: LayerState, group: FakeAutoScalingGroup, inst: InstanceState, hook: str,
                      result: str, timed_out: bool = False) -> None:
    """A6: CONTINUE clears one hook (the last one lets the instance proceed); ABANDON terminates it. A hook that
    timed out is worded as AWS words it ("Heartbeat Timeout"), not as an ABANDON someone sent."""
    rec = record(state, inst)
    waiting = rec.hooks.pop(hook, None)
    waiting_token = waiting.token if waiting else ""
    if result == "ABANDON":
        rec.hooks = {}
        for activity in activities.open_activities(state, inst.instance.id, "launch"):
            why = "Heartbeat Timeout" if timed_out else "Lifecycle Action Completed with ABANDON Result"
            activity.set_status("Cancelled", f"Instance failed to complete user's Lifecycle Action: Lifecycle "
                                             f"Action with token {waiting_token} was abandoned: {why}")
        begin_terminate(state, group, inst)
    elif not rec.hooks:
        set_lifecycle(state, group, inst, "Pending:Proceed", after_aws_seconds=PROCEED_SECONDS)


# -- the clock ---------------------------------------------------------------------------------------------

def tick(state: LayerState) -> None:
    now = state.now()
    for backend in list(state.backends):
        for group in list(backend.autoscaling_groups.values()):
            group_health.check(state, group)  # A20: HealthCheckType ELB marks unhealthy targets Unhealthy
            _tick_group(state, group, now)
            _run_scheduled_actions(state, backend, group)
            reconcile(state, group)


def _tick_group(state: LayerState, group: FakeAutoScalingGroup, now: float) -> None:
    for inst in list(group.instance_states):
        rec = record(state, inst)
        if rec.held_tags is not None and now >= rec.tags_due:
            _release_tags(state, group, inst)
        due = rec.deadline is not None and now >= rec.deadline
        life = inst.lifecycle_state
        if life in ("Pending", "Pending:Proceed") and due:
            become_in_service(state, group, inst)
        elif life == "Pending:Wait":
            for name, hook in list(rec.hooks.items()):
                if now >= hook.deadline and inst.lifecycle_state == "Pending:Wait":
                    log.info("lifecycle hook %s timed out for %s: %s", name, inst.instance.id, hook.default_result)
                    apply_hook_result(state, group, inst, name, hook.default_result, timed_out=True)
        elif life == "EnteringStandby" and due:
            if state.faults.reregistered_standby_stuck and _registered_again(state, inst.instance.id):
                continue  # E8's pessimistic reading (a fault): Auto Scaling never sees the drain end
            set_lifecycle(state, group, inst, "Standby")
        elif life == "Terminating" and due:
            finish_terminate(state, group, inst)
        elif life == "InService" and inst.health_status == "Unhealthy" and not (
                suspended(group, "ReplaceUnhealthy") or suspended(group, "HealthCheck")):
            begin_terminate(state, group, inst)


def _parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _run_scheduled_actions(state: LayerState, backend: AutoScalingBackend, group: FakeAutoScalingGroup) -> None:
    """One-time scheduled actions run at StartTime (wall clock); recurring ones are not emulated."""
    now = datetime.datetime.now(datetime.timezone.utc)
    for (group_name, name), action in state.scheduled_actions.in_backend(backend):
        if group_name != group.name or action.recurrence:
            continue
        start = _parse_time(action.start_time)
        key = (group_name, name, str(action.start_time))
        if start is None or start > now or key in state.scheduled_done:
            continue
        state.scheduled_done.add(key)
        if suspended(group, "ScheduledActions"):
            # A8: (AWS user guide) actions that came due while suspended are skipped, not run on resume.
            continue
        if action.min_size is not None:
            group.min_size = action.min_size
        if action.max_size is not None:
            group.max_size = action.max_size
        desired = action.desired_capacity if action.desired_capacity is not None else group.desired_capacity
        group.desired_capacity = max(group.min_size, min(group.max_size, desired))
        # A one-time scheduled action is deleted once it has run (Auto Scaling user guide).
        state.scheduled_actions.remove(backend, group_name, name)


# -- moto replacements -------------------------------------------------------------------------------------

@seam.replaces(FakeAutoScalingGroup, "set_desired_capacity")
def _group_set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
    state = runtime.active()
    if state is None:
        return seam.original(FakeAutoScalingGroup, "set_desired_capacity")(self, new_capacity)
    self.desired_capacity = self.min_size if new_capacity is None else new_capacity
    remember_backend(state, self.autoscaling_backend)
    reconcile(state, self)
    return None


@seam.replaces(AutoScalingBackend, "update_attached_elbs")
@seam.replaces(AutoScalingBackend, "update_attached_target_groups")
def _sync_lbs(self: AutoScalingBackend, group_name: str) -> None:
    """Replaces moto's update_attached_elbs / _target_groups, which re-register Standby instances too."""
    state = runtime.active()
    group = self.autoscaling_groups.get(group_name)
    if state is None or group is None:
        return
    for inst in group.instance_states:
        if inst.lifecycle_state == "InService" and not record(state, inst).lb_skipped:
            join_lbs(state, group, inst)


@seam.replaces(AutoScalingBackend, "detach_load_balancer_target_groups")
def _detach_target_groups(self: AutoScalingBackend, group_name: str, target_group_arns: list[str]) -> None:
    group = self.autoscaling_groups[group_name]
    state = runtime.active()
    if state is not None:
        for inst in group.instance_states:
            leave_lbs(state, group, inst, target_group_arns=target_group_arns, lb_names=[])
    group.target_group_arns = [a for a in group.target_group_arns if a not in target_group_arns]


@seam.replaces(AutoScalingBackend, "detach_load_balancers")
def _detach_classic_lbs(self: AutoScalingBackend, group_name: str, load_balancer_names: list[str]) -> None:
    group = self.autoscaling_groups[group_name]
    state = runtime.active()
    if state is not None:
        for inst in group.instance_states:
            leave_lbs(state, group, inst, target_group_arns=[], lb_names=load_balancer_names)
    group.load_balancer_names = [n for n in group.load_balancer_names if n not in load_balancer_names]


@seam.replaces(AutoScalingBackend, "notify_terminate_instances")
def _notify_terminate_instances(self: AutoScalingBackend, instance_ids: list[str]) -> None:
    """EC2 TerminateInstances on group instances (A4)."""
    state = runtime.active()
    if state is None:
        return seam.original(AutoScalingBackend, "notify_terminate_instances")(self, instance_ids)
    for group in self.autoscaling_groups.values():
        for inst in list(group.instance_states):
            if inst.instance.id not in instance_ids:
                continue
            rec = record(state, inst)
            rec.ec2_terminated = True
            state.emit("instance_terminated", inst.instance.id, group.name)
            if inst.lifecycle_state in ("Standby", "EnteringStandby"):
                continue  # A4: Standby gets no health checks; the group goes on listing it, "Healthy".
            if inst.lifecycle_state != "Terminating":
                inst.health_status = "Unhealthy"  # found by the group's health check, replaced on the next tick
                leave_lbs(state, group, inst)
    return None

