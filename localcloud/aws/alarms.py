"""CloudWatch metric alarms that evaluate (W2), and their actions on scaling policies (W1, A5, A8).

moto stores alarms and metric data but never evaluates: an alarm stays in whatever state PutMetricAlarm or
SetAlarmState left it. Here instead:
- every datum PutMetricData accepts is also kept by the layer, at the emulated time it arrived (LayerState
  clock), per metric (account, Region, namespace, name, exact dimension set);
- on the clock's tick each metric alarm that is due (alarm_rules.evaluation_interval, scaled by the time
  scale) computes its statistic over the last EvaluationPeriods windows of Period seconds (scaled) and sets
  OK / ALARM / INSUFFICIENT_DATA with a StateReason (alarm_rules.decide); a new alarm starts at
  INSUFFICIENT_DATA, PutMetricAlarm on an existing one keeps its state (PutMetricAlarm API reference);
- SetAlarmState holds until the alarm's next evaluation, one full interval later (as in AWS: "the alarm state
  returns to its actual state" at the next evaluation);
- entering ALARM runs the step or simple scaling policies its AlarmActions name, unless the group suspends
  AlarmNotification (A8); a step policy runs again at every evaluation that finds the alarm still in ALARM.
Metric-math alarms (`Metrics`), percentiles and anomaly bands are not evaluated (docs/localcloud.md).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from . import alarm_rules, asg_catalog, runtime
from . import moto_seam as seam
from .alarm_rules import ALARM, Sample
from .moto_seam import CloudWatchBackend
from .state import LayerState

log = logging.getLogger(__name__)

# PutMetricAlarm refuses Period x EvaluationPeriods above one day: older data can never be evaluated.
RETAINED_AWS_SECONDS = 86400.0
POLICY_TYPES = ("SimpleScaling", "StepScaling")
DEFAULT_COOLDOWN = 300.0  # AWS seconds: a group's DefaultCooldown when none is set (simple policies)


def _metric_key(backend: Any, namespace: str, name: str, dimensions: Any) -> tuple:
    return (backend.account_id, backend.region_name, namespace, name, frozenset(dimensions))


def remember(state: LayerState, backend: Any) -> None:
    if all(b is not backend for b in state.cloudwatch_backends):
        state.cloudwatch_backends.append(backend)


def samples_of(datum: dict[str, Any]) -> list[Sample]:
    """PutMetricData's MetricDatum (as moto parsed it) -> the samples it adds (Value, Values x Counts, or
    StatisticValues)."""
    if datum.get("Values"):
        counts = datum.get("Counts") or [1] * len(datum["Values"])
        return [Sample(float(v) * float(c), float(v), float(v), float(c))
                for v, c in zip(datum["Values"], counts) if float(c) > 0]
    stats = datum.get("StatisticValues")
    if stats:
        return [Sample(float(stats["Sum"]), float(stats["Minimum"]), float(stats["Maximum"]),
                       float(stats["SampleCount"]))]
    value = float(datum.get("Value", 0))
    return [Sample(value, value, value, 1.0)]


@seam.replaces(CloudWatchBackend, "put_metric_data")
def _put_metric_data(self: CloudWatchBackend, namespace: str, metric_data: list[dict[str, Any]]) -> None:
    seam.original(CloudWatchBackend, "put_metric_data")(self, namespace, metric_data)  # validates first
    state = runtime.active()
    if state is None:
        return
    remember(state, self)
    now = state.now()
    cutoff = now - state.scaled(RETAINED_AWS_SECONDS)
    for datum in metric_data:
        dims = [(d["Name"], d["Value"]) for d in datum.get("Dimensions") or []]
        points = state.metrics.setdefault(_metric_key(self, namespace, datum["MetricName"], dims), deque())
        for sample in samples_of(datum):
            points.append((now, sample, datum.get("Unit")))
        while points and points[0][0] < cutoff:
            points.popleft()


@seam.replaces(CloudWatchBackend, "put_metric_alarm")
def _put_metric_alarm(self: CloudWatchBackend, *args: Any, **kwargs: Any) -> Any:
    name = kwargs["name"] if "name" in kwargs else args[0]
    previous = self.alarms.get(name)
    alarm = seam.original(CloudWatchBackend, "put_metric_alarm")(self, *args, **kwargs)
    state = runtime.active()
    if state is None:
        return alarm
    remember(state, self)
    if previous is not None:
        # PutMetricAlarm on an existing alarm replaces its configuration and leaves its state unchanged.
        for attr in ("state_value", "state_reason", "state_reason_data", "state_updated_timestamp", "history"):
            setattr(alarm, attr, getattr(previous, attr))
    else:
        # PutMetricAlarm: a new alarm's state is set to INSUFFICIENT_DATA at once, then evaluated (at the next
        # tick); an updated one keeps its evaluation schedule.
        alarm.state_value = alarm_rules.INSUFFICIENT_DATA
        state.alarm_due[(self.account_id, self.region_name, name)] = state.now()
    return alarm


@seam.replaces(CloudWatchBackend, "set_alarm_state")
def _set_alarm_state(self: CloudWatchBackend, alarm_name: str, reason: str, reason_data: str,
                     state_value: str) -> None:
    previous = self.alarms[alarm_name].state_value if alarm_name in self.alarms else None
    seam.original(CloudWatchBackend, "set_alarm_state")(self, alarm_name, reason, reason_data, state_value)
    state = runtime.active()
    if state is None:
        return
    remember(state, self)
    alarm = self.alarms[alarm_name]
    # The set state holds until the next evaluation: a full interval from now.
    state.alarm_due[(self.account_id, self.region_name, alarm_name)] = state.now() + state.scaled(
        alarm_rules.evaluation_interval(_number(alarm.period, 60)))
    if state_value == ALARM and previous != ALARM:
        # SetAlarmState: "the action configured for the appropriate state is invoked".
        _run_actions(state, alarm, None, entering=True)


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def evaluable(alarm: Any) -> bool:
    """A static-threshold alarm on one metric with a plain statistic: what this emulator evaluates."""
    return (not alarm.metric_data_queries and bool(alarm.metric_name) and alarm.statistic in alarm_rules.STATISTICS
            and alarm.comparison_operator in alarm_rules.COMPARISONS and not alarm.rule)


def tick(state: LayerState) -> None:
    """Evaluate every alarm that is due (called under the layer's lock)."""
    if not state.alarms_evaluate:
        return
    now = state.now()
    for backend in state.cloudwatch_backends:
        for alarm in list(backend.alarms.values()):
            key = (backend.account_id, backend.region_name, alarm.name)
            due = state.alarm_due.get(key, now)
            if now < due or not evaluable(alarm):
                continue
            interval = max(1e-3, state.scaled(alarm_rules.evaluation_interval(_number(alarm.period, 60))))
            if now - due > state.scaled(RETAINED_AWS_SECONDS):
                due = now  # a clock far ahead (a test's fake clock): nothing older is left to evaluate
            # Each evaluation ends at its scheduled time, not at the (later) tick that runs it: the windows of
            # successive evaluations then leave no gap, and a datum is never skipped by a late tick.
            while due <= now:
                evaluate(state, backend, alarm, due)
                due += interval
            state.alarm_due[key] = due


def evaluate(state: LayerState, backend: Any, alarm: Any, now: float) -> None:
    period = _number(alarm.period, 60)
    periods = max(1, int(_number(alarm.evaluation_periods, 1)))
    dims = [(d.name, d.value) for d in alarm.dimensions]
    points = [(at, sample) for at, sample, unit in state.metrics.get(
        _metric_key(backend, alarm.namespace, alarm.metric_name, dims), ())
        if not alarm.unit or unit in (None, alarm.unit)]
    values = alarm_rules.period_values(points, now, state.scaled(period), periods, alarm.statistic)
    m = alarm.datapoints_to_alarm
    decision = alarm_rules.decide(values, alarm.comparison_operator, _number(alarm.threshold, 0.0),
                                  None if m is None else int(m), alarm.treat_missing_data, alarm.state_value)
    latest = next((v for v in reversed(values) if v is not None), None)
    if decision.state != alarm.state_value:
        previous = alarm.state_value
        data = {"version": "1.0", "queryDate": state.now(), "statistic": alarm.statistic, "period": int(period),
                "recentDatapoints": [v for v in values if v is not None], "threshold": _number(alarm.threshold, 0)}
        alarm.update_state(decision.reason, json.dumps(data), decision.state)
        log.info("alarm %s: %s -> %s (%s)", alarm.name, previous, decision.state, decision.reason)
        if decision.state == ALARM:
            _run_actions(state, alarm, latest, entering=True)
    elif decision.state == ALARM:
        _run_actions(state, alarm, latest, entering=False)


def _run_actions(state: LayerState, alarm: Any, value: float | None, entering: bool) -> None:
    """W1: the scaling policies the alarm's AlarmActions name. Simple policies once per transition into ALARM
    (and not within their cooldown); step policies also at every later evaluation that finds ALARM."""
    if not alarm.actions_enabled:
        return
    for arn in alarm.alarm_actions:
        if ":autoscaling:" not in arn or ":scalingPolicy:" not in arn:
            continue  # SNS, EC2 and other actions are not emulated
        found = _policy_by_arn(state, arn)
        if found is None:
            log.info("alarm %s: action %s names no policy", alarm.name, arn)
            continue
        backend, policy = found
        if policy.policy_type not in POLICY_TYPES or (not entering and policy.policy_type != "StepScaling"):
            continue
        group = backend.autoscaling_groups.get(policy.auto_scaling_group_name)
        if group is None:
            continue
        if "AlarmNotification" in group._suspended_processes:  # A8: the alarm's action is not taken
            log.info("alarm %s: AlarmNotification suspended on %s, policy %s not executed", alarm.name,
                     group.name, policy.name)
            continue
        adjustment = _adjustment(policy, value, _number(alarm.threshold, 0.0))
        if adjustment is None:
            continue
        if policy.policy_type == "SimpleScaling":
            cooldown_key = (backend.account_id, backend.region_name, policy.arn)
            if state.now() < state.policy_cooldowns.get(cooldown_key, float("-inf")):
                continue
            seconds = policy.cooldown if policy.cooldown is not None else DEFAULT_COOLDOWN
            state.policy_cooldowns[cooldown_key] = state.now() + state.scaled(_number(seconds, DEFAULT_COOLDOWN))
        desired = asg_catalog.new_capacity(group, policy.adjustment_type, adjustment)
        log.info("alarm %s: executing %s on %s: desired %s -> %s", alarm.name, policy.name, group.name,
                 group.desired_capacity, desired)
        backend.set_desired_capacity(group.name, desired)


def _policy_by_arn(state: LayerState, arn: str) -> tuple[Any, Any] | None:
    for backend in state.backends:
        for _, policy in state.policies.in_backend(backend):
            if policy.arn == arn:
                return backend, policy
    return None


def _adjustment(policy: Any, value: float | None, threshold: float) -> int | None:
    """The policy's adjustment for this alarm value: ScalingAdjustment, or the step whose interval holds
    value - threshold (bounds relative to the threshold; above it the lower bound is inclusive, below it the
    upper one). None: no step matches (or no value to match one)."""
    if policy.policy_type == "SimpleScaling":
        return int(_number(policy.scaling_adjustment, 0))
    if value is None:
        return None
    breach = value - threshold
    for step in policy.step_adjustments or []:
        lower = step.get("MetricIntervalLowerBound")
        upper = step.get("MetricIntervalUpperBound")
        low = float("-inf") if lower in (None, "") else float(lower)
        high = float("inf") if upper in (None, "") else float(upper)
        inside = low <= breach < high if breach >= 0 else low < breach <= high
        if inside:
            return int(_number(step.get("ScalingAdjustment"), 0))
    return None
