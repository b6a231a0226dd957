"""`bluegreen-agent preflight`: is everything the agent needs on this machine? One line per check.

Two modes (issue 11, audit F1/F17):
- `--bake` checks what is INSTALLED and ENABLED, reading files only, under a root folder (`--root`, default
  `/`). It runs at the end of the AMI bake (ami/bake.sh), where no engine runs (a chroot, a builder about to
  be snapshotted), and fails the bake when something is missing or when agent state would be baked in.
- the default checks that everything ANSWERS on a running instance: the engine pings, `docker compose
  version` runs, each credential helper runs, the config file loads, the work folder is writable.

The checks are plain functions over a root path and an injected command runner, so tests give them a fake
root. Each returns Result lines; `report` decides the exit code.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from agent.compose import PLUGIN_DIRS
from agent.settings import DEFAULT_CONFIG, DEFAULT_WORKDIR

OK, FAIL, WARN = "ok", "FAIL", "warn"

# boto3/botocore ended support for Python 3.9 on 2026-04-29 (audit F2): the agent's virtualenv must run a
# newer one. The agent's code itself stays 3.9-compatible (`make lint`'s vermin).
MIN_PYTHON = (3, 10)
VENV = "/opt/bluegreen-agent/venv"
AGENT_LINK = "/usr/local/bin/bluegreen-agent"  # F25: on operators' PATH
DOCKER_CONFIG = "/root/.docker/config.json"  # the agent and compose run as root, DOCKER_CONFIG unset
DAEMON_JSON = "/etc/docker/daemon.json"
UNIT = "/etc/systemd/system/bluegreen-agent.service"
WATCH_UNIT = "/etc/systemd/system/bluegreen-agent-watch.service"  # issue 16: the in-service-only services
KILL_SWITCH = "/etc/bluegreen/agent.disabled"
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The OnFailure ABANDON fallback of the boot units runs without the agent's venv: the AWS CLI and curl.
FALLBACK_TOOLS = ("aws", "curl")
# Log drivers that bound their own size or ship logs off the instance (F18); json-file needs log-opts.
BOUNDED_LOG_DRIVERS = ("local", "journald", "awslogs", "syslog", "none")
COMMAND_TIMEOUT = 30.0


class NoAnswer(Exception):
    """What a probe (engine ping, IMDS token) raises when the other side does not answer."""


class Result:
    def __init__(self, name, status, message):
        self.name, self.status, self.message = name, status, message

    def line(self):
        return f"{self.status:<4}  {self.name}: {self.message}"

    def __repr__(self):
        return f"Result({self.line()!r})"


def _ok(name, message):
    return Result(name, OK, message)


def _fail(name, message):
    return Result(name, FAIL, message)


def _under(root, path):
    """`path` (absolute, as on the instance) inside `root`."""
    return os.path.join(root, path.lstrip("/"))


def _which(root, name):
    """The instance path of `name` on the standard PATH inside root, or None."""
    for folder in PATH_DIRS:
        candidate = os.path.join(folder, name)
        if os.access(_under(root, candidate), os.X_OK) and os.path.isfile(_under(root, candidate)):
            return candidate
    return None


def _read_json(root, path):
    """(document, None) or (None, why not)."""
    try:
        with open(_under(root, path)) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable: {exc}"


def _run(runner, argv):
    """(returncode, stdout) of a command under a deadline; (None, why) when it could not run."""
    try:
        out = runner(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"`{' '.join(argv)}` did not answer within {COMMAND_TIMEOUT:.0f}s"
    except OSError as exc:
        return None, f"cannot run {argv[0]}: {exc}"
    return out.returncode, (out.stdout or "") + (out.stderr or "")


def _unit_enabled(root, unit):
    """Enabled the way `systemctl enable` leaves it: a symlink in some target's .wants/ folder."""
    pattern = _under(root, f"/etc/systemd/system/*.wants/{unit}")
    return bool(glob.glob(pattern))


# --- the checks ------------------------------------------------------------------------------------------

