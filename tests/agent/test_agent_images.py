"""Images before the point of no return (issue 11 parts 3, 5 and 7; audit F5, F8, F11, F13, F18), end to end:
`bluegreen-agent run` as a subprocess against the emulated AWS, the real Docker engine and compose, the local
registry, and a second real registry (`docker-registry`) that requires a login (htpasswd, bcrypt)."""
# ruff: noqa: F811  (the fixtures imported from test_agent_docker are parameters here)

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid

import bcrypt
import boto3
import docker
import pytest

from agent import contract
from agent import images as agent_images
from agent.errors import ImageError
from localcloud.sampleapp import build_and_push
from tests.agent.conftest import REGION, agent_error, app_port, upload_bundle
from tests.agent.test_agent_docker import REGISTRY, bundle_files, engine, images, make_stack  # noqa: F401
from tests.helpers import expect_exit, free_port, wait_until

pytestmark = pytest.mark.docker

USER, PASSWORD = "bluegreen", "s3cret-" + uuid.uuid4().hex[:8]


def _docker_config(folder, auths):
    """A Docker config folder (what DOCKER_CONFIG names) with these `auths`, and the compose plugin the host
    has in ~/.docker/cli-plugins (the docker CLI looks for plugins under DOCKER_CONFIG first)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
                             for host, (user, password) in auths.items()}}, f)
    plugins = os.path.expanduser("~/.docker/cli-plugins")
    if os.path.isdir(plugins) and not os.path.exists(os.path.join(folder, "cli-plugins")):
        os.symlink(plugins, os.path.join(folder, "cli-plugins"))
    return folder


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    """The real docker-registry with htpasswd auth on a port of its own; yields its address and a Docker config
    with the right credentials. Holds one sidecar image (the sample app as version "side")."""
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        pytest.fail("docker-registry is not installed (scripts/host-setup.sh)")
    root = tmp_path_factory.mktemp("auth-registry")
    port = free_port()
    address = f"127.0.0.1:{port}"
    with open(root / "htpasswd", "wb") as f:
        f.write(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
    (root / "registry.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: bluegreen-test\n    path: {root / 'htpasswd'}\n")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "registry.yml")], stdout=log, stderr=subprocess.STDOUT)

    def answers():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    good = _docker_config(str(root / "good-config"), {address: (USER, PASSWORD)})
    try:
        wait_until(answers, "the htpasswd registry", deadline_s=30, interval=0.1)
        repository = "sidecar-" + uuid.uuid4().hex[:8]
        saved = os.environ.get("DOCKER_CONFIG")
        os.environ["DOCKER_CONFIG"] = good  # `docker push` logs in with it
        try:
            build_and_push(address, repository=repository, versions=("side",))
        finally:
            if saved is None:
                os.environ.pop("DOCKER_CONFIG")
            else:
                os.environ["DOCKER_CONFIG"] = saved
        engine_client = docker.from_env()
        engine_client.images.remove(f"{address}/{repository}:side", force=True)  # the agent must pull it
        engine_client.close()
        yield {"address": address, "repository": repository, "good_config": good, "root": root}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def sidecar_bundle(tmp_path, stack, images, sidecar_ref):
    """The sample app's bundle plus a sidecar service (the sample app at another port) from `sidecar_ref`."""
    files = bundle_files(tmp_path, images["repository"], "live-" + stack.uid)
    side = (f"  side:\n    image: \"{sidecar_ref}\"\n    network_mode: host\n    restart: unless-stopped\n"
            "    environment:\n      APP_PORT: \"${SIDE_PORT}\"\n")
    files[contract.COMPOSE_FILE] = files[contract.COMPOSE_FILE] + side.encode()
    return files


def with_sidecar(stack, aws, tmp_path, images, sidecar_ref, docker_config, prefix):
    side_port = app_port()
    stack.runner.config["compose_env"]["SIDE_PORT"] = str(side_port)
    stack.group.set_tags(bootstrap=upload_bundle(aws.endpoint, sidecar_bundle(tmp_path, stack, images, sidecar_ref),
                                                 prefix=prefix))
    plain = stack.runner.env
    stack.runner.env = lambda: dict(plain(), DOCKER_CONFIG=docker_config)
    return side_port


def served_on(port):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        return resp.read().decode().strip()


def instance_tag(aws, instance_id, key):
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=aws.endpoint)
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]},
                                       {"Name": "key", "Values": [key]}])["Tags"]
    return found[0]["Value"] if found else None


