"""Issue 11, "the bundle belongs to the version" and "Digests" (audit F8, F9), the deployer's half: `deploy` and
`canary` set the idle group's bluegreen:version, bluegreen:digest and bluegreen:bootstrap in ONE CreateOrUpdateTags
call, from values recorded when the operation starts (a rerun after a crash sets the same); `rollback` never
touches the old group's; `status` shows each group's bundle; pre-flight reads the new bundle's manifest first.

Driven in process through the real CLI against the emulated AWS (harness.py); the image in moto's ECR (whose
DescribeImages answers the digest) or in a registry served by the test (preflight_support.py).
"""

from __future__ import annotations

import hashlib
import json

import pytest

from agent.contract import TAG_BOOTSTRAP, TAG_DIGEST, TAG_VERSION
from tests.deployer.preflight_support import (
    MANIFEST,
    ecr_image,
    local_registry,
    name_image,
    pair_state,
    unreachable_registry,
)
from tests.helpers import expect_exit

BASE = "s3://bluegreen-bootstrap/demo/"
LAUNCHED = (TAG_VERSION, TAG_DIGEST, TAG_BOOTSTRAP)


@pytest.fixture
def fleet(make_harness):
    return make_harness(capacity=2)


def push(fleet, tmp_path, text, base=BASE):
    """`bluegreen push-bootstrap` of a one-file bundle; returns the URL it printed."""
    folder = tmp_path / hashlib.sha256(text.encode()).hexdigest()[:8]
    folder.mkdir(exist_ok=True)
    (folder / "docker-compose.yml").write_text(text)
    out = fleet.bluegreen("push-bootstrap", str(folder), base)
    expect_exit(out, 0)
    return out.stdout.strip()


def launched(fleet, color):
    tags = fleet.tags(color)
    return {k: tags.get(k) for k in LAUNCHED}


def ecr_digest(fleet, repository, tag):
    ecr = fleet.session.client("ecr")
    return ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"][0]["imageDigest"]


def tag_groups(fleet, key, value, colors=("blue", "green")):
    fleet.asg.create_or_update_tags(Tags=[
        {"ResourceId": fleet.svc["groups"][c], "ResourceType": "auto-scaling-group", "Key": key, "Value": value,
         "PropagateAtLaunch": False} for c in colors])


def set_version_calls(fleet, *argv):
    """The set-version step of the dry-run plan: its AWS calls."""
    out = fleet.bluegreen(*argv, "--dry-run", "--output", "json")
    expect_exit(out, 0)
    steps = [s for s in json.loads(out.stdout)["plan"] if s["name"] == "set-version"]
    assert len(steps) == 1, [s["name"] for s in json.loads(out.stdout)["plan"]]
    return steps[0]["calls"]


def test_deploy_sets_version_digest_and_bundle_in_one_call_and_rollback_leaves_the_old_group(fleet, tmp_path):
    image = ecr_image(fleet.session, "demo-web", tags=("2.0",))
    name_image(fleet, image)
    digest = ecr_digest(fleet, "demo-web", "2.0")
    url = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    blue_before = launched(fleet, "blue")

    calls = set_version_calls(fleet, "deploy", "demo", "2.0", "--bootstrap", url)
    assert [c["op"] for c in calls] == ["CreateOrUpdateTags"]  # one call: the agent never reads half of it
    assert {t["Key"]: t["Value"] for t in calls[0]["params"]["Tags"]} == {
        TAG_VERSION: "2.0", TAG_DIGEST: digest, TAG_BOOTSTRAP: url}

    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", url), 0)
    assert launched(fleet, "green") == {TAG_VERSION: "2.0", TAG_DIGEST: digest, TAG_BOOTSTRAP: url}
    assert launched(fleet, "blue") == blue_before
    # The state store's record holds what the deploy launched (a rerun after a crash sets the same).
    status = json.loads(fleet.bluegreen("status", "demo", "--output", "json").stdout)
    assert (status["operation"]["digest"], status["operation"]["bootstrap"]) == (digest, url)
    assert status["groups"]["green"]["bootstrap"] == url and status["groups"]["green"]["digest"] == digest
    assert status["groups"]["blue"]["bootstrap"] == BASE
    text = fleet.bluegreen("status", "demo").stdout
    assert f"green bundle {url}" in text and f"digest {digest}" in text

    # rollback never touches the old group's version, digest or bundle: blue serves what it served.
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    assert launched(fleet, "blue") == blue_before
    fleet.assert_serving_only("blue", 2, "1.0")


def test_without_the_flag_the_latest_bundle_under_the_base_is_deployed(fleet, tmp_path):
    first = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    tag_groups(fleet, TAG_BOOTSTRAP, first)  # a pair already on content-addressed bundles
    second = push(fleet, tmp_path, "services: {web: {image: web:live, init: true}}\n")
    assert second != first
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert fleet.tags("green")[TAG_BOOTSTRAP] == second
    assert fleet.tags("blue")[TAG_BOOTSTRAP] == first
    # The state store stays beside the base (demo/.bluegreen/) although the groups now name two bundles.
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    s3 = fleet.session.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bluegreen-bootstrap", Prefix="demo/.bluegreen/")["Contents"]]
    assert "demo/.bluegreen/demo/lock.json" in keys


