"""A7, A8, A9, A11, A12 through boto3 over HTTP."""

from __future__ import annotations

import datetime

import boto3
import pytest
from botocore.exceptions import ClientError

from localcloud.aws.autoscaling import LAUNCH_SECONDS, TAG_PROPAGATION_SECONDS
from tests.helpers import wait_until
from tests.localcloud.support import aws_error, matching


def test_a7_policies_with_the_same_name_belong_to_each_group(world):
    world.group("blue", desired=0)
    world.group("green", desired=0)
    for group, adjustment in (("blue", 1), ("green", 2)):
        world.asg.put_scaling_policy(AutoScalingGroupName=group, PolicyName="scale-out",
                                     AdjustmentType="ChangeInCapacity", ScalingAdjustment=adjustment)
    got = {p["AutoScalingGroupName"]: p["ScalingAdjustment"]
           for p in world.asg.describe_policies()["ScalingPolicies"]}
    assert got == {"blue": 1, "green": 2}
    world.asg.delete_policy(AutoScalingGroupName="blue", PolicyName="scale-out")
    left = world.asg.describe_policies()["ScalingPolicies"]
    assert [(p["AutoScalingGroupName"], p["PolicyName"]) for p in left] == [("green", "scale-out")]
    world.asg.execute_policy(AutoScalingGroupName="green", PolicyName="scale-out")
    assert world.describe("green")["DesiredCapacity"] == 2
    assert world.asg.describe_policies(AutoScalingGroupName="blue")["ScalingPolicies"] == []


def step_policies(world):
    """Groups blue and green, each with a step policy `out` (W1); the CloudWatch client and the policies' ARNs."""
    world.group("blue", desired=0)
    world.group("green", desired=0)
    for group in ("blue", "green"):
        world.asg.put_scaling_policy(AutoScalingGroupName=group, PolicyName="out", PolicyType="StepScaling",
                                     AdjustmentType="ChangeInCapacity",
                                     StepAdjustments=[{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}])
    arns = {p["AutoScalingGroupName"]: p["PolicyARN"] for p in world.asg.describe_policies()["ScalingPolicies"]}
    return boto3.client("cloudwatch"), arns


def test_w1_delete_policy_strips_the_alarm_action_and_keeps_the_alarm(world):
    cw, arns = step_policies(world)
    topic = "arn:aws:sns:us-east-1:123456789012:pager"
    for group in ("blue", "green"):
        cw.put_metric_alarm(AlarmName=f"cpu-{group}", Namespace="AWS/EC2", MetricName="CPUUtilization",
                            Statistic="Average", Period=60, EvaluationPeriods=2, Threshold=70,
                            ComparisonOperator="GreaterThanThreshold", AlarmActions=[arns[group], topic],
                            OKActions=[arns[group]],
                            Dimensions=[{"Name": "AutoScalingGroupName", "Value": group}])
    world.asg.delete_policy(AutoScalingGroupName="blue", PolicyName="out")
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert (alarms["cpu-blue"]["AlarmActions"], alarms["cpu-blue"]["OKActions"]) == ([topic], [])
    assert alarms["cpu-green"]["AlarmActions"] == [arns["green"], topic]


def test_w1_describe_policies_lists_the_alarms_acting_on_each_policy(world):
    cw, arns = step_policies(world)
    alarm = {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization", "Statistic": "Average", "Period": 60,
             "EvaluationPeriods": 2, "Threshold": 70, "ComparisonOperator": "GreaterThanThreshold"}
    cw.put_metric_alarm(AlarmName="cpu-blue", AlarmActions=[arns["blue"]], **alarm)
    cw.put_metric_alarm(AlarmName="ok-only", OKActions=[arns["blue"]], **alarm)  # the narrower reading: not listed
    cw.put_metric_alarm(AlarmName="unrelated", **alarm)

    def listed(group):
        (pol,) = world.asg.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
        return pol.get("Alarms", [])

    (entry,) = listed("blue")
    assert entry["AlarmName"] == "cpu-blue" and entry["AlarmARN"].endswith(":alarm:cpu-blue")
    assert listed("green") == []
    cw.delete_alarms(AlarmNames=["cpu-blue"])
    assert listed("blue") == []


def test_a7_scheduled_actions_with_the_same_name_belong_to_each_group(world):
    world.group("blue", desired=0)
    world.group("green", desired=0)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    for group in ("blue", "green"):
        world.asg.put_scheduled_update_group_action(AutoScalingGroupName=group, ScheduledActionName="night",
                                                    StartTime=later, DesiredCapacity=1)
    world.asg.delete_scheduled_action(AutoScalingGroupName="blue", ScheduledActionName="night")
    left = world.asg.describe_scheduled_actions()["ScheduledUpdateGroupActions"]
    assert [(a["AutoScalingGroupName"], a["ScheduledActionName"]) for a in left] == [("green", "night")]


