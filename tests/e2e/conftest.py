"""The whole local fleet, started and stopped through its public commands (`bluegreen-localcloud up/down`),
driven with the real `bluegreen` CLI, measured through the real HAProxy.

One fleet for the tests of test_fleet.py (starting one takes ~15 s), which each check or create the state
they start from (`Fleet.start_from`), so any one of them, or any order, passes; a test that stops its fleet
gets one of its own (`own_fleet`). Two fleets never run at once: they would share the Docker engine's fixed
image tag (localcloud.fleet.service.REPOSITORY).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from localcloud.fleet.daemon import CAPACITY, SERVICE
from localcloud.fleet.daemon import read_env_lines as read_env
from tests.helpers import wait_until

BIN = os.path.dirname(sys.executable)


def command(name: str) -> str:
    return os.path.join(BIN, name)


class Fleet:
    def __init__(self, state_dir: str, env: dict) -> None:
        self.state_dir = state_dir
        self.env = env
        self.lb_url = env["BLUEGREEN_LB_URL"]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def bluegreen(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        # Poll every 0.5 s: the fleet's clock runs checks at 1 s x 2, so 5 s polls would dominate every flip.
        extra = ["--poll-interval", "0.5"] if args[0] in ("deploy", "rollback", "finalize", "canary") else []
        return self.run(command("bluegreen"), *args, *extra, timeout=timeout)

    def popen_bluegreen(self, *args: str) -> subprocess.Popen:
        """`bluegreen` started, not waited for: the caller watches the fleet while it runs."""
        return subprocess.Popen([command("bluegreen"), *args, "--poll-interval", "0.5"], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def localcloud(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(command("bluegreen-localcloud"), *args, "--state", self.state_dir, timeout=timeout)

    def status(self) -> dict:
        out = self.bluegreen("status", SERVICE, "--output", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def localcloud_status(self) -> dict:
        out = self.localcloud("status", "--output", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def containers(self) -> dict:
        """Running containers of the fleet's running instances: {instance id: container status}, read with
        `docker ps` inside each machine (each has its own engine, as an EC2 instance has)."""
        from localcloud.machines import MachineError, run_in

        found = {}
        for item in self.running_instances():
            if not item.get("pid"):
                continue
            try:
                out = run_in(item["pid"], "docker", "ps", "--format", "{{.Status}}")
            except (MachineError, OSError):
                continue  # powered off between the two reads
            if out.returncode == 0 and out.stdout.strip():
                found[item["instance_id"]] = out.stdout.strip()
        return found

    def routed_servers(self) -> int | None:
        """How many servers HAProxy routes to, from the daemon's state file (rewritten on every change)."""
        try:
            with open(os.path.join(self.state_dir, "state.json")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        return sum(1 for i in state["fleet"]["instances"] if i.get("lb") == "routed, up")

    def running_instances(self) -> list:
        return [i for i in self.localcloud_status()["state"]["fleet"]["instances"] if i["state"] == "running"]

    def routed_versions(self) -> dict:
        """{version: servers} HAProxy routes to and finds up, from the daemon's state file (rewritten after
        every change HAProxy made), so a request sent after this read reaches HAProxy after those changes."""
        try:
            with open(os.path.join(self.state_dir, "state.json")) as f:
                instances = json.load(f)["fleet"]["instances"]
        except (OSError, ValueError, KeyError):
            return {}
        return dict(collections.Counter(i["version"] for i in instances
                                        if i["state"] == "running" and i.get("lb") == "routed, up"))

    def at_rest(self) -> dict:
        """Wait until no operation runs, the live group serves its capacity, the idle group has no instance left
        (a scale-in after a rollback or an abort takes a few seconds) and HAProxy routes to the live group only."""
        def resting():
            status = self.status()
            live = status["live"]
            if status["operation"] is not None or live is None:
                return None
            idle = "green" if live == "blue" else "blue"
            groups = status["groups"]
            serving = [i for i in groups[live]["instances"]
                       if i["lifecycle"] == "InService" and i["health"] == "healthy"]
            if len(serving) == CAPACITY and not groups[idle]["instances"] and \
                    self.routed_versions() == {groups[live]["version"]: CAPACITY}:
                return status
            return None

        return wait_until(resting, "the service at rest", deadline_s=180.0, interval=0.5)

    def start_from(self, color: str, version: str) -> dict:
        """The service at rest with `color` live at `version`, as `up` leaves it: made with the deployer (a
        finalized deploy, twice at most: a deploy goes to the idle color) when an earlier test left another."""
        for _ in range(3):
            status = self.at_rest()
            if status["live"] == color and status["groups"][color]["version"] == version:
                return status
            for args in (("deploy", SERVICE, version), ("finalize", SERVICE)):
                out = self.bluegreen(*args)
                assert out.returncode == 0, f"bluegreen {' '.join(args)} exited {out.returncode}: {out.stderr[-3000:]}"
        raise AssertionError(f"two finalized deploys did not make {color} live at {version}: {status}")


def started_fleet(tmp_path_factory, *options):
    """`bluegreen-localcloud up [options]` in a fresh state folder; yields the Fleet, then `down` (a no-op when the
    test stopped it already)."""
    state_dir = str(tmp_path_factory.mktemp("localcloud") / "state")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    up = subprocess.run([command("bluegreen-localcloud"), "up", "--state", state_dir, "--lb-port", "0",
                         "--timeout", "900", *options], env=base,  # the first fleet may build the image root (cached after)
                        capture_output=True, text=True, timeout=960, check=False)
    if up.returncode != 0:
        log = os.path.join(state_dir, "serve.log")
        tail = ""
        if os.path.exists(log):
            with open(log) as f:
                tail = f.read()[-3000:]
        subprocess.run([command("bluegreen-localcloud"), "down", "--state", state_dir], env=base, timeout=180,
                       check=False)
        pytest.fail(f"bluegreen-localcloud up failed ({up.returncode}): {up.stderr}\n{tail}")
    env = dict(base, **read_env(os.path.join(state_dir, "env")))
    yield Fleet(state_dir, env)
    subprocess.run([command("bluegreen-localcloud"), "down", "--state", state_dir], env=base, timeout=180,
                   check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """One fleet for a module's tests; each test brings it to the state it starts from."""
    yield from started_fleet(tmp_path_factory)


@pytest.fixture
def own_fleet(tmp_path_factory):
    """A fleet for one test alone (one that stops it)."""
    yield from started_fleet(tmp_path_factory)
