"""How a CloudWatch metric alarm decides its state (W2), as pure functions over plain data.

Sources: the CloudWatch user guide, "Evaluating an alarm" (Period, EvaluationPeriods N, DatapointsToAlarm M:
M of the last N datapoints breaching put the alarm in ALARM) and "Configuring how CloudWatch alarms treat
missing data" (TreatMissingData: `missing`, the default, `notBreaching`, `breaching`, `ignore`; with `missing`
an alarm whose evaluation range holds no datapoint at all goes to INSUFFICIENT_DATA, with `ignore` the alarm
keeps its state). alarms.py feeds these functions from the datapoints the emulator received.

Simplifications, each documented in docs/localcloud.md ("CloudWatch alarms"):
- the evaluation range is exactly the last N periods (AWS looks back a few periods further when data is
  missing);
- (unverified) with `missing` and fewer real datapoints than M, the alarm decides on the ones it has: ALARM
  when every one of them breaches (the guide's table: `- - X - -` with M = N = 3 is ALARM), else OK.
"""

from __future__ import annotations

from typing import NamedTuple

OK = "OK"
ALARM = "ALARM"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
TREAT_MISSING = ("missing", "notBreaching", "breaching", "ignore")
# The comparisons a static threshold uses; the anomaly-band ones need a model this emulator does not have.
COMPARISONS = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}


class Sample(NamedTuple):
    """One datum as PutMetricData gave it: a single value is Sample(v, v, v, 1); StatisticValues as given."""

    total: float
    minimum: float
    maximum: float
    count: float


class Decision(NamedTuple):
    state: str
    reason: str
    values: list  # the N period values, oldest first (None: missing)


def statistic(samples: list[Sample], name: str) -> float | None:
    """The statistic of one period's samples; None when the period has none (a missing datapoint)."""
    if not samples:
        return None
    count = sum(s.count for s in samples)
    if name == "SampleCount":
        return count
    if name == "Sum":
        return sum(s.total for s in samples)
    if name == "Minimum":
        return min(s.minimum for s in samples)
    if name == "Maximum":
        return max(s.maximum for s in samples)
    if name == "Average":
        return sum(s.total for s in samples) / count if count else None
    raise ValueError(f"unsupported statistic {name!r}")


def period_values(points: list[tuple[float, Sample]], now: float, period: float, periods: int,
                  name: str) -> list[float | None]:
    """The statistic of each of the last `periods` windows of `period` seconds ending at `now`, oldest first.

    points: (time, Sample) on the same clock as `now`. A window is [start, end), the newest one [start, now]:
    a datum that arrives at the instant of an evaluation counts in it, and in the next evaluation's newest
    window too."""
    windows: list[list[Sample]] = [[] for _ in range(periods)]
    start = now - period * periods
    for at, sample in points:
        if start <= at <= now:
            windows[min(periods - 1, int((at - start) / period))].append(sample)
    return [statistic(w, name) for w in windows]


def decide(values: list[float | None], comparison: str, threshold: float, datapoints_to_alarm: int | None,
           treat_missing: str | None, current: str) -> Decision:
    """The state the alarm should be in, given its last N period values (oldest first)."""
    breaches, words = COMPARISONS[comparison]
    n = len(values)
    m = min(datapoints_to_alarm or n, n)
    treat = treat_missing or "missing"
    present = [v for v in values if v is not None]
    missing = n - len(present)
    breaching = sum(1 for v in present if breaches(v, threshold))
    shown = ", ".join("missing" if v is None else f"{v:g}" for v in values)

    def crossed(state: str) -> Decision:
        verb = f"were {words}" if state == ALARM else f"were not {words}"
        count = breaching if state == ALARM else len(present) - breaching
        return Decision(state, f"Threshold Crossed: {count} out of the last {n} datapoints [{shown}] {verb} "
                               f"the threshold ({threshold:g}) (minimum {m} datapoints for OK -> ALARM "
                               f"transition).", values)

    if missing == 0 or treat == "notBreaching":
        return crossed(ALARM if breaching >= m else OK)
    if treat == "breaching":
        breaching += missing  # the missing periods count as breaching
        return crossed(ALARM if breaching >= m else OK)
    if treat == "ignore":
        if breaching >= m:
            return crossed(ALARM)
        if breaching + missing < m:  # not even every missing datapoint breaching would reach M
            return crossed(OK)
        return Decision(current, f"Missing data ignored: {missing} of the last {n} datapoints [{shown}] are "
                                 f"missing; the alarm keeps its state.", values)
    if not present:
        return Decision(INSUFFICIENT_DATA, f"Insufficient Data: {n} datapoint{'s were' if n > 1 else ' was'} "
                                           f"unknown.", values)
    if len(present) >= m:
        return crossed(ALARM if breaching >= m else OK)
    return crossed(ALARM if breaching == len(present) else OK)  # (unverified) fewer real datapoints than M


def evaluation_interval(period: float) -> float:
    """(unverified) AWS seconds between two evaluations of one alarm: once a minute, or every Period for a
    high-resolution alarm (Period 10 or 30)."""
    return min(60.0, float(period))
