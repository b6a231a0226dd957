"""`bluegreen-agent run` end to end: a real subprocess against the emulated AWS over HTTP, an IMDSv2 emulator for
a real emulated instance, the real Docker engine, the local registry and compose v2."""

import fcntl
import os
import urllib.request
import uuid

import docker
import pytest

from agent import contract
from localcloud.sampleapp import build_and_push, write_bundle
from tests.agent.conftest import BUCKET, AgentRunner, Group, agent_error, app_port, upload_bundle
from tests.helpers import expect_exit, wait_until

pytestmark = pytest.mark.docker

REGISTRY = os.environ.get("BLUEGREEN_REGISTRY", "127.0.0.1:5000")


@pytest.fixture(scope="session")
def engine():
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(engine):
    """The sample app at 1.0, 2.0 and an unhealthy "sick", in the local registry under a repository of its own."""
    repository = "bgagent-" + uuid.uuid4().hex[:8]
    digests = build_and_push(REGISTRY, repository=repository, versions=("1.0", "2.0", "sick"),
                             unhealthy_versions=("sick",))
    image = f"{REGISTRY}/{repository}"
    # The agent must pull what it runs: drop the local tags the build left behind. force: an identical build
    # (same layers, same image id) may be running in another suite's container; force then only untags.
    for version in digests:
        engine.images.remove(f"{image}:{version}", force=True)
    yield {"image": image, "repository": repository, "digests": digests}
    for tagged in engine.images.list(name=image):
        for tag in tagged.tags:
            engine.images.remove(tag, force=True)


def bundle_files(tmp_path, repository, fixed_tag):
    folder = tmp_path / ("bundle-" + fixed_tag)
    write_bundle(str(folder), REGISTRY, repository=repository, fixed_tag=fixed_tag, manifest=False)
    return {contract.COMPOSE_FILE: (folder / contract.COMPOSE_FILE).read_bytes()}


class Stack:
    """One emulated instance's agent and what it runs; tears its containers and its fixed tag down."""

    def __init__(self, aws, imds_for, tmp_path, images, engine, capacity=1, launch_hook=None):
        self.uid = uuid.uuid4().hex[:8]
        self.engine, self.images, self.tmp_path = engine, images, tmp_path
        self.fixed_ref = f"{images['image']}:live-{self.uid}"
        self.bootstrap = upload_bundle(aws.endpoint, bundle_files(tmp_path, images["repository"], "live-" + self.uid))
        tags = {contract.TAG_VERSION: "1.0", contract.TAG_IMAGE: images["image"],
                contract.TAG_BOOTSTRAP: self.bootstrap}
        if launch_hook:
            tags[contract.TAG_LIFECYCLE_HOOK] = launch_hook
        self.group = Group(aws.endpoint, "web-" + self.uid, tags, capacity=capacity, launch_hook=launch_hook)
        self.runners, self.ports = [], []
        for n, instance_id in enumerate(self.group.instance_ids):
            port = app_port()
            runner = AgentRunner(tmp_path, imds_for(instance_id, aws.endpoint), name=f"agent{n}", config={
                "compose_project": f"bgt-{self.uid}-{n}", "compose_env": {"APP_PORT": str(port)},
                "health_timeout": 60, "allowed_buckets": [BUCKET]})
            self.runners.append(runner)
            self.ports.append(port)
        self.runner, self.port = self.runners[0], self.ports[0]

    def served(self, n=0):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[n]}/", timeout=5) as resp:
            return resp.read().decode().strip()

    def containers(self, n=0):
        found = self.engine.containers.list(
            all=True, filters={"label": "com.docker.compose.project=" + self.runners[n].config["compose_project"]})
        return sorted((c.id, c.attrs["State"]["StartedAt"], c.attrs["Image"]) for c in found)

    def snapshot(self):
        """What is running: containers (id, start time, image), the fixed tag's image, the current bundle, the
        answer on the port."""
        current = os.path.join(self.runner.workdir, "current")
        return {"containers": self.containers(), "fixed_tag": self.engine.images.get(self.fixed_ref).id,
                "current": os.readlink(current), "served": self.served()}

    def close(self):
        for runner in self.runners:
            for c in self.engine.containers.list(
                    all=True, filters={"label": "com.docker.compose.project=" + runner.config["compose_project"]}):
                c.remove(force=True)
        for image in self.engine.images.list(name=self.images["image"]):
            if self.fixed_ref in image.tags:
                self.engine.images.remove(self.fixed_ref, force=True)


