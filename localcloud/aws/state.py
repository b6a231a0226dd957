"""State the fidelity layer keeps beside moto's: the clock, per-instance records, its own indexes, the event
log, forced health, faults.

moto stores resources; this module stores what moto has no notion of: WHEN things happened (so that target
health and lifecycle states move with time, E1/E2/A5/A6), the per-group index of policies and scheduled
actions that moto keys by name alone (A7), what a test forced, and the events other processes follow. The
layer never re-keys moto's own dicts. All of it is guarded by one re-entrant lock, the same one that
serialises HTTP requests.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .apps import Apps
from .errors import BadControlRequest, EmulationError

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "instance_launched",          # a group launched an instance (lifecycle state Pending or Pending:Wait)
    "instance_lifecycle_changed", # "state" (new) and "previous" keys; e.g. Pending -> InService, -> Standby
    "instance_detached",          # DetachInstances: the instance keeps running outside the group
    "instance_terminated",        # the EC2 instance is terminated (scale-in, ABANDON, TerminateInstances...)
    "target_registered",          # registered with a target group (or a Classic ELB: "load_balancer")
    "target_deregistered",        # deregistered: draining for the deregistration delay (E2/E3)
    "target_removed",             # the draining period ended: the target is gone from the load balancer
)

HEALTH_STATES = ("healthy", "unhealthy")
MAX_CONDITIONAL_CONFLICTS = 1000  # a bound on the 409 fault, X2: a typo must not fail a whole run
MAX_PUT_EVENTS_FAILURES = 1000  # the same bound on the failed PutEvents fault (events_faults.py)


class Faults:
    """Fault injection, off by default (issue 3). Deterministic: every 1/throttle_fraction-th call is throttled;
    `conditional_conflicts` counts down one per conditional PutObject answered 409 (X2)."""

    def __init__(self) -> None:
        self.throttle_fraction = 0.0
        self.latency_s = 0.0
        self.exit_standby_contention_once = False
        # X2: the next N conditional PutObject requests answer 409 ConditionalRequestConflict (s3_conditional.py)
        self.conditional_conflicts = 0
        # A15: launches into these zones fail for capacity; a launch beyond this many vCPUs of running
        # instances fails; groups on these launch templates (id or name) fail every launch.
        self.insufficient_capacity_zones: list[str] = []
        self.vcpu_limit: int | None = None
        self.broken_launch_templates: list[str] = []
        # X1: an EC2 tag written by CreateTags is invisible to DescribeTags / tag filters for this long (AWS s)
        self.tag_visibility_delay_s = 0.0
        # The next N PutEvents requests answer 200 with every entry failed (events_faults.py)
        self.put_events_failures = 0
        # E8's pessimistic reading: an instance whose target was registered again while it drained for
        # EnterStandby stays EnteringStandby past the deregistration delay (autoscaling.tick)
        self.reregistered_standby_stuck = False
        self._throttle_credit = 0.0

    def configure(self, throttle_fraction: float = 0.0, latency_s: float = 0.0,
                  exit_standby_contention_once: bool = False, conditional_conflicts: int = 0,
                  insufficient_capacity_zones: list[str] | None = None, vcpu_limit: int | None = None,
                  broken_launch_templates: list[str] | None = None, tag_visibility_delay_s: float = 0.0,
                  put_events_failures: int = 0, reregistered_standby_stuck: bool = False) -> None:
        if not isinstance(reregistered_standby_stuck, bool):
            raise BadControlRequest(f"reregistered_standby_stuck must be a boolean, got {reregistered_standby_stuck!r}")
        zones = _strings("insufficient_capacity_zones", insufficient_capacity_zones)
        templates = _strings("broken_launch_templates", broken_launch_templates)
        if vcpu_limit is not None and (isinstance(vcpu_limit, bool) or not isinstance(vcpu_limit, int)
                                       or vcpu_limit < 0):
            raise BadControlRequest(f"vcpu_limit must be a whole number >= 0 or null, got {vcpu_limit!r}")
        tag_delay = _number("tag_visibility_delay_s", tag_visibility_delay_s)
        if not 0.0 <= tag_delay <= 3600.0:
            raise BadControlRequest(f"tag_visibility_delay_s must be 0-3600 AWS s, got {tag_visibility_delay_s!r}")
        try:
            throttle_fraction = float(throttle_fraction)
            latency_s = float(latency_s)
        except (TypeError, ValueError):
            raise BadControlRequest("throttle_fraction and latency_s must be numbers") from None
        if isinstance(conditional_conflicts, bool) or not isinstance(conditional_conflicts, int):
            raise BadControlRequest(f"conditional_conflicts must be a whole number, got {conditional_conflicts!r}")
        if not 0 <= conditional_conflicts <= MAX_CONDITIONAL_CONFLICTS:
            raise BadControlRequest(f"conditional_conflicts must be 0-{MAX_CONDITIONAL_CONFLICTS}, "
                                    f"got {conditional_conflicts!r}")
        if isinstance(put_events_failures, bool) or not isinstance(put_events_failures, int) or \
                not 0 <= put_events_failures <= MAX_PUT_EVENTS_FAILURES:
            raise BadControlRequest(f"put_events_failures must be a whole number 0-{MAX_PUT_EVENTS_FAILURES}, "
                                    f"got {put_events_failures!r}")
        if not 0.0 <= throttle_fraction <= 1.0:
            raise BadControlRequest(f"throttle_fraction must be between 0 and 1, got {throttle_fraction!r}")
        if not 0.0 <= latency_s <= 60.0:
            raise BadControlRequest(f"latency_s must be between 0 and 60, got {latency_s!r}")
        self.throttle_fraction = throttle_fraction
        self.latency_s = latency_s
        self.exit_standby_contention_once = bool(exit_standby_contention_once)
        self.conditional_conflicts = conditional_conflicts
        self.insufficient_capacity_zones = zones
        self.vcpu_limit = vcpu_limit
        self.broken_launch_templates = templates
        self.tag_visibility_delay_s = tag_delay
        self.put_events_failures = put_events_failures
        self.reregistered_standby_stuck = reregistered_standby_stuck
        self._throttle_credit = 0.0

    def should_throttle(self) -> bool:
        if self.throttle_fraction <= 0.0:
            return False
        self._throttle_credit += self.throttle_fraction
        if self._throttle_credit >= 1.0 - 1e-9:
            self._throttle_credit -= 1.0
            return True
        return False

    def take_exit_standby_contention(self) -> bool:
        if self.exit_standby_contention_once:
            self.exit_standby_contention_once = False
            return True
        return False

    def take_conditional_conflict(self) -> bool:
        """X2: True (and one fewer left) while conditional PutObject requests are to answer 409."""
        if self.conditional_conflicts > 0:
            self.conditional_conflicts -= 1
            return True
        return False

    def take_put_events_failure(self) -> bool:
        """True (and one fewer left) while PutEvents requests are to answer with every entry failed."""
        if self.put_events_failures > 0:
            self.put_events_failures -= 1
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"throttle_fraction": self.throttle_fraction, "latency_s": self.latency_s,
                "exit_standby_contention_once": self.exit_standby_contention_once,
                "conditional_conflicts": self.conditional_conflicts,
                "insufficient_capacity_zones": list(self.insufficient_capacity_zones),
                "vcpu_limit": self.vcpu_limit, "broken_launch_templates": list(self.broken_launch_templates),
                "tag_visibility_delay_s": self.tag_visibility_delay_s,
                "put_events_failures": self.put_events_failures,
                "reregistered_standby_stuck": self.reregistered_standby_stuck}


def _strings(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise BadControlRequest(f"{name} must be a list of non-empty strings, got {value!r}")
    return list(value)


@dataclass
class HookWait:
    """A6: one launch lifecycle hook an instance waits for in Pending:Wait."""

    token: str            # the LifecycleActionToken
    default_result: str   # CONTINUE or ABANDON, applied at the deadline
    timeout: float        # HeartbeatTimeout, AWS seconds; a heartbeat restarts it
    deadline: float       # layer clock


@dataclass
class InstanceRecord:
    """What the layer remembers of one Auto Scaling instance beside moto's InstanceState: WHEN it moves next.

    moto's InstanceState keeps the lifecycle state itself; this record keeps the timers and flags that move it
    (autoscaling.py). Times are on the layer clock (LayerState.now).
    """

    group: str
    deadline: float | None = None       # the current lifecycle state ends then (Pending, EnteringStandby, ...)
    hooks: dict[str, HookWait] = field(default_factory=dict)  # by hook name, while in Pending:Wait (A6)
    lb_skipped: bool = False            # launched while AddToLoadBalancer was suspended: never registered (A8)
    ec2_terminated: bool = False        # EC2 terminated it (A4), or the group did
    held_tags: dict[str, str] | None = None  # propagated tags not yet on the instance (A12)
    tags_due: float | None = None       # when held_tags reach it
    rebalance: bool = False             # launched by AZRebalance, not yet matched by a termination (A19)


@dataclass
class GroupRecord:
    """What the layer remembers of one Auto Scaling group: when it may try a launch again after a failed one,
    and which zones failed last (A15: the group retries on its own after a delay, preferring another zone)."""

    retry_at: float = 0.0
    failed_zones: set[str] = field(default_factory=set)
    desired_capacity_type: str | None = None  # A18: units, vcpu or memory-mib (moto ignores it)
    # X3a (cfn.py): the properties and UpdatePolicy of the group's stack resource as last applied, for the
    # next stack update to compare with; None for a group no stack made.
    stack_resource: dict[str, Any] | None = None


class GroupIndex:
    """A7: scaling policies or scheduled actions by (group, name) in each moto backend (account, Region).

    moto keys them by name alone per Region, so the same name on blue and green collides. The layer keeps
    its own index here and reads only this one; moto's dict stays as moto types it (name -> object), holding
    for each name one object of that name that still exists.
    """

    def __init__(self, moto_attribute: str) -> None:
        self.moto_attribute = moto_attribute  # "policies" or "scheduled_actions" on moto's AutoScalingBackend
        self._items: dict[tuple[str, str, str, str], Any] = {}

    @staticmethod
    def _scope(backend: Any) -> tuple[str, str]:
        return backend.account_id, backend.region_name

    def __len__(self) -> int:
        return len(self._items)

    def put(self, backend: Any, group: str, name: str, item: Any) -> None:
        self._items[(*self._scope(backend), group, name)] = item

    def get(self, backend: Any, group: str, name: str) -> Any:
        return self._items.get((*self._scope(backend), group, name))

    def in_backend(self, backend: Any) -> list[tuple[tuple[str, str], Any]]:
        """((group, name), item) for every item of this backend, oldest first."""
        scope = self._scope(backend)
        return [(key[2:], item) for key, item in self._items.items() if key[:2] == scope]

    def remove(self, backend: Any, group: str, name: str) -> Any:
        """Forget one group's item; None if there was none."""
        item = self._items.pop((*self._scope(backend), group, name), None)
        if item is not None:
            by_name = getattr(backend, self.moto_attribute)
            namesakes = [other for (_, other_name), other in self.in_backend(backend) if other_name == name]
            if namesakes:
                by_name[name] = namesakes[-1]
            else:
                by_name.pop(name, None)
        return item


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadControlRequest(f"{name} must be a number, got {value!r}") from None


