"""moto's CloudFormation through the fidelity layer (localcloud/aws/cfn.py): a stack's groups and target groups
obey the same rules as those made by API calls, a stack update changes a group in place (X3a,
docs/localcloud.md), and the resource types the service template uses exist.

Each stack here is a small template of the resource types infra/cloudformation/service.yaml uses, made
through boto3's CloudFormation client over HTTP, as `bluegreen-localcloud up` makes the fleet's.
"""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.helpers import wait_until
from tests.localcloud.support import NO_RETRIES, World, aws_error

HOOK = "launch-hook"


def template(world: World, *, min_size: int = 0, max_size: int = 4, desired: int | None = None,
             tags: dict[str, str] | None = None, update_policy: bool = False, hook: bool = True,
             instance_type: str = "t3.micro", extra: dict | None = None) -> str:
    """One target group and one group on the world's VPC, the group's launch template a resource whose
    version the group names through GetAtt (as the service template does)."""
    group = {
        "Type": "AWS::AutoScaling::AutoScalingGroup",
        "Properties": {
            "AutoScalingGroupName": "svc-blue", "MinSize": str(min_size), "MaxSize": str(max_size),
            "VPCZoneIdentifier": [world.subnet], "HealthCheckType": "ELB", "HealthCheckGracePeriod": 60,
            "TargetGroupARNs": [{"Ref": "TargetGroup"}],
            "LaunchTemplate": {"LaunchTemplateId": {"Ref": "LaunchTemplate"},
                               "Version": {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}},
            "Tags": [{"Key": k, "Value": v, "PropagateAtLaunch": True}
                     for k, v in (tags or {"bluegreen:service": "svc", "bluegreen:color": "blue"}).items()],
        },
    }
    if desired is not None:
        group["Properties"]["DesiredCapacity"] = str(desired)
    if hook:
        group["Properties"]["LifecycleHookSpecificationList"] = [{
            "LifecycleHookName": HOOK, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "HeartbeatTimeout": 300, "DefaultResult": "ABANDON"}]
    if update_policy:
        group["UpdatePolicy"] = {"AutoScalingScheduledAction": {"IgnoreUnmodifiedGroupSizeProperties": True}}
    resources = {
        "TargetGroup": {"Type": "AWS::ElasticLoadBalancingV2::TargetGroup", "Properties": {
            "Name": "svc-tg", "Protocol": "HTTP", "Port": 8080, "VpcId": world.vpc, "TargetType": "instance",
            "HealthCheckPath": "/health", "HealthCheckIntervalSeconds": 5, "HealthyThresholdCount": 2,
            "UnhealthyThresholdCount": 2,
            "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "15"}]}},
        "LaunchTemplate": {"Type": "AWS::EC2::LaunchTemplate", "Properties": {
            "LaunchTemplateName": "svc-lt",
            "LaunchTemplateData": {"ImageId": "ami-12c6146b", "InstanceType": instance_type,
                                   "UserData": {"Fn::Base64": {"Fn::Sub": "#!/bin/sh\necho ${AWS::Region} ${!HOME}\n"}}}}},
        "Group": group,
        **(extra or {}),
    }
    return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources})


@pytest.fixture
def cfn(aws):
    return boto3.client("cloudformation", config=NO_RETRIES)


def test_a_stack_group_gets_its_hooks_and_its_first_instance_waits_in_pending_wait(world, cfn, stopped_clock):
    """A19/A6: LifecycleHookSpecificationList creates the hook before the first launch (moto 5.2.1's
    CloudFormation ignores the property), so the stack's first instance waits outside the target group."""
    cfn.create_stack(StackName="svc", TemplateBody=template(world, min_size=1))
    hooks = world.asg.describe_lifecycle_hooks(AutoScalingGroupName="svc-blue")["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["HeartbeatTimeout"], h["DefaultResult"]) for h in hooks] == [
        (HOOK, 300, "ABANDON")]
    stopped_clock.advance(60)
    [(iid, state)] = world.states("svc-blue").items()
    assert state == "Pending:Wait"
    tg = world.elbv2.describe_target_groups(Names=["svc-tg"])["TargetGroups"][0]["TargetGroupArn"]
    assert world.health(tg) == {}
    world.asg.complete_lifecycle_action(AutoScalingGroupName="svc-blue", LifecycleHookName=HOOK,
                                        InstanceId=iid, LifecycleActionResult="CONTINUE")
    stopped_clock.advance(3)
    assert world.health(tg) == {iid: "initial"}  # E1: the stack's target group counts its checks
    stopped_clock.advance(10)
    assert world.health(tg) == {iid: "healthy"}


