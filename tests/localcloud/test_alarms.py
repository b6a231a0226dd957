"""W2 in the emulator: PutMetricData drives metric alarms (localcloud/aws/alarms.py), SetAlarmState holds until
the next evaluation, and an alarm entering ALARM executes the scaling policy its actions name (W1), within
the group's bounds (A5) and not while AlarmNotification is suspended (A8)."""

import boto3
import pytest

from tests.helpers import wait_until

DIMS = [{"Name": "AutoScalingGroupName", "Value": "web"}]


@pytest.fixture
def cw(aws):
    return boto3.client("cloudwatch")


def put_alarm(cw, name="errors", period=60, periods=1, m=None, threshold=5.0, treat=None, actions=(), **extra):
    params = dict(AlarmName=name, Namespace="BlueGreen/App", MetricName="HTTPCode_Target_5XX_Count",
                  Dimensions=DIMS, Statistic="Sum", Period=period, EvaluationPeriods=periods, Threshold=threshold,
                  ComparisonOperator="GreaterThanOrEqualToThreshold", AlarmActions=list(actions), **extra)
    if m is not None:
        params["DatapointsToAlarm"] = m
    if treat is not None:
        params["TreatMissingData"] = treat
    cw.put_metric_alarm(**params)


def put(cw, value, dims=DIMS, name="HTTPCode_Target_5XX_Count"):
    cw.put_metric_data(Namespace="BlueGreen/App", MetricData=[{"MetricName": name, "Dimensions": dims,
                                                                "Value": value}])


def alarm(cw, name="errors"):
    return cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]


def test_metric_data_drives_an_alarm_ok_alarm_ok_at_the_test_time_scale(cw):
    # The session's time scale (0.01): Period 60 is 0.6 s, one evaluation a minute is one every 0.6 s.
    put_alarm(cw, treat="notBreaching")
    created = alarm(cw)
    wait_until(lambda: alarm(cw)["StateValue"] == "OK", "no 5xx (notBreaching): OK")
    put(cw, 7)  # Sum >= 5 in one period
    wait_until(lambda: alarm(cw)["StateValue"] == "ALARM", "the alarm to fire")
    fired = alarm(cw)
    assert fired["StateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints [7] were greater "
                                           "than or equal to the threshold (5)")
    assert fired["StateUpdatedTimestamp"] > created["StateUpdatedTimestamp"]
    put(cw, 1)  # below the threshold once the 7 left the window
    wait_until(lambda: alarm(cw)["StateValue"] == "OK", "the alarm to clear")


def test_other_metrics_and_dimension_sets_do_not_count(cw, stopped_clock):
    put_alarm(cw, treat="notBreaching")
    put(cw, 50, dims=[{"Name": "AutoScalingGroupName", "Value": "other"}])
    put(cw, 50, dims=DIMS + [{"Name": "AvailabilityZone", "Value": "us-east-1a"}])  # not the same metric
    put(cw, 50, name="HTTPCode_Target_2XX_Count")
    stopped_clock.advance(1)
    assert alarm(cw)["StateValue"] == "OK"


def test_m_out_of_n_over_periods_of_aws_time(cw, stopped_clock):
    put_alarm(cw, periods=3, m=2)  # TreatMissingData omitted: missing
    created = alarm(cw)  # evaluated at once (this request's tick): no data, the state it was created in
    assert created["StateValue"] == "INSUFFICIENT_DATA"
    assert created["StateReason"] == "Unchecked: Initial alarm creation"
    # Evaluations every 60 s from creation (t = 0): each sees [t-180, t-120), [t-120, t-60), [t-60, t].
    put(cw, 9)
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "ALARM"  # [-, -, 9]: (unverified rule) every real datapoint breaches
    put(cw, 0)
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "OK"  # [-, 9, 0]: 2 real datapoints, 1 breaching < M
    put(cw, 6)
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "ALARM"  # [9, 0, 6]: 2 of 3
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "OK"  # [0, 6, -]
    stopped_clock.advance(120)
    assert alarm(cw)["StateValue"] == "INSUFFICIENT_DATA"  # [-, -, -]


