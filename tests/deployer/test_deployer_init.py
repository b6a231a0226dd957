"""`bluegreen init SERVICE VERSION --capacity N [--color C]` (issue 15) on the pair infra/cloudformation/service.yaml
makes: the first color's version, digest and bundle set in one call, its sizes, the wait until healthy, under the
lock; a pair that is not new refused (exit 3), bad input refused (exit 2), nothing changed either way."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import boto3
import pytest

from agent.contract import TAG_BOOTSTRAP, TAG_DIGEST, TAG_OPERATION, TAG_VERSION
from deployer import cli, plan_init
from deployer.errors import UsageError
from deployer.model import COLORS
from tests.deployer.fleet import unhealthy_launches
from tests.deployer.harness import Harness
from tests.deployer.preflight_support import ecr_image, pair_state
from tests.deployer.stack import create_stack, parameters, push_bundle, svc_of
from tests.helpers import FakeTime, expect_exit


@pytest.fixture
def stack(aws):
    """The template's pair in the emulator, on the fake clock, with an ECR image holding 1.0 and 2.0; the
    harness's agents complete the launch hooks of new instances (the template gives both groups one)."""
    clock = FakeTime()
    aws.configure_time(time_scale=1.0)
    aws.use_clock(clock.now)
    session = boto3.session.Session()
    image = ecr_image(session, "web", ["1.0", "2.0"])
    outputs = create_stack(session, params=parameters(session, image=image))
    harness = Harness(aws, session, svc_of(outputs, capacity=2), clock)
    harness.agents.append(lambda: [harness.complete_hooks(c) for c in COLORS])
    harness.outputs = outputs
    return harness


def launched(harness, color):
    tags = harness.tags(color)
    return {k: tags.get(k) for k in (TAG_VERSION, TAG_DIGEST, TAG_BOOTSTRAP)}


def test_init_brings_the_first_color_up_under_the_lock_and_journals_it(stack, tmp_path):
    url = push_bundle(stack, tmp_path)
    out = stack.bluegreen("init", "demo", "1.0", "--capacity", "2")
    expect_exit(out, 0)
    assert "demo-blue is live with 2 instance(s)" in out.stdout and "bluegreen deploy demo VERSION" in out.stdout
    got = launched(stack, "blue")
    assert got[TAG_VERSION] == "1.0" and got[TAG_BOOTSTRAP] == url and got[TAG_DIGEST].startswith("sha256:")
    assert stack.sizes("blue") == (2, 2, 4) and stack.sizes("green") == (0, 0, 4)
    assert set(stack.lifecycles("blue")) <= stack.healthy() and len(stack.healthy()) == 2
    assert launched(stack, "green") == {TAG_VERSION: None, TAG_DIGEST: None, TAG_BOOTSTRAP: None}
    assert not any(TAG_OPERATION in stack.tags(c) for c in COLORS)
    history = json.loads(stack.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert [(e["action"], e["result"], e["version"]) for e in history] == [("init", "launched", "1.0")]
    status = json.loads(stack.bluegreen("status", "demo", "--output", "json").stdout)
    assert status["live"] == "blue"


def test_a_failed_wait_aborts_and_the_rerun_brings_the_color_up(stack, tmp_path, aws):
    push_bundle(stack, tmp_path)
    with unhealthy_launches(aws, "demo-blue"):
        expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2"), 1, "aborted")
    # As a deploy's abort leaves its new group: 0/0/0.
    assert stack.sizes("blue") == (0, 0, 0) and not any(TAG_OPERATION in stack.tags(c) for c in COLORS)
    history = json.loads(stack.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert [(e["action"], e["result"]) for e in history] == [("init", "aborted")]
    # The version stays on the empty group (no color is live): the rerun is a new init, not a refusal. Its MaxSize
    # is the template's again (green still shows it), not the 0 the abort left.
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2"), 0)
    assert stack.sizes("blue") == (2, 2, 4) and len(stack.healthy()) == 2


@pytest.mark.parametrize("color", COLORS)
def test_a_capacity_above_the_templates_max_size_is_refused_and_max_size_never_raised(stack, tmp_path, color):
    """A stack update sets MaxSize back to the template's (docs/localcloud.md X3a); a MaxSize init had raised above
    it would then be below the live group's desired capacity, and Auto Scaling would scale the live group in."""
    push_bundle(stack, tmp_path)
    before = pair_state(stack)
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "5", "--color", color), 2,
                "--capacity 5 is above demo's MaxSize 4: raise the stack's MaxSize parameter to at least 5")
    assert pair_state(stack) == before
    # The template's MaxSize itself is allowed, and stays what the template declared.
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "4", "--color", color), 0)
    assert stack.sizes(color) == (4, 4, 4)


def test_the_capacity_check_reads_the_templates_max_size_off_either_group():
    snap = NS(service="demo", groups={"blue": NS(max=0), "green": NS(max=3)})
    assert plan_init.check_capacity(snap, 3) == 3
    with pytest.raises(UsageError, match=r"MaxSize 3: raise the stack's MaxSize parameter to at least 4 .* or pass "
                                         r"--capacity 3 or less$"):
        plan_init.check_capacity(snap, 4)
    empty = NS(service="demo", groups={"blue": NS(max=0), "green": NS(max=0)})
    with pytest.raises(UsageError, match=r"at least 1 \(a stack update .*X3a\)$"):
        plan_init.check_capacity(empty, 1)


