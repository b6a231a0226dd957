"""The pair a user deploys: infra/cloudformation/service.yaml created as a stack in the emulated AWS
(localcloud/stack.py), then deploy, rollback, finalize, doctor, and stack updates that must leave the
deployer's state alone (X3, X3a in docs/localcloud.md), in process on the fake clock (issue 15)."""

from __future__ import annotations

import json

import boto3
import pytest

from localcloud import stack
from tests.helpers import expect_exit

OWNED_BY_THE_DEPLOYER = ("bluegreen:version", "bluegreen:bootstrap", "bluegreen:operation",
                         "bluegreen:saved-sizes", "bluegreen:saved-suspended", "bluegreen:digest")


@pytest.mark.parametrize("create_bucket", [True, False], ids=["bucket-created", "bucket-given"])
@pytest.mark.parametrize("own_target_group", [True, False], ids=["new-target-group", "existing-target-group"])
def test_the_stack_for_each_parameter_combination(aws, create_bucket, own_target_group):
    session = boto3.session.Session()
    net = stack.network(session)
    existing = None
    if not own_target_group:
        existing = session.client("elbv2").create_target_group(
            Name="given-tg", Protocol="HTTP", Port=8080, VpcId=net["vpc_id"])["TargetGroups"][0]["TargetGroupArn"]
    svc = stack.create_stack_service(session, capacity=2, max_size=5, net=net, create_bucket=create_bucket,
                                     existing_target_group=existing, bucket="svc-bootstrap")
    asg, elbv2 = session.client("autoscaling"), session.client("elbv2")
    groups = {g["AutoScalingGroupName"]: g for g in asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=list(svc["groups"].values()))["AutoScalingGroups"]}
    assert sorted(groups) == ["demo-blue", "demo-green"]
    for color, group in zip(("blue", "green"), (groups["demo-blue"], groups["demo-green"])):
        # Symmetric, empty, nothing the deployer owns (X3); ELB health (A20); the hook from the spec list (A19).
        assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 0, 5)
        assert group["HealthCheckType"] == "ELB" and group["TargetGroupARNs"] == [svc["target_group_arn"]]
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        assert tags["bluegreen:color"] == color and not set(OWNED_BY_THE_DEPLOYER) & set(tags)
        hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=group["AutoScalingGroupName"])["LifecycleHooks"]
        assert [(h["LifecycleHookName"], h["DefaultResult"]) for h in hooks] == [("demo-launch", "ABANDON")]
    assert (svc["target_group_arn"] == existing) is not own_target_group
    load_balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    assert len(load_balancers) == (1 if own_target_group else 0)
    if own_target_group:  # the seed's short checks and drain reach the stack's target group (E1, E2)
        tg = elbv2.describe_target_groups(TargetGroupArns=[svc["target_group_arn"]])["TargetGroups"][0]
        assert (tg["HealthCheckIntervalSeconds"], tg["HealthyThresholdCount"]) == (5, 2)
        attributes = {a["Key"]: a["Value"] for a in elbv2.describe_target_group_attributes(
            TargetGroupArn=svc["target_group_arn"])["Attributes"]}
        assert attributes["deregistration_delay.timeout_seconds"] == "5"
    s3 = session.client("s3")
    if create_bucket:  # S1: unsigned reads through this VPC's endpoint only
        policy = json.loads(s3.get_bucket_policy(Bucket="svc-bootstrap")["Policy"])
        endpoint = session.client("ec2").describe_vpc_endpoints()["VpcEndpoints"][0]["VpcEndpointId"]
        assert policy["Statement"][0]["Condition"] == {"StringEquals": {"aws:sourceVpce": endpoint}}
    else:
        with pytest.raises(s3.exceptions.ClientError):
            s3.get_bucket_policy(Bucket="svc-bootstrap")


def test_deploy_rollback_and_finalize_on_the_stacks_pair(make_stack_harness):
    fleet = make_stack_harness(capacity=2)
    expect_exit(fleet.init, 0)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 2, "2.0")
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.wait_for(lambda: len(fleet.healthy() & set(fleet.lifecycles("blue"))) == 2, "blue serving again")
    assert fleet.tags("blue")["bluegreen:version"] == "1.0"
    expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 0)
    fleet.assert_flipped("green", 2, "3.0")
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    fleet.assert_serving_only("green", 2, "3.0")


def _deployer_view(fleet):
    """What a stack update must not touch: per color the instances and their states, the sizes, the deployer's
    tags, the suspended processes."""
    view = {}
    for color in ("blue", "green"):
        group = fleet.group(color)
        view[color] = {"instances": fleet.lifecycles(color), "sizes": fleet.sizes(color),
                       "tags": {k: v for k, v in fleet.tags(color).items() if k in OWNED_BY_THE_DEPLOYER},
                       "suspended": sorted(p["ProcessName"] for p in group["SuspendedProcesses"])}
    return view


