"""Checks shared by the agent's and the deployer's IAM policy tests (iam/*.json)."""

import json
import os
import subprocess
import sys


def parliament_findings(policy_path, known_gaps=()):
    """parliament's findings at INFO and above, as text ('' when none). It reads the policy from stdin
    whenever stdin is not a terminal (it refuses --file then, as in CI). `known_gaps`: finding details that are
    parliament's own data missing a documented key (each one named, with its source, by the caller)."""
    with open(policy_path) as f:
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "parliament"), "--json",
                                 "--minimum_severity", "INFO"], stdin=f, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip() and _detail(line) not in known_gaps]
    if lines or (result.returncode != 0 and not result.stdout.strip()):
        return f"parliament exited {result.returncode}: {chr(10).join(lines)}{result.stderr}"
    return ""


def _detail(line):
    try:
        return json.loads(line).get("detail")
    except (ValueError, AttributeError):
        return None


def granted_operations(policy_path):
    """The API operations the policy allows, without the service prefix; asserts no wildcard and no Deny."""
    with open(policy_path) as f:
        policy = json.load(f)
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "*" not in str(statement["Action"])
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        granted |= {a.split(":", 1)[1] for a in actions}
    return granted