# -- a sidecar from a registry that requires a login (F5) ----------------------------------------------------
def test_a_sidecar_from_a_registry_with_a_login_is_pulled_with_the_docker_configs_credentials(
        make_stack, aws, tmp_path, images, auth_registry, engine):
    stack = make_stack()
    ref = f"{auth_registry['address']}/{auth_registry['repository']}:side"
    side_port = with_sidecar(stack, aws, tmp_path, images, ref, auth_registry["good_config"], "side-good/")

    result = stack.runner("run")

    expect_exit(result, 0)
    assert stack.served() == "1.0" and served_on(side_port) == "side"
    status = stack.runner.status()
    assert status["other_images"] == [ref] and status["result"] == "success"
    assert PASSWORD not in result.stderr
    # Published once health passed, on the agent's own instance (docs/contract.md).
    running = contract.decode_running(instance_tag(aws, stack.group.instance_ids[0], contract.TAG_RUNNING))
    assert (running.version, running.digest, running.result) == ("1.0", images["digests"]["1.0"], "success")
    # Present now: a rerun asks no registry for it (compose's pull_policy `missing`), and recreates nothing.
    before = stack.containers()
    expect_exit(stack.runner("run"), 0)
    assert stack.containers() == before


@pytest.mark.parametrize("case", ["wrong password", "no credentials", "missing sidecar"])
def test_a_sidecar_that_cannot_be_pulled_leaves_the_running_stack_as_it_was(
        make_stack, aws, tmp_path, images, auth_registry, engine, case):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()

    address = auth_registry["address"]
    ref = f"{address}/{auth_registry['repository']}:side"
    config = _docker_config(str(tmp_path / "config"), {address: (USER, "wrong")})
    if case == "no credentials":
        config = _docker_config(str(tmp_path / "empty-config"), {})
    if case == "missing sidecar":
        config = auth_registry["good_config"]
        ref = f"{address}/{auth_registry['repository']}:no-such-tag"
    for found in engine.images.list(name=f"{address}/{auth_registry['repository']}"):
        engine.images.remove(found.id, force=True)  # an earlier test's pull: this one must ask the registry
    with_sidecar(stack, aws, tmp_path, images, ref, config, f"side-{case.replace(' ', '-')}/")
    stack.group.set_tags(version="2.0")

    result = stack.runner("run")

    line = agent_error(result, 7)
    assert f"image failed: pull {ref} failed" in line
    assert stack.snapshot() == before  # fixed tag, `current`, containers, the answer: nothing switched
    status = stack.runner.status()
    assert status["result"] == "failed" and "activate" not in status["steps"]
    running = contract.decode_running(instance_tag(aws, stack.group.instance_ids[0], contract.TAG_RUNNING))
    assert (running.version, running.result) == ("1.0", "failed:image")  # the old version still serves


# -- pull by digest (F8) ----------------------------------------------------------------------------------------
def test_the_groups_digest_is_pulled_verified_and_retagged(make_stack, images):
    stack = make_stack()
    stack.group.set_tags(version="2.0", digest=images["digests"]["2.0"])
    result = stack.runner("run")
    expect_exit(result, 0)
    assert stack.served() == "2.0"
    status = stack.runner.status()
    assert status["image_digest"] == images["digests"]["2.0"]
    ref = f"{images['image']}@{images['digests']['2.0']}"
    assert f"pulling {ref}" in result.stderr
    assert stack.engine.images.get(stack.fixed_ref).id == stack.engine.images.get(ref).id


def test_a_digest_the_registry_does_not_have_fails_before_anything_switched(make_stack, images):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    stack.group.set_tags(version="2.0", digest="sha256:" + "0" * 64)
    line = agent_error(stack.runner("run"), 7)
    assert f"pull {images['image']}@sha256:{'0' * 64} failed" in line
    assert stack.snapshot() == before


def test_a_malformed_digest_is_a_settings_error(make_stack):
    stack = make_stack()
    stack.group.set_tags(digest="sha256:ABC")
    assert "digest 'sha256:ABC' (from tag) is not sha256:<64 lowercase hex>" in agent_error(stack.runner("run"), 5)


def test_an_app_version_canary_pulls_its_own_version_by_tag_not_the_groups_digest(make_stack, images):
    stack = make_stack()
    stack.group.set_tags(digest=images["digests"]["1.0"])  # the group's version, 1.0
    result = stack.runner("run", "--app-version", "2.0")
    expect_exit(result, 0)
    assert stack.served() == "2.0" and f"pulling {images['image']}:2.0" in result.stderr
    assert stack.runner.status()["image_digest"] == images["digests"]["2.0"]