def check_engine_installed(root):
    missing = [name for name in ("docker", "dockerd") if _which(root, name) is None]
    if missing:
        return _fail("engine", f"{' and '.join(missing)} not installed (AL2023: dnf install docker; "
                               "Debian: apt-get install docker.io)")
    if not _unit_enabled(root, "docker.service"):
        return _fail("engine", "docker.service is not enabled (systemctl enable docker.service)")
    return _ok("engine", "docker and dockerd installed, docker.service enabled")


def compose_plugin(root):
    """The instance path of the compose v2 plugin the docker CLI would find for root, or None."""
    for folder in ("/root/.docker/cli-plugins",) + PLUGIN_DIRS:
        path = os.path.join(folder, "docker-compose")
        if os.path.isfile(_under(root, path)):
            return path
    return None


def parse_compose_version(text):
    """'v2.40.3' or 'Docker Compose version v2.40.3' -> (2, 40, 3); None if there is no version."""
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def check_compose_installed(root, runner):
    path = compose_plugin(root)
    if path is None:
        return _fail("compose", "no compose v2 plugin (docker-compose in /usr/libexec/docker/cli-plugins or the "
                                "other CLI plugin folders): the bake installs a pinned one (F1)")
    if not os.access(_under(root, path), os.X_OK):
        return _fail("compose", f"{path} is not executable (chmod 0755)")
    # The CLI plugin protocol: the docker CLI asks every plugin for this JSON; it needs no engine.
    code, out = _run(runner, [_under(root, path), "docker-cli-plugin-metadata"])
    try:
        version = json.loads(out).get("Version", "") if code == 0 else None
    except ValueError:
        version = None
    parsed = parse_compose_version(version)
    if parsed is None or parsed[0] < 2:
        return _fail("compose", f"{path} does not answer as a compose v2 plugin: {(out or '').strip()[:120]}")
    return _ok("compose", f"{path} {version}")


def check_compose_answers(runner):
    code, out = _run(runner, ["docker", "compose", "version", "--short"])
    parsed = parse_compose_version(out) if code == 0 else None
    if parsed is None or parsed[0] < 2:
        return _fail("compose", f"`docker compose version` failed: {(out or '').strip()[:160]}")
    return _ok("compose", f"docker compose {out.strip()}")


def credential_helpers(config):
    """The helper names a Docker config routes to: credsStore and the credHelpers values."""
    names = set((config.get("credHelpers") or {}).values())
    if config.get("credsStore"):
        names.add(config["credsStore"])
    return sorted(names)


def check_credential_helpers(root, runner=None, docker_config=DOCKER_CONFIG, which=None):
    """Every helper the Docker config names is installed (and, with a runner, runs). F5/F7: compose and the
    pulls read this config, so an ECR sidecar needs its registry here. `which` (shutil.which on a running
    instance) replaces the search of root's standard PATH."""
    config, error = _read_json(root, docker_config)
    if config is None:
        return _fail("credentials", f"{error}: the bake writes credHelpers for the service's ECR registries")
    helpers = credential_helpers(config)
    if not helpers:
        return _fail("credentials", f"{docker_config} names no credential helper (credHelpers or credsStore)")
    problems = []
    for helper in helpers:
        name = f"docker-credential-{helper}"
        binary = which(name) if which else _which(root, name)
        if binary is None:
            problems.append(f"{name} (named by {docker_config}) is not on PATH")
        elif runner is not None:
            # `version` is answered locally by the docker-credential-helpers protocol: no AWS call.
            code, out = _run(runner, [binary, "version"])
            if code != 0:
                problems.append(f"docker-credential-{helper} does not run: {(out or '').strip()[:120]}")
    if problems:
        return _fail("credentials", "; ".join(problems))
    hosts = sorted(config.get("credHelpers") or {})
    return _ok("credentials", f"{', '.join('docker-credential-' + h for h in helpers)}"
                              + (f" for {', '.join(hosts)}" if hosts else " for every registry (credsStore)"))