def test_a_stack_target_group_keeps_its_attributes_and_drains_for_them(world, cfn, stopped_clock):
    """TargetGroupAttributes (moto drops them) reach the target group: a scaled-in instance drains 15 s (E2)."""
    cfn.create_stack(StackName="svc", TemplateBody=template(world, min_size=1, hook=False))
    tg = world.elbv2.describe_target_groups(Names=["svc-tg"])["TargetGroups"][0]["TargetGroupArn"]
    attributes = {a["Key"]: a["Value"] for a in world.elbv2.describe_target_group_attributes(
        TargetGroupArn=tg)["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "15"
    stopped_clock.advance(60)
    [iid] = world.in_service("svc-blue", 1)
    world.asg.update_auto_scaling_group(AutoScalingGroupName="svc-blue", MinSize=0, DesiredCapacity=0)
    stopped_clock.advance(10)
    assert world.health(tg) == {iid: "draining"}
    stopped_clock.advance(10)
    assert world.health(tg) == {}


def test_a_stack_group_obeys_the_standby_rules_and_a_refused_stack_leaves_nothing(world, cfn, stopped_clock):
    cfn.create_stack(StackName="svc", TemplateBody=template(world, min_size=2, hook=False))
    stopped_clock.advance(60)
    ids = world.in_service("svc-blue", 2)
    with pytest.raises(ClientError) as refused:  # A1: not below MinSize with decrement
        world.asg.enter_standby(AutoScalingGroupName="svc-blue", InstanceIds=ids[:1],
                                ShouldDecrementDesiredCapacity=True)
    assert aws_error(refused)[0] == "ValidationError"
    with pytest.raises(ClientError) as too_many:  # A1: at most 20 ids
        world.asg.enter_standby(AutoScalingGroupName="svc-blue", InstanceIds=ids * 11,
                                ShouldDecrementDesiredCapacity=False)
    assert "limited to 20" in aws_error(too_many)[1]
    with pytest.raises(ClientError):  # A5: MinSize above MaxSize is refused, as CreateAutoScalingGroup refuses it
        cfn.create_stack(StackName="bad", TemplateBody=template(world, min_size=5, max_size=1).replace(
            "svc-blue", "svc-bad").replace("svc-tg", "bad-tg").replace("svc-lt", "bad-lt"))
    assert world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["svc-bad"])["AutoScalingGroups"] == []
    assert world.asg.describe_lifecycle_hooks(AutoScalingGroupName="svc-blue")["LifecycleHooks"] == []


def test_x1_tag_delay_applies_to_a_stack_groups_instances(world, cfn, stopped_clock):
    cfn.create_stack(StackName="svc", TemplateBody=template(world, min_size=1, hook=False))
    stopped_clock.advance(60)
    [iid] = world.in_service("svc-blue", 1)
    world.cloud.configure_faults(tag_visibility_delay_s=30)
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": "seen", "Value": "yes"}])
    seen = lambda: {t["Key"] for t in world.ec2.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
    assert "seen" not in seen()
    stopped_clock.advance(31)
    assert "seen" in seen()


def _group(world: World) -> dict:
    return world.describe("svc-blue")


def test_a_stack_update_changes_the_group_in_place(world, cfn, stopped_clock):
    """X3a: a new instance type makes a new launch template version, and the group takes it IN PLACE: same
    instances, the desired capacity the template does not declare untouched, foreign tags kept, a tag the
    template stops declaring removed. Without IgnoreUnmodifiedGroupSizeProperties MinSize/MaxSize return to
    the template's values."""
    tags = {"bluegreen:service": "svc", "bluegreen:color": "blue", "owner": "team-a"}
    cfn.create_stack(StackName="svc", TemplateBody=template(world, tags=tags, hook=False))
    world.asg.update_auto_scaling_group(AutoScalingGroupName="svc-blue", MinSize=2, MaxSize=6, DesiredCapacity=2)
    world.asg.create_or_update_tags(Tags=[{"ResourceId": "svc-blue", "ResourceType": "auto-scaling-group",
                                           "Key": "bluegreen:version", "Value": "1.0", "PropagateAtLaunch": True}])
    stopped_clock.advance(60)
    ids = world.in_service("svc-blue", 2)
    assert _group(world)["LaunchTemplate"]["Version"] == "1"

    cfn.update_stack(StackName="svc", TemplateBody=template(
        world, tags={"bluegreen:service": "svc", "bluegreen:color": "blue"}, hook=False, instance_type="t3.small"))
    group = _group(world)
    assert world.in_service("svc-blue", 2) == ids
    assert group["LaunchTemplate"]["Version"] == "2"
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 2, 4)
    tags_now = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags_now == {"bluegreen:service": "svc", "bluegreen:color": "blue", "bluegreen:version": "1.0"}
    versions = world.ec2.describe_launch_template_versions(LaunchTemplateName="svc-lt")["LaunchTemplateVersions"]
    assert {v["VersionNumber"]: v["LaunchTemplateData"]["InstanceType"] for v in versions} == {
        1: "t3.micro", 2: "t3.small"}
    user_data = base64.b64decode(versions[0]["LaunchTemplateData"]["UserData"]).decode()
    assert user_data == "#!/bin/sh\necho us-east-1 ${HOME}\n"  # Fn::Sub, ${!Literal} kept literal


def test_ignore_unmodified_group_size_properties_keeps_the_sizes_the_deployer_set(world, cfn, stopped_clock):
    cfn.create_stack(StackName="svc", TemplateBody=template(world, update_policy=True, hook=False))
    world.asg.update_auto_scaling_group(AutoScalingGroupName="svc-blue", MinSize=2, MaxSize=4, DesiredCapacity=3)
    cfn.update_stack(StackName="svc", TemplateBody=template(world, update_policy=True, hook=False,
                                                           instance_type="t3.small"))
    group = _group(world)
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 3, 4)
    assert group["LaunchTemplate"]["Version"] == "2"
    # A size the template changes is applied, policy or not (A5: the desired capacity follows the bound).
    cfn.update_stack(StackName="svc", TemplateBody=template(world, update_policy=True, hook=False,
                                                           instance_type="t3.small", max_size=2))
    group = _group(world)
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 2, 2)


