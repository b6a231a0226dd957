"""deployer/alarms.py and the alarm steps of the plans (W1): pure planning, no AWS."""

from deployer import plan
from deployer.alarms import (
    alarm_copies,
    alarm_deletions,
    copy_name,
    left_without_action,
    linked_alarm_names,
    too_long,
)
from deployer.policies import policy_copies
from tests.deployer.deployer_fixtures import NOW, ctx, group_record, ids, names, record_tag, snapshot

ARN = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:{}:autoScalingGroupName/{}:policyName/out"
OLD, NEW = ARN.format("1111", "demo-blue"), ARN.format("2222", "demo-green")
TOPIC = "arn:aws:sns:us-east-1:123456789012:pager"


def step_policy(arn, group, name=None):
    """The operator's "out" on blue; on green by default the tool's copy of it."""
    name = name or ("out" if group == "demo-blue" else f"out--bluegreen-{group}")
    return {"PolicyName": name, "PolicyType": "StepScaling", "PolicyARN": arn, "AutoScalingGroupName": group,
            "AdjustmentType": "ChangeInCapacity", "StepAdjustments": [{"ScalingAdjustment": 1}]}


def alarm(name, group, actions, **extra):
    return {"AlarmName": name, "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}",
            "StateValue": "OK", "ActionsEnabled": True, "AlarmActions": list(actions), "OKActions": [],
            "InsufficientDataActions": [], "MetricName": "CPUUtilization", "Namespace": "AWS/EC2",
            "Statistic": "Average", "Dimensions": [{"Name": "AutoScalingGroupName", "Value": group}],
            "Period": 60, "EvaluationPeriods": 2, "Threshold": 70.0, "ComparisonOperator": "GreaterThanThreshold",
            "Metrics": [], **extra}


def pair(green_policies=(), alarms=(), blue_tags=None):
    blue = group_record("blue", (3, 3, 6), ids("b", 3), tags=blue_tags)
    green = group_record("green", (0, 0, 0))
    return snapshot(blue, green, {"blue": [step_policy(OLD, "demo-blue")], "green": list(green_policies)},
                    {"blue": [], "green": []}, alarms=list(alarms))


def test_an_alarm_of_a_step_policy_is_copied_with_its_dimension_and_actions_rewritten():
    snap = pair([step_policy(NEW, "demo-green")], [alarm("cpu-high", "demo-blue", [OLD, TOPIC]),
                                                   alarm("unrelated", "demo-blue", [TOPIC])])
    (call,) = alarm_copies(snap, "blue", "green")
    assert call.op == "PutMetricAlarm"
    assert call.params["AlarmName"] == "cpu-high--bluegreen-demo-green"
    assert call.params["AlarmActions"] == [NEW, TOPIC]
    assert call.params["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "demo-green"}]
    assert "Metrics" not in call.params and "StateValue" not in call.params and "AlarmArn" not in call.params


def test_a_metric_math_alarm_has_the_group_rewritten_in_every_query():
    query = {"Id": "m1", "ReturnData": True, "MetricStat": {"Stat": "Sum", "Period": 60, "Metric": {
        "Namespace": "App", "MetricName": "Errors", "Dimensions": [{"Name": "AutoScalingGroupName",
                                                                     "Value": "demo-blue"}]}}}
    math = alarm("errors", "demo-blue", [OLD], Metrics=[query], Dimensions=[])
    snap = pair([step_policy(NEW, "demo-green")], [math])
    (call,) = alarm_copies(snap, "blue", "green")
    assert call.params["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "AutoScalingGroupName", "Value": "demo-green"}]


def test_a_copy_already_in_place_costs_no_call_and_a_copy_of_a_copy_is_named_from_the_original():
    copy = alarm("cpu-high--bluegreen-demo-green", "demo-green", [NEW, TOPIC])
    snap = pair([step_policy(NEW, "demo-green")], [alarm("cpu-high", "demo-blue", [OLD, TOPIC]), copy])
    assert alarm_copies(snap, "blue", "green") == []
    assert copy_name("cpu-high--bluegreen-demo-green", "demo-blue") == "cpu-high--bluegreen-demo-blue"


def test_only_the_tools_copies_for_the_group_are_deleted_and_the_operators_alarms_are_named():
    snap = pair([step_policy(NEW, "demo-green")], [
        alarm("cpu-high", "demo-blue", [OLD]), alarm("own-green", "demo-green", [NEW]),
        alarm("cpu-high--bluegreen-demo-green", "demo-green", [NEW]),
        alarm("cpu-high--bluegreen-demo-blue", "demo-blue", [OLD])])
    assert [c.params for c in alarm_deletions(snap, "green")] == [{"AlarmNames": ["cpu-high--bluegreen-demo-green"]}]
    assert left_without_action(snap, "blue") == ["cpu-high"]


def test_a_customized_target_tracking_metric_is_copied_watching_the_new_group():
    tracking = {"PolicyName": "errors", "PolicyType": "TargetTrackingScaling", "TargetTrackingConfiguration": {
        "TargetValue": 5.0, "CustomizedMetricSpecification": {
            "MetricName": "Errors", "Namespace": "App", "Statistic": "Sum",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "demo-blue"}]}}}
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (0, 0, 0)),
                    {"blue": [tracking], "green": []}, {"blue": [], "green": []})
    (call,) = policy_copies(snap, "blue", "green", NOW)
    spec = call.params["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    assert spec["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "demo-green"}]