def test_set_alarm_state_holds_until_the_next_evaluation_and_put_metric_alarm_keeps_the_state(cw, aws,
                                                                                             stopped_clock):
    put_alarm(cw)
    stopped_clock.advance(1)
    cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="testing the pager")
    stopped_clock.advance(59)
    assert (alarm(cw)["StateValue"], alarm(cw)["StateReason"]) == ("ALARM", "testing the pager")
    put_alarm(cw, threshold=6.0)  # an update: configuration replaced, state kept
    assert (alarm(cw)["StateValue"], alarm(cw)["Threshold"]) == ("ALARM", 6.0)
    stopped_clock.advance(2)
    assert alarm(cw)["StateValue"] == "INSUFFICIENT_DATA"  # evaluated: no data
    aws.configure_alarms(evaluate=False)  # tests that drive states by hand for longer
    cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="by hand")
    stopped_clock.advance(600)
    assert alarm(cw)["StateValue"] == "ALARM"


def test_metric_math_alarms_are_not_evaluated(cw, stopped_clock):
    cw.put_metric_alarm(AlarmName="math", EvaluationPeriods=1, Threshold=1.0,
                        ComparisonOperator="GreaterThanOrEqualToThreshold", Metrics=[
                            {"Id": "e", "Expression": "m * 2", "ReturnData": True},
                            {"Id": "m", "ReturnData": False, "MetricStat": {"Metric": {
                                "Namespace": "BlueGreen/App", "MetricName": "HTTPCode_Target_5XX_Count",
                                "Dimensions": DIMS}, "Period": 60, "Stat": "Sum"}}])
    put(cw, 50)
    stopped_clock.advance(61)
    assert alarm(cw, "math")["StateValue"] == "INSUFFICIENT_DATA"


@pytest.fixture
def scaling(world, cw, stopped_clock):
    """Group `web` at desired 1 (MaxSize 4) and a step policy whose alarm watches its 5xx count."""
    world.group("web", desired=1, max_size=4)
    world.asg.put_scaling_policy(
        AutoScalingGroupName="web", PolicyName="out", PolicyType="StepScaling", AdjustmentType="ChangeInCapacity",
        StepAdjustments=[{"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
                         {"MetricIntervalLowerBound": 10, "ScalingAdjustment": 2}])
    arn = policy_arn(world)
    put_alarm(cw, actions=[arn])
    return world, arn


def policy_arn(world):
    return world.asg.describe_policies(AutoScalingGroupName="web")["ScalingPolicies"][0]["PolicyARN"]


def desired(world):
    return world.describe("web")["DesiredCapacity"]


def test_an_alarm_entering_alarm_runs_its_step_policy_again_each_evaluation_up_to_max_size(scaling, cw,
                                                                                         stopped_clock):
    world, _ = scaling
    put(cw, 7)  # 2 above the threshold: the first step, +1
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "ALARM"
    assert desired(world) == 2
    put(cw, 20)  # 15 above the threshold: the second step (+2), at the next evaluation
    stopped_clock.advance(60)
    assert desired(world) == 4
    put(cw, 20)
    stopped_clock.advance(60)
    assert desired(world) == 4  # MaxSize (A5)


def test_no_scaling_while_alarm_notification_is_suspended(scaling, cw, stopped_clock):
    world, _ = scaling
    world.asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["AlarmNotification"])
    put(cw, 7)
    stopped_clock.advance(60)
    assert alarm(cw)["StateValue"] == "ALARM"
    assert desired(world) == 1  # A8: the alarm fired, its action did not run


def test_a_simple_policy_runs_once_per_transition_into_alarm(world, cw, stopped_clock):
    world.group("web", desired=1, max_size=5)
    world.asg.put_scaling_policy(AutoScalingGroupName="web", PolicyName="out", AdjustmentType="ChangeInCapacity",
                                 ScalingAdjustment=1, Cooldown=0)
    arn = policy_arn(world)
    put_alarm(cw, actions=[arn])
    put(cw, 7)
    stopped_clock.advance(60)
    put(cw, 7)
    stopped_clock.advance(60)
    assert (alarm(cw)["StateValue"], desired(world)) == ("ALARM", 2)  # still ALARM: no second run
    cw.set_alarm_state(AlarmName="errors", StateValue="OK", StateReason="by hand")
    cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="by hand")  # a new transition
    assert desired(world) == 3