def test_a7_the_layer_indexes_per_group_and_moto_keeps_its_own_keys(world):
    """moto's dicts stay keyed by name as moto types them; the layer's index in LayerState is per group."""
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    for group in ("blue", "green"):
        world.group(group, desired=0)
        world.asg.put_scaling_policy(AutoScalingGroupName=group, PolicyName="scale-out",
                                     AdjustmentType="ChangeInCapacity", ScalingAdjustment=1)
        world.asg.put_scheduled_update_group_action(AutoScalingGroupName=group, ScheduledActionName="night",
                                                    StartTime=later, DesiredCapacity=1)
    (backend,) = world.cloud.state.backends
    assert list(backend.policies) == ["scale-out"] and list(backend.scheduled_actions) == ["night"]
    world.asg.delete_policy(AutoScalingGroupName="green", PolicyName="scale-out")
    assert backend.policies["scale-out"].auto_scaling_group_name == "blue"  # the namesake that is left
    world.asg.batch_delete_scheduled_action(AutoScalingGroupName="green", ScheduledActionNames=["night"])
    left = world.asg.describe_scheduled_actions()["ScheduledUpdateGroupActions"]
    assert [(a["AutoScalingGroupName"], a["ScheduledActionName"]) for a in left] == [("blue", "night")]
    assert backend.scheduled_actions["night"].auto_scaling_group_name == "blue"
    world.asg.delete_scheduled_action(AutoScalingGroupName="blue", ScheduledActionName="night")
    assert (len(world.cloud.state.scheduled_actions), backend.scheduled_actions) == (0, {})


def test_a8_suspended_launch_and_add_to_load_balancer(world, stopped_clock):
    tg = world.target_group()
    world.group("blue", desired=0, target_groups=(tg,))
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["Launch"])
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=1)
    assert world.states("blue") == {}
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["AddToLoadBalancer"])
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["Launch"])
    stopped_clock.advance(LAUNCH_SECONDS)
    ids = world.in_service("blue", 1)
    assert world.health(tg) == {}  # launched while AddToLoadBalancer was suspended: not registered
    world.asg.resume_processes(AutoScalingGroupName="blue", ScalingProcesses=["AddToLoadBalancer"])
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=2)
    stopped_clock.advance(LAUNCH_SECONDS)
    both = world.in_service("blue", 2)
    assert world.health(tg) == {i: "initial" for i in both if i not in ids}


def test_a8_suspended_terminate_and_scheduled_actions(world):
    world.group("blue", desired=1)
    world.wait_in_service("blue", 1)
    world.asg.suspend_processes(AutoScalingGroupName="blue", ScalingProcesses=["Terminate", "ScheduledActions"])
    world.asg.set_desired_capacity(AutoScalingGroupName="blue", DesiredCapacity=0)
    now = datetime.datetime.now(datetime.timezone.utc)
    world.asg.put_scheduled_update_group_action(AutoScalingGroupName="blue", ScheduledActionName="now",
                                                StartTime=now, DesiredCapacity=3)
    world.cloud.tick()
    assert list(world.states("blue").values()) == ["InService"]
    assert world.describe("blue")["DesiredCapacity"] == 0
    world.asg.resume_processes(AutoScalingGroupName="blue")
    wait_until(matching(lambda: world.states("blue"), lambda s: s == {}), "scale-in after Terminate resumed", 5)


def test_a8_scheduled_action_runs_at_its_start_time(world):
    world.group("blue", desired=0)
    world.asg.put_scheduled_update_group_action(AutoScalingGroupName="blue", ScheduledActionName="now",
                                                StartTime=datetime.datetime.now(datetime.timezone.utc),
                                                MinSize=1, DesiredCapacity=2)
    group = wait_until(matching(lambda: world.describe("blue"), lambda g: g["DesiredCapacity"] == 2),
                       "scheduled action run")
    assert group["MinSize"] == 1
    assert world.asg.describe_scheduled_actions(AutoScalingGroupName="blue")["ScheduledUpdateGroupActions"] == []


def test_a9_describe_calls_page_with_the_real_sizes(world):
    for n in range(3):
        world.group(f"g{n}", desired=0, Tags=[{"Key": f"k{k}", "Value": "v", "PropagateAtLaunch": False}
                                             for k in range(40)])
    with pytest.raises(ClientError) as excinfo:
        world.asg.describe_auto_scaling_groups(MaxRecords=101)
    assert aws_error(excinfo)[0] == "ValidationError"
    first = world.asg.describe_tags()
    assert len(first["Tags"]) == 50 and "NextToken" in first
    pages = list(world.asg.get_paginator("describe_tags").paginate(PaginationConfig={"PageSize": 100}))
    assert [len(p["Tags"]) for p in pages] == [100, 20]
    groups = list(world.asg.get_paginator("describe_auto_scaling_groups").paginate(PaginationConfig={"PageSize": 2}))
    assert [[g["AutoScalingGroupName"] for g in p["AutoScalingGroups"]] for p in groups] == [["g0", "g1"], ["g2"]]
    with pytest.raises(ClientError) as excinfo:
        world.asg.describe_auto_scaling_instances(MaxRecords=51)
    assert aws_error(excinfo)[0] == "ValidationError"


