"""The AMI bake recipe (ami/bake.sh) on a real Debian bookworm root: debootstrap, then the recipe in a chroot
(scripts/bake-debian-root.sh, cached in .cache/bake), then `bluegreen-agent preflight --bake` inside it, on the
baked root and on overlays of it with one thing removed. Needs root, debootstrap and the Debian mirror; cold,
the build takes a few minutes (docs/agent.md, "Baking the AMI")."""

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from agent.errors import EXIT_PREFLIGHT

pytestmark = pytest.mark.bake

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = "usr/libexec/docker/cli-plugins/docker-compose"
HELPER = "usr/bin/docker-credential-ecr-login"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"  # scripts/bake-debian-root.sh's default
CHECKS = ["engine", "compose", "credentials", "python", "agent", "logs", "unit", "fallback", "state"]


@pytest.fixture(scope="module")
def baked():
    result = subprocess.run([os.path.join(ROOT, "scripts", "bake-debian-root.sh")], capture_output=True,
                            text=True, timeout=1200, check=False, env=dict(os.environ, ECR_REGISTRY=REGISTRY))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def in_root(root, *argv, timeout=120):
    return subprocess.run(["chroot", root, "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                           "HOME=/root", *argv], capture_output=True, text=True, timeout=timeout, check=False)


def preflight(root):
    result = in_root(root, "bluegreen-agent", "preflight", "--bake")  # through the PATH symlink (F25)
    return result, {line.split(":", 1)[0].split()[-1]: line for line in result.stdout.splitlines()}


@contextlib.contextmanager
def changed_copy(baked, tmp_path):
    """A writable view of the baked root that leaves the cache untouched: an overlay mount (a copy where
    overlayfs is not allowed)."""
    upper, work, merged = (tmp_path / name for name in ("upper", "work", "merged"))
    for folder in (upper, work, merged):
        folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                              f"lowerdir={baked},upperdir={upper},workdir={work}", str(merged)],
                             capture_output=True, check=False).returncode == 0
    if not mounted:
        merged.rmdir()
        subprocess.run(["cp", "-a", baked, str(merged)], check=True)
    try:
        yield str(merged)
    finally:
        if mounted:
            subprocess.run(["umount", str(merged)], check=True)


def test_the_baked_root_passes_preflight(baked):
    result, lines = preflight(baked)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(lines) == CHECKS and all(line.startswith("ok") for line in lines.values()), result.stdout
    assert lines["compose"] == f"ok    compose: /{COMPOSE} v2.40.3"
    assert lines["credentials"] == f"ok    credentials: docker-credential-ecr-login for {REGISTRY}"
    assert lines["python"].startswith("ok    python: /opt/bluegreen-agent/venv on Python 3.11")
    assert lines["logs"] == "ok    logs: json-file, max-size 10m, max-file 5"


def test_the_baked_root_holds_what_the_recipe_promises(baked):
    with open(os.path.join(baked, "root/.docker/config.json")) as f:
        assert json.load(f) == {"credHelpers": {REGISTRY: "ecr-login"}}
    assert stat.S_IMODE(os.stat(os.path.join(baked, "root/.docker/config.json")).st_mode) == 0o600
    # every unit and helper the repository ships, the helpers executable (the pinned file layout)
    for unit in os.listdir(os.path.join(ROOT, "systemd")):
        if unit.endswith(".service"):
            assert os.path.isfile(os.path.join(baked, "etc/systemd/system", unit)), unit
    for unit in os.listdir(os.path.join(baked, "etc/systemd/system")):
        if unit.startswith("bluegreen-agent") and unit.endswith(".service"):
            with open(os.path.join(baked, "etc/systemd/system", unit)) as f:
                docs = re.findall(r"^Documentation=.*?file://(\S+)", f.read(), re.MULTILINE)
            assert all(os.path.isfile(os.path.join(baked, doc.lstrip("/"))) for doc in docs), docs
    libexec = os.path.join(ROOT, "systemd", "libexec")
    for helper in (os.listdir(libexec) if os.path.isdir(libexec) else []):
        assert os.access(os.path.join(baked, "usr/libexec/bluegreen-agent", helper), os.X_OK), helper
    # the agent alone, from the lock (F2): no deployer or localcloud, every pin as locked
    venv = "/opt/bluegreen-agent/venv/bin/python"
    assert in_root(baked, venv, "-c", "import agent.cli").returncode == 0
    for package in ("deployer", "localcloud", "boto3"):
        assert in_root(baked, venv, "-c", f"import {package}").returncode != 0, package
    frozen = set(in_root(baked, venv, "-m", "pip", "freeze").stdout.lower().split())
    with open(os.path.join(ROOT, "ami", "agent-requirements.txt")) as f:
        pins = {line.split()[0].lower() for line in f if "==" in line and not line.startswith("#")}
    assert pins <= frozen, pins - frozen
    assert in_root(baked, "bluegreen-agent", "--version").stdout.strip() == "bluegreen-agent 0.1.0"
    # the compose plugin is the pinned binary, and the credential helper answers `version` without AWS
    assert "v2.40.3" in in_root(baked, f"/{COMPOSE}", "version").stdout
    assert in_root(baked, "docker-credential-ecr-login", "version").returncode == 0
    # nothing of the builder's own life: no agent state, no Docker data, no apt lists, no policy-rc.d
    for gone in ("opt/bluegreen", "usr/sbin/policy-rc.d", "tmp/bake"):
        assert not os.path.exists(os.path.join(baked, gone)), gone
    docker_data = os.path.join(baked, "var/lib/docker")
    assert not os.path.isdir(docker_data) or os.listdir(docker_data) == []


