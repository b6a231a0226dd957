"""The local Docker engine and registry that tests, the demo and the fleet run on.

`up` reuses an engine or registry that already answers and starts its own only when none does, recording
what it started so that `down` stops exactly those processes and nothing else (`make test` run twice in a
row, or beside a developer's own dockerd, must not kill what it did not start).

    python -m localcloud.infra up   [--state DIR]   # prints and writes DIR/env (DOCKER_HOST=..., BLUEGREEN_REGISTRY=...)
    python -m localcloud.infra down [--state DIR]   # stops what `up` started
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import urllib.request

from localcloud.polling import WaitTimeout, wait_until

log = logging.getLogger(__name__)

DEFAULT_STATE = ".infra"
REGISTRY_PORT = int(os.environ.get("BLUEGREEN_REGISTRY_PORT", "5000"))


class InfraError(Exception):
    pass


def _engine_answers(docker_host, timeout=5.0):
    env = dict(os.environ, DOCKER_HOST=docker_host)
    try:
        out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env, check=False,
                             capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _registry_answers(port, timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait(predicate, what, deadline_s, logfile):
    try:
        wait_until(predicate, what, deadline_s, 0.2)
    except WaitTimeout:
        tail = ""
        if logfile and os.path.exists(logfile):
            with open(logfile, errors="replace") as f:
                tail = "".join(f.readlines()[-5:])
        raise InfraError(f"{what} did not come up within {deadline_s}s; last log lines:\n{tail}") from None


def _short_runtime_dir(state):
    # dockerd's exec-root holds unix sockets, whose paths must stay under ~108 bytes: keep it short.
    digest = hashlib.sha1(os.path.abspath(state).encode()).hexdigest()[:10]
    path = f"/tmp/bg-{digest}"
    os.makedirs(path, exist_ok=True)
    return path


def ensure_docker(state):
    """Return (DOCKER_HOST, pid or None): an engine that answers, started by us only if needed."""
    candidates = []
    if os.environ.get("DOCKER_HOST"):
        candidates.append(os.environ["DOCKER_HOST"])
    runtime = _short_runtime_dir(state)
    own_host = f"unix://{runtime}/docker.sock"
    candidates += [own_host, "unix:///var/run/docker.sock"]
    for host in candidates:
        if _engine_answers(host):
            return host, None
    if not shutil.which("dockerd"):
        raise InfraError("no Docker engine answers and dockerd is not installed: run scripts/host-setup.sh")
    data_root = os.path.abspath(os.path.join(state, "docker"))
    os.makedirs(data_root, exist_ok=True)
    logfile = os.path.join(os.path.abspath(state), "dockerd.log")
    # No iptables or bridge: sandboxes often lack the kernel modules; services use host networking.
    cmd = ["dockerd", "--data-root", data_root, "--exec-root", os.path.join(runtime, "exec"),
           "-H", own_host, "--pidfile", os.path.join(runtime, "dockerd.pid"),
           "--iptables=false", "--ip6tables=false", "--bridge=none"]
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _wait(lambda: _engine_answers(own_host), "dockerd", 60, logfile)
    return own_host, proc.pid


def ensure_registry(state, port=REGISTRY_PORT):
    """Return (registry host:port, pid or None)."""
    address = f"127.0.0.1:{port}"
    if _registry_answers(port):
        return address, None
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        raise InfraError(f"no registry answers on {address} and docker-registry is not installed")
    state = os.path.abspath(state)
    config = os.path.join(state, "registry.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n"
                "  delete:\n    enabled: true\nhttp:\n  addr: {}\n".format(os.path.join(state, "registry"), address))
    logfile = os.path.join(state, "registry.log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([binary, "serve", config], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _wait(lambda: _registry_answers(port), "docker-registry", 30, logfile)
    return address, proc.pid


def wait_gone(pid, deadline_s):
    """True once `pid` has exited (reaping it if it is our child), False at the deadline."""
    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)  # a child of ours stays a zombie (and answers kill 0) until reaped
        except ChildProcessError:
            pass
        return False

    try:
        return wait_until(gone, f"process {pid} to exit", deadline_s, 0.2)
    except WaitTimeout:
        return False


def stop_process(pid, deadline_s=20.0):
    """SIGTERM, wait up to deadline_s, then SIGKILL and wait up to 10 s more: True if the process is gone."""
    for sig, wait_s in ((signal.SIGTERM, deadline_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_gone(pid, wait_s):
            return True
    return False


def up(state=DEFAULT_STATE, record=None):
    """Ensure both services; write what THIS call started to `record` (for `down`) and the env file."""
    os.makedirs(state, exist_ok=True)
    started = {}
    docker_host, docker_pid = ensure_docker(state)
    registry, registry_pid = ensure_registry(state)
    if docker_pid:
        started["dockerd"] = docker_pid
    if registry_pid:
        started["registry"] = registry_pid
    with open(record or os.path.join(state, "started.json"), "w") as f:
        json.dump(started, f)
    env = {"DOCKER_HOST": docker_host, "BLUEGREEN_REGISTRY": registry}
    with open(os.path.join(state, "env"), "w") as f:
        f.writelines(f"{key}={value}\n" for key, value in env.items())
    return env, started


def down(state=DEFAULT_STATE, record=None):
    started_path = record or os.path.join(state, "started.json")
    if not os.path.exists(started_path):
        return {}
    with open(started_path) as f:
        started = json.load(f)
    for name in ("registry", "dockerd"):
        if name in started:
            stop_process(started[name])
    os.unlink(started_path)
    return started


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m localcloud.infra")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", default=os.environ.get("BLUEGREEN_INFRA_DIR", DEFAULT_STATE))
    parser.add_argument("--record", help="file naming the processes this `up` started (default STATE/started.json)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            env, started = up(args.state, args.record)
            for key, value in env.items():
                print(f"{key}={value}")
            print("started: %s" % (", ".join(sorted(started)) or "nothing (reused)"), file=sys.stderr)
        else:
            stopped = down(args.state, args.record)
            print("stopped: %s" % (", ".join(sorted(stopped)) or "nothing"), file=sys.stderr)
    except InfraError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