def test_a_pair_moved_by_one_deploy_with_the_flag_takes_the_latest_on_the_next(fleet, tmp_path):
    first = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", first), 0)
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    # blue still names the old-style prefix; green's bundle gives the pair's base, whose LATEST is taken.
    second = push(fleet, tmp_path, "services: {web: {image: web:live, init: true}}\n")
    assert fleet.tags("blue")[TAG_BOOTSTRAP] == BASE
    expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 0)
    assert fleet.tags("blue")[TAG_BOOTSTRAP] == second and fleet.tags("green")[TAG_BOOTSTRAP] == first


def test_an_old_style_prefix_is_left_as_it_is_without_the_flag(fleet):
    calls = set_version_calls(fleet, "deploy", "demo", "2.0")
    assert {t["Key"] for t in calls[0]["params"]["Tags"]} == {TAG_VERSION, TAG_BOOTSTRAP}
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert "old-style (mutable) bundle prefix" in out.stderr
    assert launched(fleet, "green") == {TAG_VERSION: "2.0", TAG_DIGEST: None, TAG_BOOTSTRAP: BASE}


def test_a_crashed_deploy_resumes_with_the_digest_and_bundle_it_recorded(fleet, tmp_path):
    image = ecr_image(fleet.session, "demo-web", tags=("2.0",))
    name_image(fleet, image)
    first_digest = ecr_digest(fleet, "demo-web", "2.0")
    first = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    tag_groups(fleet, TAG_BOOTSTRAP, first)
    second = push(fleet, tmp_path, "services: {web: {image: web:live, init: true}}\n")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at="set-version"), -9)
    assert fleet.tags("green")[TAG_VERSION] == "1.0"  # killed before the call

    # Meanwhile 2.0 is pushed again (another digest) and another bundle becomes the latest.
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": "sha256:" + "2" * 64}
    fleet.session.client("ecr").put_image(repositoryName="demo-web", imageTag="2.0",
                                          imageManifest=json.dumps(dict(json.loads(MANIFEST), layers=[layer])))
    assert ecr_digest(fleet, "demo-web", "2.0") != first_digest
    push(fleet, tmp_path, "services: {web: {image: web:live, init: false}}\n")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert launched(fleet, "green") == {TAG_VERSION: "2.0", TAG_DIGEST: first_digest, TAG_BOOTSTRAP: second}


def test_a_resumed_deploy_refuses_another_bundle_than_it_recorded(fleet, tmp_path):
    first = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    other = push(fleet, tmp_path, "services: {web: {image: web:live, init: true}}\n")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", first, crash_at="size-new"), -9)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", other)
    expect_exit(out, 2, f"the deploy of 2.0 in progress set the bundle {first}")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert fleet.tags("green")[TAG_BOOTSTRAP] == first


def test_an_unknown_digest_removes_the_idle_groups_old_one_first(fleet):
    name_image(fleet, f"{unreachable_registry()}/web")
    tag_groups(fleet, TAG_DIGEST, "sha256:" + "9" * 64, colors=("green",))  # left by an earlier deploy
    calls = set_version_calls(fleet, "deploy", "demo", "2.0")
    assert [c["op"] for c in calls] == ["DeleteTags", "CreateOrUpdateTags"]
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert "the new instances pull it by tag (no bluegreen:digest)" in out.stderr
    assert launched(fleet, "green") == {TAG_VERSION: "2.0", TAG_DIGEST: None, TAG_BOOTSTRAP: BASE}


def test_canary_sets_the_digest_a_registry_answers_and_the_bundle(fleet, tmp_path):
    url = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    with local_registry({"team/web": {"2.0"}}, token="t0ken") as host:
        name_image(fleet, f"{host}/team/web")
        expect_exit(fleet.bluegreen("canary", "demo", "2.0", "--bootstrap", url), 0)
        # The registry's Docker-Content-Digest (preflight_support serves sha256:111...).
        assert launched(fleet, "green") == {TAG_VERSION: "2.0", TAG_DIGEST: "sha256:" + "1" * 64,
                                            TAG_BOOTSTRAP: url}
        # A deploy of the canary's version keeps the canary's digest and bundle.
        expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
        assert launched(fleet, "green")[TAG_BOOTSTRAP] == url


def test_preflight_reads_the_new_bundle_before_anything_changes(fleet, tmp_path):
    url = push(fleet, tmp_path, "services: {web: {image: web:live}}\n")
    missing = BASE + "0" * 64 + "/"
    before = pair_state(fleet)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", missing)
    expect_exit(out, 2, "refused before any change [bootstrap-manifest]")
    assert f"{missing}manifest.json" in out.stderr
    # A manifest replaced under its content-addressed name is refused as the agent would refuse it (F10).
    s3 = fleet.session.client("s3")
    bucket_key = url[len("s3://bluegreen-bootstrap/"):] + "manifest.json"
    body = s3.get_object(Bucket="bluegreen-bootstrap", Key=bucket_key)["Body"].read()
    s3.put_object(Bucket="bluegreen-bootstrap", Key=bucket_key, Body=body.replace(b"\n", b"\n\n", 1))
    out = fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", url)
    expect_exit(out, 2, "not to the name of its prefix")
    # A bundle under another base would move the state store that sits beside the base: refused.
    elsewhere = push(fleet, tmp_path, "services: {web: {image: web:live}}\n", base="s3://bluegreen-bootstrap/x/")
    out = fleet.bluegreen("deploy", "demo", "2.0", "--bootstrap", elsewhere)
    expect_exit(out, 2, "is not under s3://bluegreen-bootstrap/demo/")
    assert pair_state(fleet) == before