def test_the_installed_units_verify_inside_the_root(baked):
    units = sorted(u for u in os.listdir(os.path.join(ROOT, "systemd")) if u.endswith(".service"))
    assert "bluegreen-agent.service" in units
    result = subprocess.run(["systemd-analyze", "verify", f"--root={baked}", *units],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing,check,line,exact", [
    (COMPOSE, "compose", "FAIL  compose: no compose v2 plugin", False),
    (HELPER, "credentials", ("FAIL  credentials: docker-credential-ecr-login (named by /root/.docker/config.json) "
                             "is not on PATH"), True),
], ids=["compose", "credential-helper"])
def test_a_root_missing_one_part_fails_preflight_on_that_check_alone(baked, tmp_path, missing, check, line, exact):
    with changed_copy(baked, tmp_path) as root:
        os.remove(os.path.join(root, missing))
        result, lines = preflight(root)
    assert result.returncode == EXIT_PREFLIGHT, result.stdout + result.stderr
    assert [name for name, text in lines.items() if text.startswith("FAIL")] == [check], result.stdout
    assert lines[check] == line if exact else lines[check].startswith(line), lines[check]
    assert result.stderr.strip() == f"bluegreen-agent: preflight failed: 1 of 9 checks failed: {check}"
    assert os.path.isfile(os.path.join(baked, missing))  # the cached root is untouched


def test_the_recipe_refuses_a_compose_binary_that_is_not_the_pinned_one(baked, tmp_path):
    """The checksum gate of ami/bake.sh, run in the baked root: a changed binary is not installed."""
    with changed_copy(baked, tmp_path) as root:
        art = os.path.join(root, "tmp", "bake")
        os.makedirs(art)
        for name in ("bake.sh", "versions.env"):
            shutil.copy(os.path.join(ROOT, "ami", name), art)
        with open(os.path.join(art, "bake.env"), "w") as f:
            f.write(f'ECR_REGISTRIES="{REGISTRY}"\nAGENT_PYTHON=3.11\nARCH={os.uname().machine}\n')
        with open(os.path.join(art, "docker-compose"), "wb") as f:
            f.write(b"#!/bin/sh\necho not compose\n")
        os.remove(os.path.join(root, COMPOSE))
        # only the compose step matters here: the packages are installed, so skip apt (no network needed)
        with open(os.path.join(art, "bake.sh")) as f:
            recipe = f.read()
        script = recipe.replace("elif command -v apt-get", "elif false").replace('  die "neither dnf', '  true "')
        assert script.count("elif false") == 1 and script.count('  true "') == 1, "the recipe's shape changed"
        with open(os.path.join(art, "bake.sh"), "w") as f:
            f.write(script)
        result = in_root(root, "/bin/bash", "/tmp/bake/bake.sh")
        installed = os.path.exists(os.path.join(root, COMPOSE))
    assert result.returncode != 0
    assert "bake: docker-compose does not match COMPOSE_SHA256_" in result.stderr, result.stderr
    assert not installed