def test_init_of_green_with_a_named_bundle_then_deploy_takes_the_latest(stack, tmp_path):
    url = push_bundle(stack, tmp_path)
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "1", "--color", "green", "--bootstrap", url), 0)
    assert stack.sizes("green") == (1, 1, 4) and launched(stack, "green")[TAG_BOOTSTRAP] == url
    # The idle group names no bundle yet: deploy finds the base through the live group's (issue 11's LATEST).
    newer = push_bundle(stack, tmp_path, "services: {web: {image: web, init: true}}\n")
    expect_exit(stack.bluegreen("deploy", "demo", "2.0"), 0)
    assert launched(stack, "blue")[TAG_BOOTSTRAP] == newer and launched(stack, "blue")[TAG_VERSION] == "2.0"
    stack.assert_flipped("blue", 1, "2.0")


def test_a_pair_that_has_a_live_color_is_refused_with_exit_3(stack, tmp_path):
    push_bundle(stack, tmp_path)
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2"), 0)
    before = pair_state(stack)
    for color in COLORS:
        expect_exit(stack.bluegreen("init", "demo", "2.0", "--capacity", "2", "--color", color), 3,
                    "demo already has a live color (demo-blue has desired 2, 2 instance(s), version 1.0)")
    assert pair_state(stack) == before


@pytest.mark.parametrize("argv,message", [
    (["init", "demo", "bad version!", "--capacity", "2"], "is not a valid Docker tag"),
    (["init", "nosuch", "1.0", "--capacity", "2"], "no Auto Scaling group is tagged bluegreen:service=nosuch"),
    (["init", "demo", "1.0", "--capacity", "2", "--bootstrap", "http://x/"], "is not an s3://bucket/prefix/ URL"),
])
def test_bad_input_exits_2_and_changes_nothing(stack, tmp_path, argv, message):
    push_bundle(stack, tmp_path)
    before = pair_state(stack)
    expect_exit(stack.bluegreen(*argv), 2, message)
    assert pair_state(stack) == before


@pytest.mark.parametrize("argv,message", [
    (["--capacity", "0"], "must be >= 1"),
    ([], "the following arguments are required: --capacity"),
    (["--capacity", "2", "--color", "red"], "invalid choice: 'red'"),
])
def test_bad_flags_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(["init", "demo", "1.0", *argv], environ={})
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_nothing_pushed_is_refused_before_any_change(stack):
    before = pair_state(stack)
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2"), 2,
                "nothing pushed under s3://bluegreen-bootstrap/demo/ (no LATEST): run `bluegreen push-bootstrap DIR "
                "s3://bluegreen-bootstrap/demo/` first")
    assert pair_state(stack) == before


def test_a_missing_image_is_refused_by_the_deploys_preflight(stack, tmp_path):
    push_bundle(stack, tmp_path)
    before = pair_state(stack)
    expect_exit(stack.bluegreen("init", "demo", "9.9", "--capacity", "2"), 2,
                "init demo refused before any change [image-exists]")
    assert pair_state(stack) == before


def test_a_killed_init_resumes_on_rerun_and_holds_the_lock_meanwhile(stack, tmp_path):
    push_bundle(stack, tmp_path)
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2", crash_at="wait-new-healthy"), -9)
    assert "action=init;phase=launch;version=1.0;live=green" in stack.tags("blue")[TAG_OPERATION]
    # The killed holder is gone (harness.alive is empty); another command is refused while the record stands.
    expect_exit(stack.bluegreen("deploy", "demo", "2.0"), 3, "held by init 1.0")
    expect_exit(stack.bluegreen("rollback", "demo"), 3, "an init has no old color to roll back to")
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2", "--color", "green"), 3, "held by init")
    expect_exit(stack.bluegreen("init", "demo", "1.0", "--capacity", "2"), 0)
    assert stack.sizes("blue") == (2, 2, 4) and launched(stack, "blue")[TAG_VERSION] == "1.0"
    assert not any(TAG_OPERATION in stack.tags(c) for c in COLORS)


def test_dry_run_prints_the_plan_and_changes_nothing(stack, tmp_path):
    push_bundle(stack, tmp_path)
    before = pair_state(stack)
    out = stack.bluegreen("init", "demo", "1.0", "--capacity", "3", "--dry-run", "--output", "json")
    expect_exit(out, 0)
    steps = [s["name"] for s in json.loads(out.stdout)["plan"]]
    assert steps == ["lock", "set-version", "size-new", "wait-new-healthy", "unlock"]
    assert pair_state(stack) == before


@pytest.mark.parametrize("url,base", [
    ("s3://b-1/demo/.bluegreen/", ("b-1", "demo/")),
    ("s3://b-1/.bluegreen/", ("b-1", "")),
    ("s3://b-1/a/b/.bluegreen/", ("b-1", "a/b/")),
    ("s3://b-1/demo.bluegreen/", None),
    ("s3://b-1/demo/", None),
    ("not a url", None),
])
def test_the_bundle_base_beside_a_state_store(url, base):
    assert plan_init.bundle_base(url) == base