def python_version_of_venv(root, venv=VENV):
    """(major, minor) of the virtualenv's interpreter from its pyvenv.cfg, or None."""
    try:
        with open(_under(root, os.path.join(venv, "pyvenv.cfg"))) as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r"^\s*version(?:_info)?\s*=\s*(\d+)\.(\d+)", text, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_python(root, running=None):
    found = running or python_version_of_venv(root)
    if found is None:
        return _fail("python", f"no virtualenv at {VENV} (pyvenv.cfg missing)")
    shown = ".".join(map(str, found[:2]))
    if tuple(found[:2]) < MIN_PYTHON:
        return _fail("python", f"the agent's Python is {shown}; boto3 supports {MIN_PYTHON[0]}.{MIN_PYTHON[1]} "
                               "and newer (AL2023: python3.12; Debian bookworm: python3.11)")
    return _ok("python", f"{sys.executable if running else VENV} on Python {shown}")


def check_agent_installed(root):
    binary = os.path.join(VENV, "bin", "bluegreen-agent")
    if not os.access(_under(root, binary), os.X_OK):
        return _fail("agent", f"{binary} is missing or not executable")
    link = _under(root, AGENT_LINK)
    target = os.readlink(link) if os.path.islink(link) else None
    if target is None or os.path.normpath(os.path.join(os.path.dirname(AGENT_LINK), target)) != binary:
        return _fail("agent", f"{AGENT_LINK} is not a symlink to {binary} (operators' PATH, F25)")
    return _ok("agent", f"{AGENT_LINK} -> {binary}")


def check_daemon_json(root):
    config, error = _read_json(root, DAEMON_JSON)
    if config is None:
        return _fail("logs", f"{error}: without log limits json-file logs grow until the disk is full (F18)")
    driver = config.get("log-driver", "json-file")
    if driver in BOUNDED_LOG_DRIVERS:
        return _ok("logs", f"log-driver {driver}")
    opts = config.get("log-opts") or {}
    missing = [key for key in ("max-size", "max-file") if not opts.get(key)]
    if driver != "json-file" or missing:
        what = f"log-driver {driver}" if driver != "json-file" else f"json-file without {' and '.join(missing)}"
        return _fail("logs", f"{DAEMON_JSON}: {what}: container logs are not bounded (F18)")
    return _ok("logs", f"json-file, max-size {opts['max-size']}, max-file {opts['max-file']}")


def _unit_wanted_by(text):
    return [target for line in text.splitlines() if line.strip().startswith("WantedBy=")
            for target in line.split("=", 1)[1].split()]


def check_unit_installed(root):
    """The boot run's unit and the watch's (issue 16): installed, their ExecStart executable, enabled."""
    found = []
    for path in (UNIT, WATCH_UNIT):
        name = os.path.basename(path)
        try:
            with open(_under(root, path)) as f:
                text = f.read()
        except OSError:
            return _fail("unit", f"{path} is missing")
        exec_start = re.search(r"^ExecStart=[-@:+!]*(\S+)", text, re.MULTILINE)
        if exec_start and not os.access(_under(root, exec_start.group(1)), os.X_OK):
            return _fail("unit", f"{name}: ExecStart {exec_start.group(1)} is not executable")
        wanted = _unit_wanted_by(text)
        if not any(os.path.lexists(_under(root, f"/etc/systemd/system/{t}.wants/{name}")) for t in wanted):
            return _fail("unit", f"{name} is not enabled (systemctl enable {name})")
        found.append(f"{name} enabled ({', '.join(wanted)})")
    return _ok("unit", "; ".join(found))


FALLBACK_UNIT = "/etc/systemd/system/bluegreen-agent-abandon.service"
FALLBACK_SCRIPT = "/usr/libexec/bluegreen-agent/abandon"