def test_deploy_plans_the_alarm_copies_once_the_new_policies_exist():
    rec = record_tag("deploy", "policies")
    before = pair([], [alarm("cpu-high", "demo-blue", [OLD])], blue_tags=rec)
    steps = plan.plan_deploy(before, ctx(me="ci@builder:99"), "2.0")
    at = names(steps).index("copy-policies")
    assert names(steps)[at + 1] == "copy-alarms"
    assert steps[at + 1].calls == () and steps[at + 1].needs == ("policies",)
    after = pair([step_policy(NEW, "demo-green")], [alarm("cpu-high", "demo-blue", [OLD])], blue_tags=rec)
    steps = plan.plan_deploy(after, ctx(me="ci@builder:99"), "2.0")
    (copy,) = steps[names(steps).index("copy-alarms")].calls
    assert copy.params["AlarmActions"] == [NEW]


def test_no_alarm_is_copied_for_the_operators_own_same_name_policy_on_the_new_group():
    # The operator's "out" on green (an IaC declaring it on both groups) is kept, not overwritten (policies.py):
    # its own alarms act on it, and a copy would make the policy act twice per breach.
    snap = pair([step_policy(NEW, "demo-green", name="out")], [alarm("cpu-high", "demo-blue", [OLD])])
    assert policy_copies(snap, "blue", "green", NOW) == []
    assert alarm_copies(snap, "blue", "green") == []


def test_the_alarms_read_are_those_the_step_and_simple_policies_list():
    policies = [dict(step_policy(OLD, "demo-blue"), Alarms=[{"AlarmName": "cpu-high", "AlarmARN": "a"}]),
                {"PolicyName": "tt", "PolicyType": "TargetTrackingScaling",
                 "Alarms": [{"AlarmName": "TargetTracking-demo-blue-AlarmHigh-1", "AlarmARN": "b"}]}]
    assert linked_alarm_names(policies) == {"cpu-high"}  # target tracking owns its alarms (W1)


def test_a_copy_name_past_255_characters_is_reported_with_its_length():
    assert too_long(["a" * 200, "short"], "demo-green") == []
    assert too_long(["a" * 240, "short"], "demo-green") == [("a" * 240, 240 + len("--bluegreen-demo-green"))]


def test_alarms_are_read_by_name_100_a_call_never_the_whole_region(make_harness):
    from deployer.aws import DeployerAws

    fleet = make_harness(capacity=1)
    cw = fleet.session.client("cloudwatch")
    for n in range(230):
        cw.put_metric_alarm(AlarmName=f"a{n:03}", Namespace="App", MetricName="M", Statistic="Sum", Period=60,
                            EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    asked = []
    cw.meta.events.register("provide-client-params.cloudwatch.DescribeAlarms",
                            lambda params, **_: asked.append(params.get("AlarmNames")))
    aws = DeployerAws(*(fleet.session.client(s) for s in ("autoscaling", "elbv2", "elb", "ec2")), cloudwatch=cw)
    wanted = [f"a{n:03}" for n in range(0, 230, 2)] + ["gone"]  # 115 names and one that does not exist
    got = aws.describe_alarms(wanted)
    assert sorted(a["AlarmName"] for a in got) == sorted(wanted[:-1])
    assert [len(names) for names in asked] == [100, 16]
