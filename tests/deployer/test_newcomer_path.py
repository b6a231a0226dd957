"""docs/getting-started.md, every step but baking the AMI, against the emulator (issue 15 part 4): create the stack
from infra/cloudformation/service.yaml through CloudFormation, then the `bluegreen` commands its NextCommands output
names, in order, each one command: push-bootstrap, init, doctor, the deploy with its bake (and the alarm the guide
has the user create) and the finalize that ends it. The commands' wall clock follows the fake clock, so the 300 s
bake costs a few dozen polls."""

from __future__ import annotations

import json
import os
import shlex

import boto3

from deployer.model import COLORS
from tests.deployer.harness import Harness
from tests.deployer.preflight_support import ecr_image
from tests.deployer.stack import ROOT, create_stack, parameters, svc_of
from tests.deployer.test_deployer_bakewatch import lock
from tests.helpers import FakeTime, expect_exit

GUIDE = os.path.join(ROOT, "docs", "getting-started.md")
ALARM = "demo-5xx"


def guide_commands(guide, command):
    """Every line of the guide's code blocks that runs `bluegreen COMMAND`, split as a shell would."""
    return [shlex.split(line) for line in guide.splitlines() if line.startswith(f"bluegreen {command} ")]


def put_guide_alarm(session, target_group_arn):
    """The guide's `aws cloudwatch put-metric-alarm` for demo-5xx, on the stack's load balancer and target group."""
    elbv2 = session.client("elbv2")
    (group,) = elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"]
    (balancer,) = group["LoadBalancerArns"]
    session.client("cloudwatch").put_metric_alarm(
        AlarmName=ALARM, Namespace="AWS/ApplicationELB", MetricName="HTTPCode_Target_5XX_Count", Statistic="Sum",
        Period=60, EvaluationPeriods=2, Threshold=5, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
        Dimensions=[{"Name": "LoadBalancer", "Value": balancer.split(":loadbalancer/", 1)[1]},
                    {"Name": "TargetGroup", "Value": target_group_arn.split(":", 5)[5]}])


def test_the_getting_started_path_runs_step_by_step(aws, tmp_path):
    clock = FakeTime()
    aws.configure_time(time_scale=1.0)
    aws.use_clock(clock.now)
    session = boto3.session.Session()
    image = ecr_image(session, "web", ["1.0", "1.1"])  # the user's pipeline pushed the image
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "docker-compose.yml").write_text(f"services:\n  web:\n    image: {image}\n")

    # aws cloudformation create-stack --stack-name demo --template-body file://infra/cloudformation/service.yaml ...
    outputs = create_stack(session, params=parameters(session, image=image))
    harness = Harness(aws, session, svc_of(outputs, capacity=2), clock)
    harness.agents.append(lambda: [harness.complete_hooks(c) for c in COLORS])  # what each agent does at launch

    commands = [shlex.split(c) for c in outputs["NextCommands"].split(" ; ")]
    assert [c[:2] for c in commands] == [["bluegreen", "push-bootstrap"], ["bluegreen", "init"],
                                         ["bluegreen", "doctor"], ["bluegreen", "deploy"], ["bluegreen", "finalize"]]
    push, init, doctor, deploy, finalize = ([str(bundle) if a == "./bundle" else "1.1" if a == "NEXT_VERSION" else a
                                             for a in argv[1:]] for argv in commands)
    assert deploy[-2:] == ["--bake", "300"]
    with open(GUIDE) as f:
        guide = f.read()
    # The guide shows the same commands; its deploy adds the alarm it has the user create first.
    for name, argv in (("init", init), ("doctor", doctor), ("finalize", finalize)):
        assert guide_commands(guide, name) == [["bluegreen", *argv]], name
    assert guide_commands(guide, "deploy") == [["bluegreen", *deploy, "--alarm", ALARM]]
    assert "aws cloudwatch put-metric-alarm --alarm-name demo-5xx" in guide

    pushed = harness.bluegreen(*push)
    expect_exit(pushed, 0)
    expect_exit(harness.bluegreen(*init), 0)
    assert harness.tags("blue")["bluegreen:bootstrap"] == pushed.stdout.strip()

    checked = harness.bluegreen(*doctor, "--output", "json")
    expect_exit(checked, 0)
    statuses = {c["id"]: c["status"] for c in json.loads(checked.stdout)["checks"]}
    asg = session.client("autoscaling")
    for group in harness.svc["groups"].values():  # the template's LifecycleHookSpecificationList (A6, A19)
        assert asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"], group
    # Every check passes on the stack's pair.
    assert {i for i, s in statuses.items() if s != "pass"} == set(), statuses

    put_guide_alarm(session, outputs["TargetGroupArn"])
    harness.follow_clock()  # the bake's deadline is a wall-clock time in the state store's record
    start = clock.now()
    expect_exit(harness.bluegreen(*deploy, "--alarm", ALARM), 0)
    harness.assert_flipped("green", 2, "1.1")
    assert clock.now() - start >= 300  # it watched the whole bake
    doc = lock(harness)
    assert [p[0] for p in doc["phases"]][-3:] == ["bake", "baked", "flipped"]
    assert doc["operation"]["bake"]["alarms"] == [ALARM]
    expect_exit(harness.bluegreen(*finalize), 0)
    harness.assert_serving_only("green", 2, "1.1")