def test_a_declared_desired_capacity_is_reset_by_every_update(world, cfn, stopped_clock):
    cfn.create_stack(StackName="svc", TemplateBody=template(world, desired=1, hook=False))
    world.asg.set_desired_capacity(AutoScalingGroupName="svc-blue", DesiredCapacity=3)
    cfn.update_stack(StackName="svc", TemplateBody=template(world, desired=1, hook=False, instance_type="t3.small"))
    assert _group(world)["DesiredCapacity"] == 1


def test_deleting_the_stack_drains_the_groups_instances(world, cfn, stopped_clock):
    cfn.create_stack(StackName="svc", TemplateBody=template(world, min_size=1, hook=False))
    stopped_clock.advance(60)
    [iid] = world.in_service("svc-blue", 1)
    tg = world.elbv2.describe_target_groups(Names=["svc-tg"])["TargetGroups"][0]["TargetGroupArn"]
    cfn.update_stack(StackName="svc", TemplateBody=json.dumps({"Resources": {
        "TargetGroup": json.loads(template(world))["Resources"]["TargetGroup"]}}))
    assert world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["svc-blue"])["AutoScalingGroups"] == []
    assert world.health(tg) == {iid: "draining"}  # E2, as when AWS terminates a group's instances
    state = world.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")


def test_bucket_policy_alarm_endpoint_and_iam_resources_exist(world, cfn):
    """The resource types moto's CloudFormation skipped (BucketPolicy, Alarm) and those it has (VPCEndpoint,
    ManagedPolicy, InstanceProfile, LoadBalancer, Listener) as the service template uses them."""
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": "arn:aws:s3:::${Bucket}/*"},
        "Condition": {"StringEquals": {"aws:sourceVpce": {"Ref": "Endpoint"}}}}]}
    extra = {
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "svc-bootstrap"}},
        "Endpoint": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {
            "VpcId": world.vpc, "ServiceName": "com.amazonaws.us-east-1.s3", "VpcEndpointType": "Gateway",
            # moto 5.2.1 fails a gateway endpoint without RouteTableIds (TypeError); AWS allows none
            "RouteTableIds": [world.ec2.describe_route_tables()["RouteTables"][0]["RouteTableId"]]}},
        "BucketPolicy": {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": {"Ref": "Bucket"}, "PolicyDocument": policy}},
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmName": "svc-5xx", "Namespace": "AWS/ApplicationELB", "MetricName": "HTTPCode_Target_5XX_Count",
            "Dimensions": [{"Name": "TargetGroup", "Value": {"Fn::GetAtt": ["TargetGroup", "TargetGroupFullName"]}}],
            "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 5,
            "ComparisonOperator": "GreaterThanThreshold"}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "ec2.amazonaws.com"}}]}}},
        "Profile": {"Type": "AWS::IAM::InstanceProfile", "Properties": {"Roles": [{"Ref": "Role"}]}},
        "DeployerPolicy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "autoscaling:Describe*",
                                                    "Resource": "*"}]}}},
    }
    cfn.create_stack(StackName="svc", TemplateBody=template(world, hook=False, extra=extra),
                     Capabilities=["CAPABILITY_IAM"])
    s3 = boto3.client("s3", config=NO_RETRIES)
    endpoint = world.ec2.describe_vpc_endpoints()["VpcEndpoints"][0]["VpcEndpointId"]
    stored = json.loads(s3.get_bucket_policy(Bucket="svc-bootstrap")["Policy"])
    assert stored["Statement"][0]["Condition"] == {"StringEquals": {"aws:sourceVpce": endpoint}}
    assert stored["Statement"][0]["Resource"] == "arn:aws:s3:::svc-bootstrap/*"
    cloudwatch = boto3.client("cloudwatch", config=NO_RETRIES)
    [alarm] = cloudwatch.describe_alarms(AlarmNames=["svc-5xx"])["MetricAlarms"]
    assert alarm["Threshold"] == 5.0 and alarm["Dimensions"][0]["Name"] == "TargetGroup"
    iam = boto3.client("iam", config=NO_RETRIES)
    assert len(iam.list_instance_profiles()["InstanceProfiles"]) == 1
    assert [p for p in iam.list_policies(Scope="Local")["Policies"]]
    cfn.delete_stack(StackName="svc")
    assert cloudwatch.describe_alarms(AlarmNames=["svc-5xx"])["MetricAlarms"] == []
    assert wait_until(lambda: not world.asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=["svc-blue"])["AutoScalingGroups"], "the stack's group deleted", 5)


def test_a_rolling_update_policy_is_refused_rather_than_ignored(world, cfn):
    """AutoScalingRollingUpdate replaces a group's instances on a launch template change; the emulator does not
    model it, so an update that would need it fails (UPDATE_ROLLBACK in AWS terms) instead of passing quietly."""
    cfn.create_stack(StackName="svc", TemplateBody=template(world, hook=False))
    rolling = json.loads(template(world, hook=False, instance_type="t3.small"))
    rolling["Resources"]["Group"]["UpdatePolicy"] = {"AutoScalingRollingUpdate": {"MaxBatchSize": 1}}
    with pytest.raises(ClientError) as refused:
        cfn.update_stack(StackName="svc", TemplateBody=json.dumps(rolling))
    assert "AutoScalingRollingUpdate" in aws_error(refused)[1]
    assert _group(world)["LaunchTemplate"]["Version"] == "1"


def test_a_target_group_is_updated_in_place(world, cfn):
    """Health check settings and attributes change on the same target group (moto had no update at all); a new
    Port, which AWS answers with a replacement, is refused rather than half done."""
    cfn.create_stack(StackName="svc", TemplateBody=template(world, hook=False))
    arn = world.elbv2.describe_target_groups(Names=["svc-tg"])["TargetGroups"][0]["TargetGroupArn"]
    changed = json.loads(template(world, hook=False))
    tg = changed["Resources"]["TargetGroup"]["Properties"]
    tg.update(HealthCheckIntervalSeconds=10, TargetGroupAttributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"}])
    cfn.update_stack(StackName="svc", TemplateBody=json.dumps(changed))
    [now] = world.elbv2.describe_target_groups(Names=["svc-tg"])["TargetGroups"]
    assert now["TargetGroupArn"] == arn and now["HealthCheckIntervalSeconds"] == 10
    attributes = {a["Key"]: a["Value"] for a in world.elbv2.describe_target_group_attributes(
        TargetGroupArn=arn)["Attributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "30"
    tg["Port"] = 9090
    with pytest.raises(ClientError) as refused:
        cfn.update_stack(StackName="svc", TemplateBody=json.dumps(changed))
    assert "not modelled" in aws_error(refused)[1]


def test_a_yaml_condition_naming_another_condition(world, cfn):
    """`!Condition` inside `!And` (YAML's short form, as the service template writes MakeEndpoint): moto read it
    as an unknown function, so the condition was false and its resources silently skipped."""
    body = """
Parameters:
  Make: {Type: String, Default: "true"}
Conditions:
  First: !Equals [!Ref Make, "true"]
  Both: !And [!Condition First, !Not [!Equals [!Ref Make, "false"]]]
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Condition: Both
    Properties: {BucketName: conditional-bucket}
"""
    cfn.create_stack(StackName="cond", TemplateBody=body)
    buckets = boto3.client("s3", config=NO_RETRIES).list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == ["conditional-bucket"]