def check_fallback_tools(root):
    missing = [tool for tool in FALLBACK_TOOLS if _which(root, tool) is None]
    if missing:
        return _fail("fallback", f"{' and '.join(missing)} not on PATH: the boot units' ABANDON fallback "
                                 "runs without the agent's virtualenv and needs them")
    # The fallback itself: the unit OnFailure= names and the script it runs (a missing one fails with 203/EXEC
    # exactly when it is needed).
    absent = [path for path in (FALLBACK_UNIT, FALLBACK_SCRIPT) if not os.path.isfile(_under(root, path))]
    if not os.access(_under(root, FALLBACK_SCRIPT), os.X_OK) and FALLBACK_SCRIPT not in absent:
        absent.append(f"{FALLBACK_SCRIPT} (not executable)")
    if absent:
        return _fail("fallback", f"the ABANDON fallback is not installed: {', '.join(absent)} (ami/bake.sh "
                                 "installs systemd/*.service and systemd/libexec/)")
    return _ok("fallback", f"aws and curl on PATH, {FALLBACK_UNIT} and {FALLBACK_SCRIPT} installed")


def _non_empty(path):
    try:
        return bool(os.listdir(path))
    except OSError:
        return False


def check_no_baked_state(root, workdir=DEFAULT_WORKDIR):
    """F17: an AMI must carry no agent state, no images or containers, no cloud-init instance data, and no
    kill switch, or every instance it launches inherits them."""
    found = []
    if _non_empty(_under(root, workdir)):
        found.append(f"{workdir} is not empty")
    if os.path.lexists(_under(root, KILL_SWITCH)):
        found.append(f"{KILL_SWITCH} exists (every instance would skip the agent)")
    if _non_empty(_under(root, "/var/lib/docker/containers")):
        found.append("containers in /var/lib/docker/containers")
    if glob.glob(_under(root, "/var/lib/docker/image/*/imagedb/content/sha256/*")):
        found.append("images in /var/lib/docker")
    if _non_empty(_under(root, "/var/lib/cloud/instances")):
        found.append("/var/lib/cloud/instances is not empty (cloud-init clean --logs)")
    if found:
        return _fail("state", "; ".join(found))
    return _ok("state", "no agent state, images, containers or cloud-init instance data")


def check_config_loads(config_file):
    from agent.errors import ConfigError
    from agent.settings import load_config

    if not os.path.exists(config_file):
        return _fail("config", f"{config_file} is missing (the instance's user-data writes it)")
    try:
        load_config(config_file, True)
    except ConfigError as exc:
        return _fail("config", str(exc))
    return _ok("config", f"{config_file} loads")


def check_workdir_writable(workdir):
    folder = workdir
    while not os.path.isdir(folder):  # the agent creates it; its nearest existing parent must let it
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        return _fail("workdir", f"{folder} is not writable (the agent keeps releases and status.json in {workdir})")
    return _ok("workdir", f"{workdir} writable")


def check_engine_answers(ping):
    try:
        ping()
    except NoAnswer as exc:
        return _fail("engine", f"the Docker engine does not answer: {exc}")
    return _ok("engine", "the Docker engine answers")


def check_imds(probe):
    """A warning only: preflight also runs off EC2 (a bake builder, a test), where IMDS is absent."""
    try:
        probe()
    except NoAnswer as exc:
        return Result("imds", WARN, f"IMDSv2 token request failed: {exc}")
    return _ok("imds", "IMDSv2 answers")


# --- the two modes ---------------------------------------------------------------------------------------

def bake_checks(root, runner=subprocess.run):
    return [check_engine_installed(root), check_compose_installed(root, runner),
            check_credential_helpers(root), check_python(root), check_agent_installed(root),
            check_daemon_json(root), check_unit_installed(root), check_fallback_tools(root),
            check_no_baked_state(root)]


def live_checks(ping, imds_probe, config_file=DEFAULT_CONFIG, workdir=DEFAULT_WORKDIR, runner=subprocess.run,
                docker_config=DOCKER_CONFIG, root="/"):
    """On a running instance: `docker_config` is the file docker-py and compose read in this environment
    ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), helpers are found on this PATH."""
    return [check_engine_answers(ping), check_compose_answers(runner),
            check_credential_helpers(root, runner, docker_config, which=shutil.which),
            check_python(root, running=sys.version_info[:2]),
            check_daemon_json(root), check_config_loads(config_file), check_workdir_writable(workdir),
            check_imds(imds_probe)]


def failures(results):
    return [r for r in results if r.status == FAIL]