def check_time_scale(value: Any) -> float:
    scale = _number("time_scale", value)
    if not 0.0 < scale <= 10.0:
        raise BadControlRequest(f"time_scale must be > 0 and <= 10, got {value!r}")
    return scale


def check_health_interval(value: Any) -> float:
    interval = _number("health_interval", value)
    if not 0.0 <= interval <= 3600.0:
        raise BadControlRequest(f"health_interval must be 0-3600 s, got {value!r}")
    return interval


class LayerState:
    """Everything the fidelity layer remembers; reset() returns it to the constructor's settings."""

    def __init__(self, time_scale: float = 1.0, health_interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self._default_time_scale = check_time_scale(time_scale)
        self._default_health_interval = None if health_interval is None else check_health_interval(health_interval)
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._dispatch_lock = threading.Lock()
        self._undelivered: list[dict[str, Any]] = []
        self._seq = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.time_scale = self._default_time_scale
            self.health_interval = self._default_health_interval
            self.faults = Faults()
            self.apps = Apps()  # E5: whether each instance's app answers health checks (apps.py)
            # instance id -> (its machine's console, bytes, the time posted): GetConsoleOutput (console.py)
            self.consoles: dict[str, tuple[bytes, float]] = {}
            # (instance_id, target_group_arn or None for "every load balancer") -> "healthy" | "unhealthy"
            self.forced_health: dict[tuple[str, str | None], str] = {}
            # (lb key, target id) -> {"registered_at": t, "drain_until": t or None, "port": p}
            # lb key is a target group ARN or "elb:" + a Classic ELB name.
            self.targets: dict[tuple[str, str], dict[str, Any]] = {}
            # instance id -> the layer's record of an Auto Scaling instance (see autoscaling.py)
            self.instances: dict[str, InstanceRecord] = {}
            # (account, Region, group name) -> GroupRecord (A15 launch retries)
            self.groups: dict[tuple[str, str, str], GroupRecord] = {}
            # A15: every scaling activity, oldest first (activities.py)
            self.activities: list[Any] = []
            self.open_activities: dict[str, list[Any]] = {}  # instance id -> its activities under way
            # A17: (account, Region, group) -> the warm pool's instances (warm.py)
            self.warm_pools: dict[tuple[str, str, str], list[Any]] = {}
            # A16: instance refreshes, oldest first (refresh.py)
            self.refreshes: list[Any] = []
            # X1: (resource id, tag key) -> layer-clock time the tag becomes visible to readers
            self.tags_visible_at: dict[tuple[str, str], float] = {}
            # moto AutoScalingBackends that hold groups, so the clock can visit them
            self.backends: list[Any] = []
            # A7: the layer's own index of policies and scheduled actions per group (moto keys them by name)
            self.policies = GroupIndex("policies")
            self.scheduled_actions = GroupIndex("scheduled_actions")
            # scheduled actions already carried out: (group, name, start time)
            self.scheduled_done: set = set()
            # W2 (alarms.py): (account, Region, namespace, metric, dimensions) -> deque of (time, Sample, unit)
            self.metrics: dict[tuple, Any] = {}
            self.alarm_due: dict[tuple[str, str, str], float] = {}  # (account, Region, alarm) -> next evaluation
            self.policy_cooldowns: dict[tuple[str, str, str], float] = {}  # simple policies' cooldown ends
            self.cloudwatch_backends: list[Any] = []  # moto CloudWatchBackends that hold alarms or data
            self.alarms_evaluate = True  # False: alarms keep the state they are given (moto's behaviour)
            self.events: list[dict[str, Any]] = []
            self.calls: dict[str, int] = {}
            self._undelivered = []

    # -- time ---------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def scaled(self, aws_seconds: float) -> float:
        """Real seconds the emulation waits for `aws_seconds` of AWS time."""
        return float(aws_seconds) * self.time_scale

    def health_check_interval(self, aws_interval: float) -> float:
        if self.health_interval is not None:
            return float(self.health_interval)
        return self.scaled(aws_interval)

    def configure_time(self, time_scale: float | None = None, health_interval: float | None = None) -> None:
        """Change the clock until the next reset(); None leaves a setting as it is."""
        with self.lock:
            if time_scale is not None:
                self.time_scale = check_time_scale(time_scale)
            if health_interval is not None:
                self.health_interval = check_health_interval(health_interval)

    def count_call(self, key: str) -> None:
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    # -- forced health ------------------------------------------------------------------------------
    def set_target_health(self, instance_id: str, state: str | None,
                          target_group_arn: str | None = None) -> None:
        if not isinstance(instance_id, str) or not instance_id:
            raise BadControlRequest("instance_id must be a non-empty string")
        if state is not None and state not in HEALTH_STATES:
            raise BadControlRequest(f"state must be one of {HEALTH_STATES} or null, got {state!r}")
        with self.lock:
            key = (instance_id, target_group_arn)
            if state is None:
                self.forced_health.pop(key, None)
            else:
                self.forced_health[key] = state

    def forced(self, instance_id: str, lb_key: str) -> str | None:
        return self.forced_health.get((instance_id, lb_key), self.forced_health.get((instance_id, None)))

    # -- events -------------------------------------------------------------------------------------
    def emit(self, event_type: str, instance_id: str, group: str | None = None,
             target_group_arn: str | None = None, port: int | None = None, **extra: Any) -> None:
        """Record an event; subscribers get it after the current request releases the lock."""
        if event_type not in EVENT_TYPES:  # a layer bug: subscribers and docs/localcloud.md know only these
            raise EmulationError(f"unknown event type {event_type!r}; add it to EVENT_TYPES and the docs")
        event = {"seq": next(self._seq), "type": event_type, "instance_id": instance_id, "group": group,
                 "target_group_arn": target_group_arn, "port": port, "time": time.time()}
        event.update(extra)
        self.events.append(event)
        self._undelivered.append(event)

    def events_after(self, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with seq > after, oldest first (binary search: followers poll a long-lived log often)."""
        with self.lock:
            low, high = 0, len(self.events)
            while low < high:
                mid = (low + high) // 2
                if self.events[mid]["seq"] <= after:
                    low = mid + 1
                else:
                    high = mid
            return [dict(e) for e in self.events[low:low + limit]]

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Subscriptions survive reset(): a session-wide follower keeps following; unsubscribe() when done."""
        with self.lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with self.lock:
            self._subscribers = [c for c in self._subscribers if c != callback]

    def deliver(self) -> None:
        """Call subscribers for new events, in order, outside the request lock."""
        with self._dispatch_lock:
            with self.lock:
                pending, self._undelivered = self._undelivered, []
                subscribers = list(self._subscribers)
            for event in pending:
                for callback in subscribers:
                    try:
                        callback(dict(event))
                    except Exception:  # a subscriber's bug must not break the emulated AWS
                        log.exception("event subscriber %r failed on %s", callback, event["type"])