def test_a9_describe_auto_scaling_instances_pages_of_50(world):
    world.group("big", desired=60, max_size=60)
    pages = list(world.asg.get_paginator("describe_auto_scaling_instances").paginate())
    assert [len(p["AutoScalingInstances"]) for p in pages] == [50, 10]


@pytest.mark.parametrize("call", [
    lambda asg: asg.set_desired_capacity(AutoScalingGroupName="nope", DesiredCapacity=1),
    lambda asg: asg.enter_standby(AutoScalingGroupName="nope", InstanceIds=["i-1"],
                                  ShouldDecrementDesiredCapacity=True),
    lambda asg: asg.exit_standby(AutoScalingGroupName="nope", InstanceIds=["i-1"]),
    lambda asg: asg.detach_instances(AutoScalingGroupName="nope", InstanceIds=["i-1"],
                                     ShouldDecrementDesiredCapacity=False),
    lambda asg: asg.suspend_processes(AutoScalingGroupName="nope"),
    lambda asg: asg.update_auto_scaling_group(AutoScalingGroupName="nope", MaxSize=1),
    lambda asg: asg.delete_auto_scaling_group(AutoScalingGroupName="nope"),
    lambda asg: asg.terminate_instance_in_auto_scaling_group(InstanceId="i-1", ShouldDecrementDesiredCapacity=True),
    lambda asg: asg.delete_policy(AutoScalingGroupName="nope", PolicyName="p"),
    lambda asg: asg.create_or_update_tags(Tags=[{"ResourceId": "nope", "ResourceType": "auto-scaling-group",
                                                 "Key": "k", "Value": "v", "PropagateAtLaunch": False}]),
])
def test_a11_unknown_groups_are_validation_errors_not_500(world, call):
    with pytest.raises(ClientError) as excinfo:
        call(world.asg)
    assert aws_error(excinfo)[0] == "ValidationError"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a11_create_twice_is_already_exists_and_delete_with_instances_needs_force(world):
    world.group("blue", desired=1)
    with pytest.raises(ClientError) as excinfo:
        world.group("blue", desired=1)
    assert aws_error(excinfo)[0] == "AlreadyExists"
    with pytest.raises(ClientError) as excinfo:
        world.asg.delete_auto_scaling_group(AutoScalingGroupName="blue")
    assert aws_error(excinfo)[0] == "ResourceInUse"
    ids = list(world.states("blue"))
    world.asg.delete_auto_scaling_group(AutoScalingGroupName="blue", ForceDelete=True)
    assert world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["blue"])["AutoScalingGroups"] == []
    inst = world.ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "terminated"


def test_a12_tag_limits_and_reserved_prefix(world):
    world.group("blue", desired=0)

    def tag(key, value="v"):
        return {"ResourceId": "blue", "ResourceType": "auto-scaling-group", "Key": key, "Value": value,
                "PropagateAtLaunch": True}

    for bad in ([tag("aws:x")], [tag("k" * 129)], [tag("k", "v" * 257)], [tag(f"k{n}") for n in range(51)]):
        with pytest.raises(ClientError) as excinfo:
            world.asg.create_or_update_tags(Tags=bad)
        assert aws_error(excinfo)[0] == "ValidationError"
    world.asg.create_or_update_tags(Tags=[tag("bluegreen:version", "1.2.3")])
    tags = world.asg.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": ["blue"]}])["Tags"]
    assert [(t["Key"], t["Value"]) for t in tags] == [("bluegreen:version", "1.2.3")]


def test_a12_propagated_tags_reach_the_instance_only_after_a_while(world, stopped_clock):
    world.group("blue", desired=1, Tags=[{"Key": "bluegreen:version", "Value": "2.0", "PropagateAtLaunch": True}])
    iid = next(iter(world.states("blue")))

    def instance_tags():
        inst = world.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}

    assert {"aws:autoscaling:groupName", "bluegreen:version"}.isdisjoint(instance_tags())
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": "bluegreen:version", "Value": "1.0"}])
    stopped_clock.advance(TAG_PROPAGATION_SECONDS - 1)
    assert "aws:autoscaling:groupName" not in instance_tags()
    stopped_clock.advance(1)
    tags = instance_tags()
    assert tags["aws:autoscaling:groupName"] == "blue"
    assert tags["bluegreen:version"] == "1.0"  # set on the instance after launch: it stays
