"""infra/cloudformation/service.yaml (issue 15): current with its sources, cfn-lint clean, its IAM equal to iam/*.json,
its user-data the one `bluegreen user-data` renders, and the pair it makes in the emulator as the deployer needs."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import boto3
import pytest
from cfnlint.decode import decode_str

from agent.contract import OWNER_TEMPLATE, REGISTRY, TAG_LIFECYCLE_HOOK, TAG_STATE, TAG_VERSION
from deployer import cli
from tests.deployer.stack import BUCKET, ROOT, TEMPLATE, create_stack, parameters, resource, template_body

SCRIPT = os.path.join(ROOT, "scripts", "render-template.py")


def load_script():
    spec = importlib.util.spec_from_file_location("render_template", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template():
    doc, problems = decode_str(template_body())
    assert not problems, problems
    return doc


# ---- one source ---------------------------------------------------------------------------------------------


def test_the_committed_template_is_what_the_generator_makes_of_its_sources():
    out = subprocess.run([sys.executable, SCRIPT, "--check"], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cfn_lint_passes():
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cfn-lint"), TEMPLATE],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# iam/*.json's example values, from what the template puts in their place (the reverse of the generator's mapping,
# written out here on its own so that a wrong mapping there fails here).
EXAMPLE = {"${ServiceName}": "demo", "${BucketName}": BUCKET, "${AWS::AccountId}": "123456789012",
           "${AWS::Partition}": "aws", "${!": "${"}


def as_example(value):
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        assert isinstance(text, str), value
        for placeholder, example in EXAMPLE.items():
            text = text.replace(placeholder, example)
        assert "${" not in text.replace("${ec2:InstanceID}", ""), text
        return text
    if isinstance(value, dict):
        return {k: as_example(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_example(v) for v in value]
    return value


@pytest.mark.parametrize("logical_id,policy", [("InstanceRole", "agent-policy.json"),
                                               ("DeployerPolicy", "deployer-policy.json")])
def test_the_templates_iam_equals_iam_json(logical_id, policy):
    props = template()["Resources"][logical_id]["Properties"]
    doc = props["Policies"][0]["PolicyDocument"] if logical_id == "InstanceRole" else props["PolicyDocument"]
    with open(os.path.join(ROOT, "iam", policy)) as f:
        expected = json.load(f)
    assert json.loads(json.dumps(as_example(doc))) == expected


def test_the_generator_keeps_iam_variables_literal_and_refuses_a_stray_dollar():
    render = load_script()
    mapped = render.map_value({"Resource": "arn:aws:ec2:*:*:instance/${ec2:InstanceID}", "Sid": "demo-x"})
    assert mapped == {"Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:*:*:instance/${!ec2:InstanceID}"},
                      "Sid": {"Fn::Sub": "${ServiceName}-x"}}
    source = "Resources:\n  X:\n    UserData: {{user-data}}\n"
    with pytest.raises(render.RenderError, match="not the ones mapped here"):
        render.render(source, "#cloud-config\na: ${COMPOSE_PROJECT}\nb: ${EXTRA}\n")
    with pytest.raises(Exception, match="dollar sign that is not a"):
        render.render(source, "#cloud-config\na: $HOME\n")


# ---- what the template declares (X3) -----------------------------------------------------------------------


def test_the_groups_are_symmetric_and_declare_only_what_the_template_owns():
    resources = template()["Resources"]
    blue, green = (json.loads(json.dumps(resources[n])) for n in ("BlueGroup", "GreenGroup"))
    assert re.sub(r"\bblue\b|Blue", "C", json.dumps(blue)) == re.sub(r"\bgreen\b|Green", "C", json.dumps(green))
    props = blue["Properties"]
    assert "DesiredCapacity" not in props and props["MinSize"] == "0" and props["MaxSize"] == {"Ref": "MaxSize"}
    assert props["HealthCheckType"] == "ELB"
    assert blue["UpdatePolicy"]["AutoScalingScheduledAction"]["IgnoreUnmodifiedGroupSizeProperties"] is True
    keys = {t["Key"]: t for t in props["Tags"]}
    assert TAG_VERSION not in keys
    assert all(REGISTRY[k].owner == OWNER_TEMPLATE for k in keys), keys
    assert {k: t["PropagateAtLaunch"] for k, t in keys.items()} == {k: REGISTRY[k].propagate for k in keys}
    hook = props["LifecycleHookSpecificationList"]
    assert [h["LifecycleTransition"] for h in hook] == ["autoscaling:EC2_INSTANCE_LAUNCHING"]
    assert keys[TAG_LIFECYCLE_HOOK]["Value"] == hook[0]["LifecycleHookName"] and hook[0]["DefaultResult"] == "ABANDON"


# ---- in the emulator --------------------------------------------------------------------------------------


def user_data_of(session, stack):
    ec2 = session.client("ec2")
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=resource(session, stack, "LaunchTemplate"))
    return base64.b64decode(versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]).decode()


def bluegreen_user_data(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["user-data", *argv], environ={}) == 0
    return out.getvalue()


@pytest.mark.parametrize("unsigned", ["false", "true"])
def test_cloudformation_and_bluegreen_user_data_render_the_same_text(aws, unsigned):
    session = boto3.session.Session()
    create_stack(session, params=parameters(session, S3Unsigned=unsigned))
    ours = bluegreen_user_data("--compose-project", "demo", "--bucket", BUCKET,
                               *(["--s3-unsigned"] if unsigned == "true" else []))
    assert user_data_of(session, "demo") == ours
    assert f"s3_unsigned: {unsigned}\n" in ours


def group_records(session):
    asg = session.client("autoscaling")
    return {g["AutoScalingGroupName"]: g for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}


@pytest.mark.parametrize("existing_tg,create_bucket", [(False, "true"), (True, "false"), (False, "false"),
                                                       (True, "true")])
def test_the_stack_makes_the_pair_for_each_parameter_combination(aws, existing_tg, create_bucket):
    session = boto3.session.Session()
    params = parameters(session, CreateBucket=create_bucket)
    s3 = session.client("s3")
    if create_bucket == "false":
        s3.create_bucket(Bucket=BUCKET)  # the user's own
    if existing_tg:
        tg = session.client("elbv2").create_target_group(Name="theirs", Protocol="HTTP", Port=8080,
                                                         VpcId=params["VpcId"])["TargetGroups"][0]["TargetGroupArn"]
        params["ExistingTargetGroupArn"] = tg
    outputs = create_stack(session, params=params)
    cfn = session.client("cloudformation")
    made = {r.get("LogicalResourceId") for r in cfn.describe_stack_resources(StackName="demo")["StackResources"]}
    assert {"LoadBalancer", "TargetGroup", "Listener", "LoadBalancerSecurityGroup"} & made == \
        (set() if existing_tg else {"LoadBalancer", "TargetGroup", "Listener", "LoadBalancerSecurityGroup"})
    # (the endpoint and the bucket policy: test_the_bucket_policy_admits_the_stacks_endpoint)
    assert {"Bucket"} & made == ({"Bucket"} if create_bucket == "true" else set())
    if existing_tg:
        assert outputs["TargetGroupArn"] == tg and "LoadBalancerUrl" not in outputs
    else:
        assert outputs["LoadBalancerUrl"].startswith("http://")
        tg = session.client("elbv2").describe_target_groups(TargetGroupArns=[outputs["TargetGroupArn"]])
        checks = tg["TargetGroups"][0]
        assert (checks["HealthCheckIntervalSeconds"], checks["HealthyThresholdCount"],
                checks["UnhealthyThresholdCount"], checks["HealthCheckPath"]) == (5, 2, 2, "/health")
    groups = group_records(session)
    assert sorted(groups) == ["demo-blue", "demo-green"]
    for name, g in groups.items():
        tags = {t["Key"]: t["Value"] for t in g["Tags"]}
        assert (g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (0, 0, 4)
        assert g["HealthCheckType"] == "ELB" and g["TargetGroupARNs"] == [outputs["TargetGroupArn"]]
        assert tags["bluegreen:color"] == name.rsplit("-", 1)[1] and TAG_VERSION not in tags
        assert tags[TAG_STATE] == f"s3://{BUCKET}/demo/.bluegreen/"
    assert "bluegreen init demo 1.0 --capacity 2" in outputs["NextCommands"]


def test_the_bucket_policy_admits_the_stacks_endpoint(aws):
    session = boto3.session.Session()
    create_stack(session, params=parameters(session))
    endpoint = resource(session, "demo", "BucketEndpoint")
    policy = json.loads(session.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"StringEquals": {"aws:sourceVpce": endpoint}}
    assert policy["Statement"][0]["Resource"] == f"arn:aws:s3:::{BUCKET}/demo/*"


def test_the_target_group_drains_for_the_templates_short_delay(aws):
    session = boto3.session.Session()
    outputs = create_stack(session, params=parameters(session))
    attrs = session.client("elbv2").describe_target_group_attributes(TargetGroupArn=outputs["TargetGroupArn"])
    assert {a["Key"]: a["Value"] for a in attrs["Attributes"]}["deregistration_delay.timeout_seconds"] == "10"


def test_iam_policy_variables_reach_iam_literally(aws):
    session = boto3.session.Session()
    create_stack(session, params=parameters(session))
    iam = session.client("iam")
    role = resource(session, "demo", "InstanceRole")
    doc = iam.get_role_policy(RoleName=role, PolicyName="bluegreen-agent")["PolicyDocument"]
    text = doc if isinstance(doc, str) else json.dumps(doc)
    assert "instance/${ec2:InstanceID}" in text and "${!" not in text
    assert f"arn:aws:s3:::{BUCKET}/demo/*" in text
