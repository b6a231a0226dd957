"""Auto Scaling request rules: validation (A1-A3, A5, A11, A12), standby/detach/terminate, lifecycle actions (A6).

Each replaced AutoScalingResponse method reads the request the way moto does, refuses what AWS refuses with
the AWS error code (never an HTML 500 page, A11), and then changes the models through autoscaling.py.
"""

from __future__ import annotations

from typing import Any, Callable

from . import activities as scaling
from . import autoscaling as model
from . import moto_seam as seam
from . import runtime, weights
from .errors import NotStarted
from .moto_seam import (
    ASG_NAME_TAG,
    ActionResult,
    AutoscalingClientError,
    AutoScalingResponse,
    DetachInstanceActivity,
    EmptyResult,
    EnterStandbyActivity,
    ExitStandbyActivity,
    FakeAutoScalingGroup,
    InstanceState,
    ResourceContentionError,
    TerminateInstanceActivity,
    ValidationError,
)
from .state import GroupRecord, LayerState

MAX_INSTANCE_IDS = 20      # A1, A2, A3: at most 20 instance IDs per call
MAX_PROTECTION_IDS = 50    # A14: SetInstanceProtection takes at most 50 instance IDs
MAX_TAGS = 50              # A12
HEARTBEAT_RANGE = (30, 7200)  # A6


class ResourceInUse(AutoscalingClientError):
    code = "ResourceInUse"


class AlreadyExists(AutoscalingClientError):
    code = "AlreadyExists"


def require_state() -> LayerState:
    """The running EmulatedAWS's layer state; the replaced actions need one (moto's classes stay replaced)."""
    state = runtime.active()
    if state is None:
        raise NotStarted("the fidelity layer answers Auto Scaling actions only while an EmulatedAWS runs")
    return state


def require_group(resp: AutoScalingResponse, name: str | None = None) -> FakeAutoScalingGroup:
    """The group the request names (or `name`). A11: an unknown group is a ValidationError, as AWS answers,
    not moto's KeyError (HTTP 500)."""
    name = name if name is not None else resp._get_param("AutoScalingGroupName")
    group = resp.autoscaling_backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
    model.remember_backend(require_state(), resp.autoscaling_backend)
    return group


def _instances(resp: AutoScalingResponse, group: FakeAutoScalingGroup, allowed: tuple[str, ...]) -> list[InstanceState]:
    ids = resp._get_param("InstanceIds", []) or []
    if len(ids) > MAX_INSTANCE_IDS:
        raise ValidationError(f"The number of instance ids that may be passed in is limited to {MAX_INSTANCE_IDS}")
    if not ids:
        raise ValidationError("InstanceIds must contain at least one instance id")
    by_id = {s.instance.id: s for s in group.instance_states}
    found = []
    for iid in ids:
        inst = by_id.get(iid)
        if inst is None:
            raise ValidationError(f"The instance {iid} is not part of Auto Scaling group {group.name}.")
        if inst.lifecycle_state not in allowed:
            raise ValidationError(f"The instance {iid} is not in {' or '.join(allowed)}.")
        found.append(inst)
    return found


def _sizes(group: FakeAutoScalingGroup, verb: str, count: int) -> ValidationError:
    return ValidationError(
        f"AutoScalingGroup {group.name} has min-size={group.min_size}, max-size={group.max_size}, and "
        f"desired-size={group.desired_capacity}. To {verb} {count} instances, please update the "
        f"AutoScalingGroup sizes appropriately.")


def check_bounds(min_size: int, max_size: int, desired: int | None) -> None:
    if min_size > max_size:
        raise ValidationError(f"Max bound, {max_size}, must be greater than or equal to min bound, {min_size}")
    if desired is not None and not min_size <= desired <= max_size:
        raise ValidationError(f"Desired capacity:{desired} must be between the specified min size:{min_size} "
                              f"and max size:{max_size}")


def check_tags(tags: list[dict[str, Any]], existing: int = 0) -> None:
    """A12: at most 50 tags a group, key <= 128, value <= 256 characters, `aws:` reserved."""
    if existing + len(tags) > MAX_TAGS:
        raise ValidationError(f"The number of tags for an Auto Scaling group cannot exceed {MAX_TAGS}")
    for tag in tags:
        key, value = str(tag.get("Key", "")), str(tag.get("Value", "") or "")
        if not key or len(key) > 128:
            raise ValidationError(f"Tag key must be 1-128 characters: {key[:40]!r}")
        if len(value) > 256:
            raise ValidationError(f"Tag value for key {key!r} must be at most 256 characters")
        if key.lower().startswith("aws:"):
            raise ValidationError(f"Tag keys starting with 'aws:' are reserved for AWS use: {key!r}")