# -- restore after a failed activation on a running instance (F11) -------------------------------------------
def test_a_failed_activation_on_a_running_instance_restores_the_old_version(make_stack, aws, images):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    stack.runner.config["health_timeout"] = 20

    result = stack.runner("run", "--app-version", "sick")  # an operator's canary re-run, no hook engaged

    line = agent_error(result, 9)
    assert line.startswith("bluegreen-agent: health failed: project") and line.endswith(
        "; the previous version 1.0 was restored")
    after = stack.snapshot()
    assert after["fixed_tag"] == before["fixed_tag"] == stack.engine.images.get(images["image"] + ":1.0").id
    assert after["current"] == before["current"]
    wait_until(lambda: stack.served() == "1.0", "the old version to serve again", deadline_s=20, interval=0.2)
    status = stack.runner.status()
    assert status["restore"]["result"] == "restored" and status["restore"]["version"] == "1.0"
    assert status["error"]["exit_code"] == 9 and status["served"]["version"] == "1.0"
    running = contract.decode_running(instance_tag(aws, stack.group.instance_ids[0], contract.TAG_RUNNING))
    assert (running.version, running.result) == ("1.0", "failed:health")
    expect_exit(stack.runner("run"), 0)  # and the next run finds a consistent instance
    assert stack.served() == "1.0"


def test_a_run_whose_deadline_ran_out_is_still_restored(make_stack, images):
    # The health wait is cut to what remains of run_deadline; the restore after it still runs (with the whole
    # compose_timeout: tests/agent/test_lifecycle.py checks the value, which this fast local compose cannot show).
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    # 2.0 is healthy, but the health URL never answers: the wait lasts until the run's deadline cuts it.
    stack.runner.config.update(run_deadline=20, health_timeout=300,
                               health_url=f"http://127.0.0.1:{free_port()}/never")

    line = agent_error(stack.runner("run", "--app-version", "2.0"), 12)

    assert "the run's deadline (run_deadline 20s) ran out in step health" in line, line
    assert "the previous version 1.0 was restored" in line, line
    assert stack.snapshot()["fixed_tag"] == before["fixed_tag"]
    wait_until(lambda: stack.served() == "1.0", "the old version to serve again", deadline_s=20, interval=0.2)
    assert stack.runner.status()["restore"]["result"] == "restored"


def test_an_interrupt_after_the_point_of_no_return_restores_then_exits_as_interrupted(make_stack, images):
    # F11: an operator's shell that disconnects (SIGHUP) while the canary re-run waits for health.
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    stack.runner.config["health_timeout"] = 120
    proc = stack.runner.start("run", "--app-version", "sick")
    try:
        wait_until(lambda: "health" in (stack.runner.status().get("in_progress") or []), "the health wait",
                   deadline_s=60, interval=0.1)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert err.rstrip().splitlines()[-1].startswith("bluegreen-agent: interrupted"), err
    assert "the previous version 1.0 was restored" in err, err
    after = stack.snapshot()
    assert (after["fixed_tag"], after["current"]) == (before["fixed_tag"], before["current"])
    wait_until(lambda: stack.served() == "1.0", "the old version to serve again", deadline_s=20, interval=0.2)
    status = stack.runner.status()
    assert status["result"] == "failed" and status["restore"]["result"] == "restored"


def test_a_failed_compose_up_on_a_running_instance_restores_the_old_release(make_stack, aws, tmp_path, images):
    stack = make_stack()
    expect_exit(stack.runner("run"), 0)
    before = stack.snapshot()
    # A new bundle and version whose compose file `config` accepts but `up` cannot start: a user the image (FROM
    # scratch, no /etc/passwd) does not have.
    files = bundle_files(tmp_path, images["repository"], "live-" + stack.uid)
    files[contract.COMPOSE_FILE] = files[contract.COMPOSE_FILE].replace(
        b"    network_mode: host\n", b"    network_mode: host\n    user: no-such-user\n")
    assert b"user: no-such-user" in files[contract.COMPOSE_FILE]
    stack.group.set_tags(version="2.0", bootstrap=upload_bundle(aws.endpoint, files, prefix="bad-mount/"))

    line = agent_error(stack.runner("run"), 8)

    assert line.startswith("bluegreen-agent: compose failed: `compose up` failed")
    assert line.endswith("; the previous version 1.0 was restored")
    after = stack.snapshot()
    assert (after["fixed_tag"], after["current"], after["served"]) == (
        before["fixed_tag"], before["current"], "1.0")


