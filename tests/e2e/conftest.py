"""The whole local fleet, started and stopped through its public commands (`bluegreen-localcloud up/down`),
driven with the real `bluegreen` CLI, measured through the real HAProxy.

One fleet per test session (starting one takes ~10 s); the tests in test_fleet.py run in file order and each
leaves the service in the state the next expects, as an operator's day would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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

    def localcloud(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(command("bluegreen-localcloud"), *args, "--state", self.state_dir, timeout=timeout)

    def status(self) -> dict:
        out = self.bluegreen("status", "demo", "--output", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def localcloud_status(self) -> dict:
        out = self.localcloud("status", "--output", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def containers(self) -> dict:
        """Running compose stacks of the fleet's instances: {compose project: container status}."""
        out = self.run("docker", "ps", "--filter", "label=com.docker.compose.project", "--format",
                       '{{.Label "com.docker.compose.project"}}\t{{.Status}}')
        assert out.returncode == 0, out.stderr
        rows = [line.split("\t", 1) for line in out.stdout.splitlines() if line.startswith("lc-i-")]
        return dict(rows)

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


def read_env(path: str) -> dict:
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                env[key] = value
    return env


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    state_dir = str(tmp_path_factory.mktemp("localcloud") / "state")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    up = subprocess.run([command("bluegreen-localcloud"), "up", "--state", state_dir, "--lb-port", "0",
                         "--timeout", "240"], env=base,
                        capture_output=True, text=True, timeout=300, check=False)
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