@pytest.fixture
def make_stack(aws, imds_for, tmp_path, images, engine):
    stacks = []

    def make(**kwargs):
        stack = Stack(aws, imds_for, tmp_path, images, engine, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


# What an ABANDONed launch (A6) looks like: terminating, or already gone from the group.
ABANDONED = (None, "Terminating", "Terminated", "Terminating:Wait", "Terminating:Proceed")


def start_until_health_wait(stack):
    """Start `bluegreen-agent run` and return the process once its status.json says it is in its health wait
    (compose has started the stack)."""
    proc = stack.runner.start("run")

    def in_health_wait():
        try:
            status = stack.runner.status()
        except FileNotFoundError:  # not written yet; the file is replaced atomically, never read half-written
            return False
        assert status["result"] == "running", f"the run ended before its health wait: {status}"
        return status["in_progress"] == ["health"]

    try:
        wait_until(in_health_wait, "the agent's health wait in status.json", deadline_s=60, interval=0.1)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    return proc


def test_first_boot_runs_the_groups_version_and_group_tags_beat_instance_tags(make_stack, images):
    stack = make_stack()
    # The instance's own tags disagree with the group's (A12: they may be stale, or not there yet at boot).
    instance_tags = stack.group.tag_instance(stack.group.instance_ids[0], {
        "bluegreen:version": "2.0", "bluegreen:bootstrap": "s3://elsewhere/x/"})
    assert instance_tags.get("bluegreen:version") == "2.0", "premise: the instance carries a conflicting tag"

    expect_exit(stack.runner("run"), 0)

    assert stack.served() == "1.0"
    status = stack.runner.status()
    assert status["result"] == "success" and status["in_progress"] == []
    assert status["schema_version"] == contract.SCHEMA_VERSION and status["agent_version"] == contract.__version__
    assert os.stat(os.path.join(stack.runner.workdir, "status.json")).st_mode & 0o777 == 0o644
    assert status["version"] == "1.0" and status["version_source"] == "tag"
    assert status["image_digest"] == images["digests"]["1.0"]
    assert set(status["steps"]) >= {"identity", "bundle", "image", "activate", "compose", "health"}
    assert stack.engine.images.get(stack.fixed_ref).id == stack.engine.images.get(images["image"] + ":1.0").id


def test_rerun_with_the_same_version_recreates_nothing(make_stack):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    expect_exit(stack.runner("run"), 0)
    assert stack.snapshot() == before


def test_a_new_group_version_recreates_with_the_new_image(make_stack, images):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.containers()
    stack.group.set_tags(version="2.0")
    expect_exit(stack.runner("run"), 0)
    assert stack.served() == "2.0"
    after = stack.containers()
    assert after != before and after[0][2] == stack.engine.images.get(images["image"] + ":2.0").id
    assert stack.runner.status()["image_digest"] == images["digests"]["2.0"]


def test_canary_override_runs_the_flag_version_and_says_so(make_stack):
    stack = make_stack()
    result = stack.runner("run", "--app-version", "2.0")
    expect_exit(result, 0)
    assert stack.served() == "2.0"
    assert "version override: running 2.0" in result.stderr and "says 1.0" in result.stderr
    assert "deprecated" not in result.stderr
    assert stack.runner.status()["version_source"] == "flag"
    # The old spelling still works, and says what replaces it.
    result = stack.runner("run", "--version", "1.0")
    expect_exit(result, 0)
    assert stack.served() == "1.0" and "`run --version VERSION` is deprecated" in result.stderr


def test_standalone_docker_compose_when_configured(make_stack):
    stack = make_stack()
    stack.runner.config["compose_command"] = ["docker-compose"]
    expect_exit(stack.runner("run"), 0)
    assert stack.served() == "1.0"
    containers = stack.containers()
    expect_exit(stack.runner("run"), 0)
    assert stack.containers() == containers  # the same version again recreates nothing, whichever compose


def test_unsigned_s3_reads_the_bundle_with_a_plain_get(make_stack, aws, tmp_path, images):
    stack = make_stack()
    # S1: the bucket allows anonymous GetObject (what the VPC endpoint policy does on AWS).
    upload_bundle(aws.endpoint, bundle_files(tmp_path, images["repository"], "live-" + stack.uid), public=True)
    result = stack.runner("run", "--s3-unsigned")
    expect_exit(result, 0)
    assert stack.served() == "1.0"
    assert f"unsigned GET {aws.endpoint}/{BUCKET}/web/manifest.json" in result.stderr


def test_two_agents_on_two_instances_at_once(make_stack):
    stack = make_stack(capacity=2)
    procs = [runner.start("run") for runner in stack.runners]
    # communicate() drains both pipes while it waits: wait() first would block on an agent whose stderr
    # filled the pipe buffer.
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert [stack.served(0), stack.served(1)] == ["1.0", "1.0"]


def test_a_second_agent_on_the_same_workdir_exits_at_once(make_stack):
    stack = make_stack()
    os.makedirs(stack.runner.workdir, exist_ok=True)
    with open(os.path.join(stack.runner.workdir, "agent.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = stack.runner("run")
    assert agent_error(result, 10).startswith("bluegreen-agent: lock failed: another")
    assert not os.path.exists(os.path.join(stack.runner.workdir, "status.json"))


def test_an_unhealthy_version_fails_the_health_step(make_stack):
    stack = make_stack()
    stack.runner.config["health_timeout"] = 30
    stack.group.set_tags(version="sick")
    line = agent_error(stack.runner("run"), 9)
    assert "health failed: project" in line and "unhealthy" in line
    status = stack.runner.status()
    assert status["result"] == "failed" and status["error"]["step"] == "health"


def _bad_bundle(kind):
    compose = b"services: {}\n"
    if kind == "missing object":
        return {"files": {}, "manifest": [{"path": "docker-compose.yml", "sha256": "0" * 64}]}
    if kind == "checksum mismatch":
        return {"files": {"docker-compose.yml": compose}, "manifest": [{"path": "docker-compose.yml",
                                                                       "sha256": "ab" * 32}]}
    return {"files": {"docker-compose.yml": compose}, "manifest": [
        {"path": "docker-compose.yml", "sha256": __import__("hashlib").sha256(compose).hexdigest()},
        {"path": "../../etc/cron.d/evil", "sha256": "cd" * 32}]}


BAD_INPUTS = [
    # (case, how to break it, exit code, words in the one-line error)
    ("bad version", {"tags": {"version": "1.0 rc!"}}, 5, "settings failed: version '1.0 rc!'"),
    ("bad image", {"tags": {"image": "127.0.0.1:5000/Web//x"}}, 5, "not a valid image repository"),
    # A tag inside the repository: once took exponential time to reject (the agent hung, holding its lock).
    ("image with a tag", {"tags": {"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop-web:1.0"}}, 5,
     "not a valid image repository"),
    ("bad S3 URL", {"tags": {"bootstrap": "https://bucket/prefix/"}}, 5, "is not an s3://bucket/prefix/ URL"),
    ("bucket not allowed", {"tags": {"bootstrap": "s3://other-bucket/web/"}}, 5, "not in allowed_buckets"),
    ("missing object", {"bundle": "missing object"}, 6, "missing object s3://bluegreen-bootstrap/bad/"),
    ("checksum mismatch", {"bundle": "checksum mismatch"}, 6, "checksum mismatch"),
    ("path escape", {"bundle": "path escape"}, 6, "escapes the bundle"),
    ("unknown version", {"tags": {"version": "9.9"}}, 7, "image failed: pull"),
    ("registry unreachable", {"registry": True}, 7, "image failed: pull 127.0.0.1:"),
    ("IMDS 403", {"imds": "disabled"}, 3, "identity failed: IMDS at http://127.0.0.1:"),
]


@pytest.mark.parametrize("case,breakage,code,words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fails_its_step_and_leaves_the_running_stack_as_it_was(make_stack, aws, tmp_path, case,
                                                                          breakage, code, words):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()

    tags = dict(breakage.get("tags", {}))
    if "bundle" in breakage:
        bad = _bad_bundle(breakage["bundle"])
        tags["bootstrap"] = upload_bundle(aws.endpoint, bad["files"], prefix="bad/", manifest_files=bad["manifest"])
    if breakage.get("registry"):
        closed = app_port()  # nothing listens there
        files = bundle_files(tmp_path, "web", "live-" + stack.uid)
        files["docker-compose.yml"] = files["docker-compose.yml"].replace(
            REGISTRY.encode(), f"127.0.0.1:{closed}".encode())
        tags["bootstrap"] = upload_bundle(aws.endpoint, files, prefix="unreachable/")
        tags["image"] = f"127.0.0.1:{closed}/web"
    if breakage.get("imds") == "disabled":
        stack.runner.imds.disabled = True
    tags.setdefault("version", "2.0")  # a real new version, so that only the breakage stops it
    stack.group.set_tags(**tags)

    result = stack.runner("run")

    assert words in agent_error(result, code)
    assert stack.snapshot() == before
    assert stack.runner.status()["result"] == "failed"


# A6: AWS time runs 20x fast here, so the hook's 30 s HeartbeatTimeout lapses after 1.5 s real: a run of a few
# seconds survives only because the agent sends heartbeats (every 0.05 s here). aws.reset() restores the scale.
HOOK_TIME_SCALE = 0.05


def test_launch_hook_waits_then_continues_once_healthy(make_stack, aws):
    aws.configure_time(time_scale=HOOK_TIME_SCALE)
    stack = make_stack(launch_hook="launch")
    instance_id = stack.group.instance_ids[0]
    assert stack.group.lifecycle_state(instance_id) == "Pending:Wait"
    stack.runner.config["heartbeat_interval"] = 0.05
    expect_exit(stack.runner("run"), 0)
    status = stack.runner.status()
    assert sum(status["steps"].values()) > 30 * HOOK_TIME_SCALE, "premise: the run outlasts the hook timeout"
    assert "lifecycle" in status["steps"]
    assert stack.group.lifecycle_state(instance_id) in ("Pending:Proceed", "InService")
    assert stack.served() == "1.0"


def test_launch_hook_abandons_when_the_agent_fails(make_stack, aws):
    aws.configure_time(time_scale=HOOK_TIME_SCALE)
    stack = make_stack(launch_hook="launch")
    instance_id = stack.group.instance_ids[0]
    stack.runner.config["heartbeat_interval"] = 0.05
    stack.group.set_tags(bootstrap=upload_bundle(aws.endpoint, {}, prefix="empty/",
                                                 manifest_files=[{"path": "docker-compose.yml",
                                                                  "sha256": "0" * 64}]))
    result = stack.runner("run")
    assert result.returncode == 6, result.stderr
    assert "lifecycle hook launch completed with ABANDON" in result.stderr
    assert stack.group.lifecycle_state(instance_id) in ABANDONED


def test_launch_hook_abandons_when_the_groups_settings_are_bad(make_stack, aws):
    # A6: a bad tag must not leave the new instance in Pending:Wait for the hook's whole HeartbeatTimeout.
    aws.configure_time(time_scale=HOOK_TIME_SCALE)
    stack = make_stack(launch_hook="launch")
    instance_id = stack.group.instance_ids[0]
    stack.group.set_tags(version="1.0 rc!")
    result = stack.runner("run")
    assert result.returncode == 5, result.stderr
    assert "lifecycle hook launch completed with ABANDON" in result.stderr
    assert stack.group.lifecycle_state(instance_id) in ABANDONED


def test_a_bundle_that_changes_only_a_mounted_file_is_applied(make_stack, aws, tmp_path, images):
    # Compose resolves `./page` from the release folder the agent runs it in: a new bundle is a new folder,
    # so the service is recreated with the new file (and an old release, once pruned, is not still mounted).
    stack = make_stack()
    compose_file = bundle_files(tmp_path, images["repository"], "live-" + stack.uid)["docker-compose.yml"]
    compose_file = compose_file.replace(b"    network_mode: host\n",
                                        b"    network_mode: host\n    volumes:\n      - ./page:/www/page:ro\n")
    assert b"./page:/www/page" in compose_file

    def publish(text, prefix):
        stack.group.set_tags(bootstrap=upload_bundle(aws.endpoint, {"docker-compose.yml": compose_file,
                                                                    "page/index.html": text}, prefix=prefix))
        expect_exit(stack.runner("run"), 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/page/", timeout=5) as resp:
            return resp.read()

    assert publish(b"first\n", "mount-a/") == b"first\n"
    assert publish(b"second\n", "mount-b/") == b"second\n"
    assert publish(b"third\n", "mount-c/") == b"third\n"  # the first release is pruned by now (keep 2)
    assert stack.served() == "1.0"


def test_sigterm_mid_run_records_the_failure_and_abandons_the_launch(make_stack, aws):
    # systemd's stop (or TimeoutStartSec) sends SIGTERM: the run must unwind, not vanish like a SIGKILL.
    # The hook's 30 s timeout runs at 6 s real here: heartbeats are not under test, the ABANDON on SIGTERM is,
    # and a loaded machine must not let the hook lapse first.
    aws.configure_time(time_scale=0.2)
    stack = make_stack(launch_hook="launch")
    instance_id = stack.group.instance_ids[0]
    stack.runner.config["heartbeat_interval"] = 0.05
    stack.group.set_tags(version="sick")
    proc = start_until_health_wait(stack)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "interrupted (SIGINT, SIGTERM or SIGHUP)" in err and "lifecycle hook launch completed with ABANDON" in err
    assert stack.runner.status()["result"] == "failed"
    assert stack.group.lifecycle_state(instance_id) in ABANDONED


def test_rerun_after_the_agent_is_killed_mid_run_recovers(make_stack):
    stack = make_stack()
    stack.group.set_tags(version="sick")
    proc = start_until_health_wait(stack)
    proc.kill()  # SIGKILL: no cleanup at all, as in a power cut
    proc.communicate(timeout=10)
    # What a crashed run leaves behind: status.json written as each step began and ended (as cloud-init's
    # is), so it names the step the run died in and the steps it had finished.
    status = stack.runner.status()
    assert status["result"] == "running" and status["in_progress"] == ["health"], status
    assert {"identity", "bundle", "image", "activate", "compose"} <= set(status["steps"]), status
    assert status["schema_version"] == contract.SCHEMA_VERSION
    stack.group.set_tags(version="1.0")
    expect_exit(stack.runner("run"), 0)  # the kernel released the flock; the status is rewritten
    assert stack.served() == "1.0" and stack.runner.status()["result"] == "success"