def test_a_failed_first_deployment_has_nothing_to_restore(make_stack):
    stack = make_stack()
    stack.runner.config["health_timeout"] = 20
    stack.group.set_tags(version="sick")
    line = agent_error(stack.runner("run"), 9)
    assert line.endswith("; nothing to restore: no earlier version ran here")
    assert stack.runner.status()["restore"]["result"] == "nothing"


# -- pruning (F18) ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def third_version(images):
    """3.0 of the sample app in the same repository (the session's images hold 1.0, 2.0 and sick)."""
    digests = build_and_push(REGISTRY, repository=images["repository"], versions=("3.0",))
    client = docker.from_env()
    client.images.remove(f"{images['image']}:3.0", force=True)
    client.close()
    return digests["3.0"]


def test_pruning_keeps_the_current_and_the_previous_version_and_what_containers_use(
        make_stack, images, engine, third_version):
    stack = make_stack(capacity=2)
    other = stack.runners[1]  # a second agent on the same engine, staying on 1.0: its container uses 1.0
    image = images["image"]
    for version in ("1.0", "2.0", "3.0"):
        expect_exit(stack.runner("run", "--app-version", version), 0)
        if version == "1.0":
            expect_exit(other("run"), 0)
    assert len(stack.runner.status()["image_history"]) == 3  # 3.0, 2.0, and 1.0, still used by the other agent's container
    tags = {t for i in engine.images.list(name=image) for t in i.tags}
    assert {f"{image}:2.0", f"{image}:3.0", f"{image}:1.0"} <= tags

    for c in engine.containers.list(all=True, filters={"label": "com.docker.compose.project="
                                                       + other.config["compose_project"]}):
        c.remove(force=True)
    expect_exit(stack.runner("run", "--app-version", "3.0"), 0)  # the same version again prunes what is free

    tags = {t for i in engine.images.list(name=image) for t in i.tags}
    assert f"{image}:1.0" not in tags and {f"{image}:2.0", f"{image}:3.0"} <= tags
    status = stack.runner.status()
    assert len(status["image_history"]) == 2 and len(status["pruned_images"]) == 1
    assert stack.served() == "3.0"


# -- the pull stall deadline (F13) ----------------------------------------------------------------------------
class StallingProxy:
    """A TCP proxy in front of the registry that forwards everything until a layer (blob) is asked for, then
    stops forwarding on that connection: a registry that stalls mid-pull."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stalled = threading.Event()
        self.stop = threading.Event()
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, requests):
        try:
            while not self.stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if requests and b"/blobs/sha256:" in data and b"GET " in data:
                    self.stalled.set()
                    self.stop.wait()  # hold the connection open, answer nothing
                    break
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        for s in self.sockets + [self.server]:
            s.close()


def test_a_pull_that_stalls_fails_after_the_stall_timeout_and_the_engine_is_not_stuck(engine, tmp_path):
    # A fresh image (one unique layer), so that the engine has none of its layers and must download a blob.
    repository = "stall-" + uuid.uuid4().hex[:8]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "blob").write_bytes(os.urandom(256 * 1024))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
    ref = f"{REGISTRY}/{repository}:1"
    subprocess.run(["docker", "build", "-q", "-t", ref, str(context)], check=True, capture_output=True,
                   env=dict(os.environ, DOCKER_BUILDKIT="0"))
    subprocess.run(["docker", "push", ref], check=True, capture_output=True)
    engine.images.remove(ref, force=True)
    proxy = StallingProxy(int(REGISTRY.rsplit(":", 1)[1]))
    try:
        clock = __import__("time").monotonic
        start = clock()
        with pytest.raises(ImageError) as failed:
            agent_images.pull(engine.api, f"127.0.0.1:{proxy.port}/{repository}", tag="1", stall_timeout=3,
                              deadline=60)
        took = clock() - start
        assert proxy.stalled.is_set(), "premise: the engine asked the proxy for a layer"
        assert "stalled: no progress for 3s (pull_stall_timeout)" in str(failed.value)
        assert 3 <= took < 20, took
    finally:
        proxy.close()
    # The engine cancelled the abandoned pull: the same image pulls at once straight from the registry.
    pulled = agent_images.pull(engine.api, f"{REGISTRY}/{repository}", tag="1", stall_timeout=10, deadline=60)
    assert pulled.digest and pulled.digest.startswith("sha256:")
    engine.images.remove(pulled.image_id, force=True)
