"""docs/getting-started.md, every step but the bake, against the emulator (issue 15 part 4): create the stack from
infra/cloudformation/service.yaml through CloudFormation, then the `bluegreen` commands its NextCommands output
names, in order, each one command: push-bootstrap, init, doctor, deploy (plain here: `--bake` is the agent
issue's), and the finalize that ends the first deploy."""

from __future__ import annotations

import json
import os
import shlex

import boto3

from deployer.model import COLORS
from tests.deployer.harness import Harness
from tests.deployer.preflight_support import ecr_image
from tests.deployer.stack import ROOT, create_stack, parameters, svc_of
from tests.helpers import FakeTime, expect_exit

GUIDE = os.path.join(ROOT, "docs", "getting-started.md")


def test_the_getting_started_path_runs_step_by_step(aws, tmp_path):
    clock = FakeTime()
    aws.configure_time(time_scale=1.0)
    aws.use_clock(clock.now)
    session = boto3.session.Session()
    image = ecr_image(session, "web", ["1.0", "2.0"])  # the user's pipeline pushed the image
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "docker-compose.yml").write_text(f"services:\n  web:\n    image: {image}\n")

    # aws cloudformation create-stack --stack-name demo --template-body file://infra/cloudformation/service.yaml ...
    outputs = create_stack(session, params=parameters(session, image=image))
    harness = Harness(aws, session, svc_of(outputs, capacity=2), clock)
    harness.agents.append(lambda: [harness.complete_hooks(c) for c in COLORS])  # what each agent does at launch

    commands = [shlex.split(c) for c in outputs["NextCommands"].split(" ; ")]
    assert [c[:2] for c in commands] == [["bluegreen", "push-bootstrap"], ["bluegreen", "init"],
                                         ["bluegreen", "doctor"], ["bluegreen", "deploy"]]
    with open(GUIDE) as f:
        guide = f.read()
    for argv in commands:  # the guide shows the same commands (its deploy adds --bake)
        assert " ".join(argv[:2]) in guide
    push, init, doctor, deploy = ([str(bundle) if a == "./bundle" else "2.0" if a == "NEXT_VERSION" else a
                                   for a in argv[1:]] for argv in commands)

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

    expect_exit(harness.bluegreen(*deploy), 0)
    harness.assert_flipped("green", 2, "2.0")
    expect_exit(harness.bluegreen("finalize", "demo"), 0)
    harness.assert_serving_only("green", 2, "2.0")
