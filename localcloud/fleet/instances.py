"""One emulated EC2 instance: its own IMDSv2 endpoint, a real `bluegreen-agent run` process, its compose stack.

All instances share this machine's Docker engine and loopback address, so each gets what a real instance has
to itself: a work folder, a compose project name and an app port (APP_PORT, host networking). The agent is
the real command with the environment an instance would give it (C1: AWS_ENDPOINT_URL, the IMDS endpoint,
DOCKER_HOST), run once at "boot" as the systemd oneshot unit would.

Where one engine differs from many instances: the fixed tag the bundle's compose file names (`web:live`) is
one tag for the whole engine. Two agents of DIFFERENT versions re-tagging it at once could start each other's
image, so agents run concurrently only when they deploy the same version (`VersionGate`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from localcloud.fleet import FleetError, FleetTimeout
from localcloud.imds import IMDSServer

log = logging.getLogger(__name__)

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# What an instance's agent.yml holds besides its own folder, project and port (docs/agent.md).
# prune_images off: every emulated instance's agent shares one engine, and one agent's pruning could untag a
# version another has just pulled and not yet re-tagged (on EC2 each instance has its own engine).
DEFAULT_AGENT_SETTINGS = {"imds_deadline": 30.0, "group_deadline": 30.0, "health_timeout": 30.0,
                          "heartbeat_interval": 10.0, "pull_timeout": 120.0, "compose_timeout": 120.0,
                          "prune_images": False}


class InstanceError(FleetError):
    pass


class VersionGate:
    """Lets agents of one version run together and makes an agent of another version wait its turn."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version: str | None = None
        self._holders = 0

    @contextmanager
    def hold(self, version: str, deadline_s: float):
        with self._cond:
            if not self._cond.wait_for(lambda: self._holders == 0 or self._version == version, deadline_s):
                raise FleetTimeout(f"agent for version {version} waited {deadline_s}s for agents of version "
                                   f"{self._version} ({self._holders} running) to finish")
            self._version = version
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                if self._holders == 0:
                    self._version = None
                self._cond.notify_all()


def agent_command() -> list[str]:
    """The installed `bluegreen-agent` beside this interpreter (the project's virtualenv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "bluegreen-agent")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("bluegreen-agent")
    if not found:
        raise InstanceError("bluegreen-agent is not installed: run scripts/host-setup.sh")
    return [found]


def compose_project(instance_id: str) -> str:
    return "lc-" + instance_id.lower()


def remove_stack(project: str, docker_host: str, deadline_s: float = 60.0) -> None:
    """Stop and remove one instance's compose stack (by project name; no compose file needed)."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    try:
        out = subprocess.run(["docker", "compose", "-p", project, "down", "--remove-orphans", "--timeout", "5"],
                             check=False, env=env, capture_output=True, text=True, timeout=deadline_s)
    except subprocess.TimeoutExpired:
        raise FleetTimeout(f"docker compose -p {project} down did not finish within {deadline_s}s") from None
    if out.returncode != 0:
        raise InstanceError(f"docker compose -p {project} down failed: {out.stderr.strip()[-300:]}")


class Instance:
    """The processes and files behind one emulated instance id."""

    def __init__(self, instance_id: str, group: str, version: str | None, app_port: int, workdir: str,
                 aws_endpoint: str, region: str, docker_host: str, gate: VersionGate,
                 agent_settings: dict | None = None, agent_deadline_s: float = 300.0) -> None:
        self.instance_id = instance_id
        self.group = group
        self.version = version
        self.app_port = app_port
        self.workdir = os.path.abspath(workdir)
        self.aws_endpoint = aws_endpoint
        self.region = region
        self.docker_host = docker_host
        self.gate = gate
        self.agent_settings = dict(DEFAULT_AGENT_SETTINGS, **(agent_settings or {}))
        self.agent_deadline_s = agent_deadline_s
        self.project = compose_project(instance_id)
        self.agent_state = "not started"  # -> waiting, running, succeeded, failed (exit N), stopped
        self.agent_exit: int | None = None
        self._imds: IMDSServer | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, "agent.yml")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "agent.log")

    def agent_environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(DUMMY_CREDENTIALS)
        env.update({
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self._imds.endpoint if self._imds else "",
            "BLUEGREEN_AGENT_CONFIG": self.config_path,
            "DOCKER_HOST": self.docker_host,
        })
        return env

    def start(self) -> Instance:
        os.makedirs(self.workdir, exist_ok=True)
        self._imds = IMDSServer(self.instance_id, region=self.region, aws_endpoint=self.aws_endpoint).start()
        config = dict(self.agent_settings, workdir=os.path.join(self.workdir, "agent"),
                      compose_project=self.project, compose_env={"APP_PORT": str(self.app_port)})
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        self._thread = threading.Thread(target=self._run_agent, name=f"agent-{self.instance_id}", daemon=True)
        self.agent_state = "waiting"
        self._thread.start()
        return self

    def _run_agent(self) -> None:
        try:
            with self.gate.hold(self.version or "", self.agent_deadline_s):
                if self._stopping.is_set():
                    return
                with open(self.log_path, "ab") as logfile, self._lock:
                    self._proc = subprocess.Popen(
                        agent_command() + ["run"], env=self.agent_environment(), stdin=subprocess.DEVNULL,
                        stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
                    self.agent_state = "running"
                log.info("instance %s: agent started (pid %d, app port %d)", self.instance_id, self._proc.pid,
                         self.app_port)
                try:
                    code = self._proc.wait(self.agent_deadline_s)
                except subprocess.TimeoutExpired:
                    self._kill_agent()
                    self.agent_state = f"failed (still running after {self.agent_deadline_s}s, killed)"
                    log.error("instance %s: agent %s", self.instance_id, self.agent_state)
                    return
            self.agent_exit = code
            if self._stopping.is_set():
                self.agent_state = "stopped"
            elif code == 0:
                self.agent_state = "succeeded"
                log.info("instance %s: agent succeeded", self.instance_id)
            else:
                self.agent_state = f"failed (exit {code})"
                log.warning("instance %s: agent failed with exit %d: %s", self.instance_id, code, self.last_log_line())
        except (FleetError, OSError) as exc:
            self.agent_state = f"failed ({exc})"
            log.error("instance %s: agent could not run: %s", self.instance_id, exc)

    def last_log_line(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def _kill_agent(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass

    def stop(self, deadline_s: float = 60.0) -> None:
        """What terminating the instance does: the agent, the containers and the IMDS endpoint go away."""
        self._stopping.set()
        self._kill_agent()
        if self._thread is not None:
            self._thread.join(deadline_s)
        started = time.monotonic()
        remove_stack(self.project, self.docker_host, deadline_s)
        if self._imds is not None:
            self._imds.stop()
            self._imds = None
        log.info("instance %s: stopped (stack %s removed in %.1fs)", self.instance_id, self.project,
                 time.monotonic() - started)

    def imds_server(self) -> IMDSServer | None:
        """Its IMDS, for the fleet's fault requests (supervisor._apply_imds_faults)."""
        return self._imds

    def as_dict(self) -> dict:
        return {"instance_id": self.instance_id, "group": self.group, "version": self.version,
                "app_port": self.app_port, "compose_project": self.project, "workdir": self.workdir,
                "agent": self.agent_state, "agent_exit": self.agent_exit,
                "imds": self._imds.endpoint if self._imds else None}
