"""`bluegreen-localcloud up/down/status` without a fleet: exit codes, one-line errors, the env file (fast)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from localcloud.fleet import commands
from localcloud.fleet.daemon import env_lines
from localcloud.sampleapp import build_and_push
from tests.helpers import free_port

COMMAND = os.path.join(os.path.dirname(sys.executable), "bluegreen-localcloud")


def run(*args):
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=60, check=False)


def test_status_without_a_fleet_exits_3(tmp_path):
    out = run("status", "--state", str(tmp_path / "none"))
    assert out.returncode == 3
    assert "no local fleet is running" in out.stdout


def test_status_json_without_a_fleet(tmp_path):
    out = run("status", "--state", str(tmp_path / "none"), "--output", "json")
    assert out.returncode == 3
    assert json.loads(out.stdout) == {"schema_version": 1, "running": False, "state": None}


def test_a_stale_pid_file_does_not_count_as_running(tmp_path):
    # The pid of a live process that is not the fleet daemon (this test run): a reused pid must not fool it.
    state = tmp_path / "state"
    state.mkdir()
    (state / "serve.pid").write_text(str(os.getpid()))
    assert run("status", "--state", str(state)).returncode == 3


def test_down_without_a_fleet_is_a_no_op(tmp_path):
    out = run("down", "--state", str(tmp_path / "none"))
    assert out.returncode == 0
    assert "nothing to stop" in out.stderr


def test_down_removes_a_dead_fleets_state(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "serve.pid").write_text("999999999")
    (state / "state.json").write_text('{"phase": "stopped"}')
    out = run("down", "--state", str(state))
    assert out.returncode == 0, out.stderr
    assert not state.exists()


def crashed_state(state, **recorded):
    """A state folder as a daemon that died without its own teardown leaves it: its pid is gone, the phase is
    still `ready`, and the state file names what it made."""
    state.mkdir()
    (state / "serve.pid").write_text("999999999")
    (state / "state.json").write_text(json.dumps({"pid": 999999999, "phase": "ready", **recorded}))


def test_down_after_a_crash_stops_what_the_state_names_and_removes_the_state(tmp_path, capsys):
    # Stand-ins for the HAProxy and the registry the dead daemon started. `down` runs in this process, their
    # parent, so that it can reap them: to anyone else an unreaped child still answers kill(pid, 0).
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    haproxy, registry = subprocess.Popen(sleeper), subprocess.Popen(sleeper)
    try:
        state = tmp_path / "state"
        crashed_state(state, haproxy_pid=haproxy.pid, fleet={"instances": [{"compose_project": "lc-i-1"}]})
        (state / "infra-started.json").write_text(json.dumps({"registry": registry.pid}))
        assert commands.down(str(state), deadline_s=10.0) == 0
        assert not os.path.exists(f"/proc/{haproxy.pid}")
        assert not os.path.exists(f"/proc/{registry.pid}")
        assert not state.exists()
        # No docker_host recorded (it died before the engine was up): no stack to remove, and no error.
        assert capsys.readouterr().err == "bluegreen-localcloud: local fleet stopped and removed\n"
    finally:
        for stand_in in (haproxy, registry):
            stand_in.kill()
            stand_in.wait(10)


@pytest.mark.docker
def test_down_after_a_crash_removes_the_instances_stacks(tmp_path):
    docker_host, registry = os.environ["DOCKER_HOST"], os.environ["BLUEGREEN_REGISTRY"]
    build_and_push(registry, repository="crash-cleanup", versions=("1.0",))
    project = f"lc-crash-{os.getpid()}"
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(f"services:\n  web:\n    image: {registry}/crash-cleanup:1.0\n    network_mode: host\n"
                            f"    environment:\n      APP_PORT: \"{free_port()}\"\n")

    def containers():
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                             capture_output=True, text=True, check=True, timeout=60)
        return out.stdout.split()

    subprocess.run(["docker", "compose", "-p", project, "-f", str(compose_file), "up", "-d"], capture_output=True,
                   check=True, timeout=120)
    try:
        assert len(containers()) == 1
        state = tmp_path / "state"
        crashed_state(state, docker_host=docker_host, fleet={"instances": [{"compose_project": project}]})
        out = run("down", "--state", str(state))
        assert out.returncode == 0, out.stderr
        assert containers() == []
        assert not state.exists()
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "--timeout", "1"], capture_output=True,
                       check=False, timeout=120)


def test_bad_port_is_one_line_and_exit_2(tmp_path):
    out = run("up", "--lb-port", "70000", "--state", str(tmp_path / "s"))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "--lb-port" in out.stderr
    assert not (tmp_path / "s").exists()


def test_env_file_sources_in_a_shell(tmp_path):
    path = tmp_path / "env"
    path.write_text(env_lines("http://127.0.0.1:4566", "us-east-1", "http://127.0.0.1:8080",
                              "unix:///tmp/docker.sock", "127.0.0.1:5000"))
    script = (f"export AWS_PROFILE=prod; . {path}; "
              'echo "$AWS_ENDPOINT_URL $AWS_REGION $AWS_ACCESS_KEY_ID ${AWS_PROFILE:-none}"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["http://127.0.0.1:4566", "us-east-1", "testing", "none"]


@pytest.mark.docker
def test_up_fails_in_one_line_when_the_load_balancer_port_is_taken_and_down_cleans_up(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = run("up", "--state", str(state), "--lb-port", str(port), "--timeout", "120")
    assert out.returncode == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("bluegreen-localcloud: error: the local fleet failed to start"), out.stderr
    assert run("status", "--state", str(state)).returncode == 3  # the daemon tore itself down
    down = run("down", "--state", str(state))
    assert down.returncode == 0, down.stderr
    assert not state.exists()


def test_imds_fault_needs_a_fleet_an_instance_id_and_a_fault(tmp_path):
    none = str(tmp_path / "none")
    out = run("imds-fault", "i-0abc", "--state", none, "--fail-for", "5")
    assert out.returncode == 3 and "no local fleet runs" in out.stderr
    out = run("imds-fault", "i-0abc", "--state", none)
    assert out.returncode == 2 and "--fail-for SECONDS or --expire-tokens" in out.stderr
    out = run("imds-fault", "../etc", "--state", none, "--expire-tokens")
    assert out.returncode == 2 and "not an instance id" in out.stderr


def test_the_fleet_applies_an_imds_fault_to_that_instance_and_removes_the_request(tmp_path):
    import threading

    from localcloud.fleet.supervisor import FAULTS_DIR, FleetSupervisor

    class FakeIMDS:
        def __init__(self):
            self.calls = []

        def fail_for(self, seconds, status):
            self.calls.append(("fail_for", seconds, status))

        def expire_tokens(self):
            self.calls.append(("expire_tokens",))

    class One:
        def __init__(self, iid):
            self.instance_id, self.imds = iid, FakeIMDS()

        def imds_server(self):
            return self.imds

    class Fleet:  # what _apply_imds_faults reads of a FleetSupervisor
        def __init__(self):
            self.state_dir, self._lock, self.instances = str(tmp_path), threading.Lock(), {"i-1": One("i-1")}

    (tmp_path / FAULTS_DIR).mkdir()
    (tmp_path / FAULTS_DIR / "i-1.json").write_text(json.dumps({"expire_tokens": True, "fail_for": 15, "status": 503}))
    (tmp_path / FAULTS_DIR / "i-2.json").write_text(json.dumps({"fail_for": 5}))  # not (yet) one of the fleet's
    fleet = Fleet()
    FleetSupervisor._apply_imds_faults(fleet)
    assert fleet.instances["i-1"].imds.calls == [("expire_tokens",), ("fail_for", 15.0, 503)]
    assert sorted(os.listdir(tmp_path / FAULTS_DIR)) == ["i-2.json"]  # left for the command to time out on