# -- capacity (A5) -----------------------------------------------------------------------------------------

def set_desired_capacity(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    desired = self._get_int_param("DesiredCapacity")
    if desired > group.max_size:
        raise ValidationError(f"New SetDesiredCapacity value {desired} is above max value {group.max_size} "
                              f"for the AutoScalingGroup.")
    if desired < group.min_size:
        raise ValidationError(f"New SetDesiredCapacity value {desired} is below min value {group.min_size} "
                              f"for the AutoScalingGroup.")
    self.autoscaling_backend.set_desired_capacity(group.name, desired)
    return EmptyResult()


def update_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    min_size = self._get_int_param("MinSize")
    max_size = self._get_int_param("MaxSize")
    desired = self._get_int_param("DesiredCapacity")
    new_min = group.min_size if min_size is None else min_size
    new_max = group.max_size if max_size is None else max_size
    check_bounds(new_min, new_max, desired)
    capacity_type = _capacity_type(self)
    if desired is None and not new_min <= group.desired_capacity <= new_max:
        # AWS: a new MinSize/MaxSize that excludes the current size implies SetDesiredCapacity to that bound.
        desired = max(new_min, min(new_max, group.desired_capacity))
    self.autoscaling_backend.update_auto_scaling_group(
        name=group.name,
        availability_zones=self._get_param("AvailabilityZones", []),
        desired_capacity=desired, max_size=new_max, min_size=new_min,
        launch_config_name=self._get_param("LaunchConfigurationName"),
        launch_template=self._get_param("LaunchTemplate", {}),
        vpc_zone_identifier=self._get_param("VPCZoneIdentifier"),
        health_check_period=self._get_int_param("HealthCheckGracePeriod"),
        health_check_type=self._get_param("HealthCheckType"),
        new_instances_protected_from_scale_in=self._get_bool_param("NewInstancesProtectedFromScaleIn", None),
        mixed_instances_policy=self._get_param("MixedInstancesPolicy"),
    )
    if capacity_type is not None:  # A18
        scaling.group_record(require_state(), group).desired_capacity_type = capacity_type
        group.desired_capacity_type = capacity_type
        model.reconcile(require_state(), group)
    return EmptyResult()


def create_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    name = self._get_param("AutoScalingGroupName")
    if name in self.autoscaling_backend.autoscaling_groups:
        raise AlreadyExists(f"AutoScalingGroup by this name already exists - A group with the name {name} "
                            f"already exists")
    min_size, max_size = self._get_int_param("MinSize"), self._get_int_param("MaxSize")
    if min_size is None or max_size is None:
        raise ValidationError("MinSize and MaxSize are required")
    check_bounds(min_size, max_size, self._get_int_param("DesiredCapacity"))
    check_tags(self._get_params().get("Tags", []) or [])
    hooks = hook_specifications(self._get_params().get("LifecycleHookSpecificationList") or [])
    state = require_state()
    model.remember_backend(state, self.autoscaling_backend)
    backend = self.autoscaling_backend
    # A18: moto ignores DesiredCapacityType; known before moto's constructor sizes the group (first launch).
    capacity_type = _capacity_type(self)
    state.groups.setdefault((backend.account_id, backend.region_name, name), GroupRecord()).desired_capacity_type = \
        capacity_type
    # A19: the hooks exist before moto's constructor sizes the group, so the very first instances wait in
    # Pending:Wait (A6). A refused group takes its hooks with it.
    for hook_name, transition, timeout, result in hooks:
        backend.create_lifecycle_hook(hook_name, name, transition, timeout, result)
    try:
        reply = seam.original(AutoScalingResponse, "create_auto_scaling_group")(self)
    except Exception:
        for hook_name, *_ in hooks:
            backend.delete_lifecycle_hook(name, hook_name)
        state.groups.pop((backend.account_id, backend.region_name, name), None)
        raise
    backend.autoscaling_groups[name].desired_capacity_type = capacity_type  # reported by Describe (A18)
    return reply


def _capacity_type(resp: AutoScalingResponse) -> str | None:
    value = resp._get_param("DesiredCapacityType")
    if value is not None and value not in weights.CAPACITY_TYPES:
        raise ValidationError(f"Invalid DesiredCapacityType: {value}; valid values are "
                              f"{', '.join(weights.CAPACITY_TYPES)}")
    return value


def delete_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    live = [s for s in group.instance_states if s.lifecycle_state != "Terminating"]
    if live and not self._get_bool_param("ForceDelete", False):
        raise ResourceInUse("You cannot delete an AutoScalingGroup while there are instances or pending Spot "
                            "instance request(s) still in the group.")
    remove_group(require_state(), self.autoscaling_backend, group)
    return EmptyResult()


def remove_group(state: LayerState, backend: Any, group: FakeAutoScalingGroup) -> None:
    """Delete the group and its instances, which leave the load balancers (draining, E2) as when AWS
    terminates them (also CloudFormation's delete, cfn.py)."""
    for inst in list(group.instance_states):
        model.leave_lbs(state, group, inst)
        model.finish_terminate(state, group, inst)
    backend.autoscaling_groups.pop(group.name, None)


# -- standby, detach, terminate (A1-A4) --------------------------------------------------------------------

def enter_standby(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    instances = _instances(self, group, ("InService",))  # A1: only InService instances
    decrement = self._get_bool_param("ShouldDecrementDesiredCapacity", False)
    if decrement and group.desired_capacity - len(instances) < group.min_size:
        raise _sizes(group, "place into standby", len(instances))  # A1: lower MinSize first
    state = require_state()
    original = group.desired_capacity
    if decrement:
        group.desired_capacity -= len(instances)
    activities = []
    for inst in instances:
        # A1: Standby instances leave the load balancers and drain; (unverified) EnteringStandby lasts the drain.
        drain = model.leave_lbs(state, group, inst)
        model.set_lifecycle(state, group, inst, "EnteringStandby", after_aws_seconds=drain)
        activities.append(_logged(state, group, "enter_standby", inst, EnterStandbyActivity(inst.instance, original)))
    model.reconcile(state, group)  # without decrement the group launches replacements (A1)
    return ActionResult({"Activities": activities})


def _logged(state: LayerState, group: FakeAutoScalingGroup, kind: str, inst: InstanceState, activity: Any,
            status: str = "InProgress") -> Any:
    """A15: moto's activity for the reply, kept (same id) in the layer's log for DescribeScalingActivities."""
    scaling.add(state, group, kind, inst.instance.id, activity.description, activity.cause, status,
                activity_id=activity.activity_id)
    return activity


def exit_standby(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    instances = _instances(self, group, ("Standby",))  # A2: only Standby instances
    if model.suspended(group, "Launch"):
        # A13: (user guide, "Suspend and resume processes") returning from Standby is a launch; the error code
        # is unverified, ValidationError is the conservative reading. EnterStandby is not held back.
        raise ValidationError(f"Cannot move instances out of Standby for AutoScalingGroup {group.name} while "
                              f"the Launch process is suspended.")
    if group.desired_capacity + len(instances) > group.max_size:
        raise _sizes(group, "move out of standby", len(instances))  # A2: must stay <= MaxSize
    state = require_state()
    if state.faults.take_exit_standby_contention():
        raise ResourceContentionError()  # A2: retryable; injected once by configure_faults
    original = group.desired_capacity
    group.desired_capacity += len(instances)
    activities = []
    for inst in instances:
        model.set_lifecycle(state, group, inst, "Pending", after_aws_seconds=model.EXIT_STANDBY_SECONDS)
        activities.append(_logged(state, group, "exit_standby", inst, ExitStandbyActivity(inst.instance, original)))
    return ActionResult({"Activities": activities})


def detach_instances(self: AutoScalingResponse) -> ActionResult:
    group = require_group(self)
    instances = _instances(self, group, ("InService", "Standby"))  # A3
    decrement = self._get_bool_param("ShouldDecrementDesiredCapacity", False)
    # A3: decrementing counts every detached instance, Standby ones too, although Standby instances that
    # entered with decrement are already outside the desired capacity: the group shrinks a second time, or
    # the call is refused below MinSize (the seed's footnote 2: detach those with decrement false).
    if decrement and group.desired_capacity - len(instances) < group.min_size:
        raise _sizes(group, "detach", len(instances))
    state = require_state()
    activities = []
    for inst in instances:
        model.leave_lbs(state, group, inst)  # A3: detached instances drain and keep running
        group.autoscaling_backend.ec2_backend.delete_tags([inst.instance.id], {ASG_NAME_TAG: group.name})
        activities.append(_logged(state, group, "detach", inst, DetachInstanceActivity(inst.instance), "Successful"))
        group.instance_states = [s for s in group.instance_states if s is not inst]
        state.emit("instance_detached", inst.instance.id, group.name)
        state.instances.pop(inst.instance.id, None)
    if decrement:
        group.desired_capacity -= len(instances)
    model.reconcile(state, group)  # without decrement, replacements for InService instances
    return ActionResult({"Activities": activities})


def terminate_instance_in_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    iid = self._get_param("InstanceId")
    decrement = self._get_bool_param("ShouldDecrementDesiredCapacity", False)
    for group in self.autoscaling_backend.autoscaling_groups.values():
        for inst in group.instance_states:
            if inst.instance.id == iid:
                break
        else:
            continue
        if inst.lifecycle_state == "Terminating":
            raise ValidationError(f"The instance {iid} is already terminating.")
        counted = inst.lifecycle_state in model.COUNTED
        if decrement and counted and group.desired_capacity - 1 < group.min_size:
            raise ValidationError(f"Currently, desiredSize equals minSize ({group.min_size}). Terminating "
                                  f"instance without replacement will violate group's min size constraint. "
                                  f"Either set shouldDecrementDesiredCapacity flag to false or lower group's "
                                  f"min size.")
        state = require_state()
        original = group.desired_capacity
        if decrement and counted:
            group.desired_capacity -= 1
        activity = TerminateInstanceActivity(inst.instance, original)
        model.begin_terminate(state, group, inst, cause=activity.cause, activity_id=activity.activity_id)
        model.reconcile(state, group)
        return ActionResult({"Activity": activity})
    raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {iid}")


def attach_instances(self: AutoScalingResponse) -> ActionResult:
    # NOT USED BY THE PRODUCT YET: neither the deployer, the agent nor the fleet attaches instances. Kept (and
    # tested) for the standby-worker and warm-pool issues; docs/localcloud.md lists what is in this state.
    group = require_group(self)
    ids = self._get_param("InstanceIds", []) or []
    if len(ids) > MAX_INSTANCE_IDS:
        raise ValidationError(f"The number of instance ids that may be passed in is limited to {MAX_INSTANCE_IDS}")
    if group.desired_capacity + len(ids) > group.max_size:
        raise _sizes(group, "attach", len(ids))
    state = require_state()
    ec2 = self.autoscaling_backend.ec2_backend
    for iid in ids:
        instance = ec2.get_instance(iid)  # moto raises InvalidInstanceID.NotFound for an unknown id
        instance.autoscaling_group = group
        inst = InstanceState(instance, lifecycle_state="Pending", autoscaling_group=group,
                             protected_from_scale_in=group.new_instances_protected_from_scale_in)
        ec2.create_tags([iid], {ASG_NAME_TAG: group.name})
        group.instance_states.append(inst)
        model.record(state, inst).deadline = state.now() + state.scaled(model.EXIT_STANDBY_SECONDS)
        state.emit("instance_launched", iid, group.name, state="Pending")
    group.desired_capacity += len(ids)
    return EmptyResult()


# -- lifecycle hooks (A6) ----------------------------------------------------------------------------------

def _check_hook(timeout: int | None, transition: str | None, result: str | None) -> None:
    if timeout is not None and not HEARTBEAT_RANGE[0] <= timeout <= HEARTBEAT_RANGE[1]:
        raise ValidationError(f"Heartbeat timeout must be between {HEARTBEAT_RANGE[0]} and {HEARTBEAT_RANGE[1]} "
                              f"seconds, got {timeout}")
    if transition not in (model.LAUNCH_HOOK, "autoscaling:EC2_INSTANCE_TERMINATING"):
        raise ValidationError(f"Invalid LifecycleTransition: {transition}")
    if result not in (None, "CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid DefaultResult: {result}")


def put_lifecycle_hook(self: AutoScalingResponse) -> ActionResult:
    require_group(self)
    _check_hook(self._get_int_param("HeartbeatTimeout"), self._get_param("LifecycleTransition"),
                self._get_param("DefaultResult"))
    return seam.original(AutoScalingResponse, "put_lifecycle_hook")(self)


def hook_specifications(specs: list[dict[str, Any]]) -> list[tuple[str, str, int | None, str | None]]:
    """A19: CreateAutoScalingGroup's LifecycleHookSpecificationList (moto ignores it; CloudFormation's property
    of the same name, cfn.py), checked as PutLifecycleHook checks one hook: (name, transition, timeout,
    default result)."""
    hooks = []
    for spec in specs:
        name = spec.get("LifecycleHookName")
        if not name:
            raise ValidationError("LifecycleHookName is required in LifecycleHookSpecificationList")
        raw = spec.get("HeartbeatTimeout")
        try:
            timeout = None if raw in (None, "") else int(raw)
        except (TypeError, ValueError):
            raise ValidationError(f"Invalid HeartbeatTimeout: {raw}") from None
        _check_hook(timeout, spec.get("LifecycleTransition"), spec.get("DefaultResult"))
        hooks.append((name, spec["LifecycleTransition"], timeout, spec.get("DefaultResult")))
    return hooks


def _lifecycle_action(self: AutoScalingResponse) -> tuple[LayerState, FakeAutoScalingGroup, InstanceState, str]:
    group = require_group(self)
    hook = self._get_param("LifecycleHookName")
    iid, token = self._get_param("InstanceId"), self._get_param("LifecycleActionToken")
    if not iid and not token:
        raise ValidationError("Either InstanceId or LifecycleActionToken is required")
    state = require_state()
    for inst in group.instance_states:
        waiting = model.record(state, inst).hooks.get(hook)
        if inst.lifecycle_state == "Pending:Wait" and waiting and (
                inst.instance.id == iid or (token and waiting.token == token)):
            return state, group, inst, hook
    raise ValidationError(f"No active Lifecycle Action found with instance ID {iid or token}")


def complete_lifecycle_action(self: AutoScalingResponse) -> ActionResult:
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"LifecycleActionResult must be CONTINUE or ABANDON, got {result}")
    state, group, inst, hook = _lifecycle_action(self)
    model.apply_hook_result(state, group, inst, hook, result)
    return EmptyResult()


def record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> ActionResult:
    state, _, inst, hook = _lifecycle_action(self)
    waiting = model.record(state, inst).hooks[hook]
    waiting.deadline = state.now() + state.scaled(waiting.timeout)  # restarts the heartbeat timeout
    return EmptyResult()


# -- A11 guard for the remaining group actions --------------------------------------------------------------

def _guarded(action: str) -> Callable[[AutoScalingResponse], ActionResult]:
    def guarded(self: AutoScalingResponse) -> ActionResult:
        require_group(self)
        return seam.original(AutoScalingResponse, action)(self)
    guarded.__name__ = action
    return guarded


GUARDED = ("suspend_processes", "resume_processes", "attach_load_balancer_target_groups",
           "detach_load_balancer_target_groups", "describe_load_balancer_target_groups",
           "attach_load_balancers", "detach_load_balancers", "describe_load_balancers",
           "describe_lifecycle_hooks", "delete_lifecycle_hook",
           "enable_metrics_collection",
           # NOT USED BY THE PRODUCT YET: the PutWarmPool / DeleteWarmPool guards (A11); the pool is warm.py's (A17).
           "put_warm_pool", "delete_warm_pool",
           "put_scheduled_update_group_action", "batch_put_scheduled_update_group_action")


def set_instance_protection(self: AutoScalingResponse) -> ActionResult:
    """A14: moto sets the flag on whatever ids it is given, silently skipping strangers; AWS refuses an id that
    is not in the group, more than 50 ids, or a missing ProtectedFromScaleIn."""
    group = require_group(self)
    ids = self._get_param("InstanceIds", []) or []
    if not ids:
        raise ValidationError("InstanceIds must contain at least one instance id")
    if len(ids) > MAX_PROTECTION_IDS:
        raise ValidationError(f"The number of instance ids that may be passed in is limited to {MAX_PROTECTION_IDS}")
    protected = self._get_bool_param("ProtectedFromScaleIn")
    if protected is None:
        raise ValidationError("ProtectedFromScaleIn is required")
    by_id = {s.instance.id: s for s in group.instance_states}
    for iid in ids:
        if iid not in by_id:
            raise ValidationError(f"The instance {iid} is not part of Auto Scaling group {group.name}.")
    for iid in ids:
        by_id[iid].protected_from_scale_in = protected
    model.reconcile(require_state(), group)  # cleared protection makes a group above desired scale in (A14)
    return EmptyResult()


def set_instance_health(self: AutoScalingResponse) -> ActionResult:
    health = self._get_param("HealthStatus")
    if health not in ("Healthy", "Unhealthy"):
        raise ValidationError("Valid instance health states are: [Healthy, Unhealthy]")
    iid = self._get_param("InstanceId")
    if not any(s.instance.id == iid for g in self.autoscaling_backend.autoscaling_groups.values()
               for s in g.instance_states):
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {iid}")
    return seam.original(AutoScalingResponse, "set_instance_health")(self)


REPLACED = (set_desired_capacity, update_auto_scaling_group, create_auto_scaling_group, delete_auto_scaling_group,
            enter_standby, exit_standby, detach_instances, terminate_instance_in_auto_scaling_group,
            attach_instances, put_lifecycle_hook, set_instance_health, set_instance_protection)
ADDED = (complete_lifecycle_action, record_lifecycle_action_heartbeat)



for _func in REPLACED + ADDED:
    seam.register(AutoScalingResponse, _func.__name__, _func)
for _action in GUARDED:
    seam.register(AutoScalingResponse, _action, _guarded(_action))
