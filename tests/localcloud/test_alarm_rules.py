"""W2: how an alarm decides its state (localcloud/aws/alarm_rules.py), as pure functions: statistics, M of N,
and the missing-data rows of the CloudWatch user guide ("Configuring how CloudWatch alarms treat missing
data": `-` missing, `X` breaching, `0` not breaching; DatapointsToAlarm = EvaluationPeriods = 3)."""

import pytest

from localcloud.aws.alarm_rules import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    Sample,
    decide,
    evaluation_interval,
    period_values,
    statistic,
)

ONE = [Sample(4.0, 1.0, 3.0, 2.0), Sample(6.0, 6.0, 6.0, 1.0)]  # values 1 and 3, then 6


@pytest.mark.parametrize("name, expected", [("Sum", 10.0), ("SampleCount", 3.0), ("Minimum", 1.0),
                                            ("Maximum", 6.0), ("Average", 10.0 / 3)])
def test_statistics_over_single_values_and_statistic_sets(name, expected):
    assert statistic(ONE, name) == pytest.approx(expected)


def test_a_period_without_samples_is_missing_and_an_unknown_statistic_is_refused():
    assert statistic([], "Sum") is None
    with pytest.raises(ValueError, match="p99"):
        statistic(ONE, "p99")


def test_period_values_are_the_last_n_windows_ending_now_oldest_first():
    one = Sample(1.0, 1.0, 1.0, 1.0)
    points = [(39.0, one),  # older than the three windows: not counted
              (40.0, one), (59.9, one),  # [40, 60): the oldest window, its start inclusive
              (80.0, one), (100.0, one)]  # the newest window [80, 100], a datum at `now` included
    assert period_values(points, now=100.0, period=20.0, periods=3, name="Sum") == [2.0, None, 2.0]


def rule(values, m=None, treat=None, current=OK, comparison="GreaterThanOrEqualToThreshold"):
    return decide(values, comparison, 1.0, m, treat, current).state


X, O, _ = 5.0, 0.0, None  # breaching, not breaching, missing (threshold 1, >=)


@pytest.mark.parametrize("values, m, expected", [
    ([X, X, X], None, ALARM),  # M defaults to N
    ([X, O, X], None, OK),
    ([X, O, X], 2, ALARM),  # 2 of 3
    ([O, O, X], 2, OK),
    ([X, X, O, O, O], 2, ALARM),  # M of N: not necessarily consecutive, nor the newest
])
def test_m_out_of_n(values, m, expected):
    assert rule(values, m) == expected


@pytest.mark.parametrize("values, treat, current, expected", [
    # The user guide's table (M = N = 3): the last three of its five datapoints.
    ([O, X, X], "missing", OK, OK), ([O, X, X], "ignore", OK, OK),
    ([_, _, O], "missing", ALARM, OK), ([_, _, O], "ignore", ALARM, OK),
    ([_, _, O], "breaching", ALARM, OK), ([_, _, O], "notBreaching", ALARM, OK),
    ([_, _, _], "missing", OK, INSUFFICIENT_DATA), ([_, _, _], "ignore", ALARM, ALARM),
    ([_, _, _], "ignore", OK, OK), ([_, _, _], "breaching", OK, ALARM), ([_, _, _], "notBreaching", ALARM, OK),
    ([X, _, X], "missing", OK, ALARM), ([X, _, X], "breaching", OK, ALARM),
    ([X, _, X], "notBreaching", ALARM, OK), ([X, _, X], "ignore", OK, OK),
    ([X, _, _], "missing", OK, ALARM), ([X, _, _], "ignore", ALARM, ALARM), ([X, _, _], "ignore", OK, OK),
    ([X, _, _], "breaching", OK, ALARM), ([X, _, _], "notBreaching", ALARM, OK),
    ([X, O, _], "missing", ALARM, OK),  # fewer real datapoints than M, not all breaching
    ([_, _, _], None, OK, INSUFFICIENT_DATA),  # TreatMissingData omitted: `missing`
])
def test_missing_data(values, treat, current, expected):
    assert rule(values, treat=treat, current=current) == expected


def test_comparisons_and_the_reason_name_the_datapoints_and_the_threshold():
    assert rule([0.5], comparison="LessThanThreshold") == ALARM
    assert rule([1.0], comparison="LessThanOrEqualToThreshold") == ALARM
    assert rule([1.0], comparison="GreaterThanThreshold") == OK
    decision = decide([3.0, None], "GreaterThanOrEqualToThreshold", 2.0, 1, "missing", OK)
    assert decision.state == ALARM
    assert decision.reason.startswith("Threshold Crossed: 1 out of the last 2 datapoints [3, missing] were "
                                      "greater than or equal to the threshold (2)")
    assert decide([None], "GreaterThanThreshold", 1.0, None, None, OK).reason == \
        "Insufficient Data: 1 datapoint was unknown."


def test_standard_alarms_evaluate_every_minute_and_high_resolution_ones_every_period():
    assert evaluation_interval(300) == 60.0
    assert evaluation_interval(60) == 60.0
    assert evaluation_interval(10) == 10.0