def _instance_type_update(fleet):
    """update-stack changing InstanceType only; the groups take the launch template's new version in place."""
    before = _deployer_view(fleet)
    stack.update_stack_service(fleet.session, fleet.svc, InstanceType="t3.small")
    assert _deployer_view(fleet) == before
    for color in ("blue", "green"):
        template = fleet.group(color)["LaunchTemplate"]
        assert template["LaunchTemplateId"] == fleet.svc["launch_template"]
        data = fleet.ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"],
                                                           Versions=[template["Version"]])
        assert data["LaunchTemplateVersions"][0]["LaunchTemplateData"]["InstanceType"] == "t3.small"


def test_an_instance_type_update_after_a_finalized_deploy_leaves_the_live_group_alone(make_stack_harness):
    fleet = make_stack_harness(capacity=2)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    fleet.assert_serving_only("green", 2, "2.0")
    assert fleet.sizes("green") == (2, 2, 4)  # the live sizes the deployer set; the template says 0/-/4
    _instance_type_update(fleet)
    fleet.assert_serving_only("green", 2, "2.0")
    # The next deploy launches from the new version, and works as before.
    expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 0)
    fleet.assert_flipped("blue", 2, "3.0")


def test_an_instance_type_update_during_an_open_flip_leaves_the_flip_intact(make_stack_harness):
    fleet = make_stack_harness(capacity=2)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 2, "2.0")
    _instance_type_update(fleet)
    fleet.assert_flipped("green", 2, "2.0")
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)  # the open flip can still be undone
    fleet.wait_for(lambda: len(fleet.healthy() & set(fleet.lifecycles("blue"))) == 2, "blue serving again")
    assert fleet.tags("blue")["bluegreen:version"] == "1.0"


def _doctor(fleet):
    out = fleet.bluegreen("doctor", "demo", "--output", "json")
    return out, {c["id"]: c for c in json.loads(out.stdout)["checks"]}


def test_doctor_passes_on_the_stacks_pair(make_stack_harness):
    fleet = make_stack_harness(capacity=2)
    out, checks = _doctor(fleet)
    expect_exit(out, 0)
    assert checks["launch-hook"]["status"] == "pass" and checks["health-check-type"]["status"] == "pass"
    assert [c for c, v in checks.items() if v["status"] == "fail"] == []


EC2 = ("HealthCheckType: ELB", "HealthCheckType: EC2")
NO_HOOK = ("LifecycleHookSpecificationList:", None)


@pytest.mark.parametrize("broken, groups, check, status, code", [
    (EC2, (1,), "health-check-type-match", "fail", 1),
    (NO_HOOK, (1,), "launch-hooks-match", "fail", 1),
    # doctor only warns when both groups agree: a pair may run without a hook or on EC2 health (A20), at a cost.
    (EC2, (0, 1), "health-check-type", "warn", 0),
    (NO_HOOK, (0, 1), "launch-hook", "warn", 0),
], ids=["green-ec2-health", "green-without-hook", "both-ec2-health", "both-without-hook"])
def test_doctor_names_what_a_broken_variant_of_the_template_gets_wrong(make_stack_harness, broken, groups, check,
                                                                      status, code):
    fleet = make_stack_harness(capacity=1, body=_variant(stack.template_body(), broken, groups))
    # init refuses an asymmetric pair before any change, as deploy would (exit 2, the check named)
    expect_exit(fleet.init, 2 if status == "fail" else 0)
    assert (f"[{check}]" in fleet.init.stderr) is (status == "fail")
    out, checks = _doctor(fleet)
    expect_exit(out, code)
    assert checks[check]["status"] == status and checks[check]["fix"], checks[check]
    assert {c for c, v in checks.items() if v["status"] == "fail"} == ({check} if status == "fail" else set())


def _variant(body, broken, groups):
    """The template with `broken` applied to the groups numbered in `groups` (0 blue, 1 green): (old, new)
    replaces a line, (old, None) drops a property with its block."""
    old, new = broken
    lines, out, seen, skip_below = body.splitlines(), [], -1, None
    assert sum(line.strip() == old for line in lines) == 2, f"{old} is no longer on both groups"
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip_below is not None and (indent > skip_below or line.lstrip().startswith("- ")):
            continue
        skip_below = None
        if line.strip() == old:
            seen += 1
            if seen in groups:
                if new is None:
                    skip_below = indent
                    continue
                line = line.replace(old, new)
        out.append(line)
    return "\n".join(out) + "\n"
