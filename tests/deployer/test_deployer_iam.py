"""iam/deployer-policy.json: parliament finds nothing, and it grants exactly the calls the deployer makes."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(ROOT, "iam", "deployer-policy.json")


def test_policy_passes_parliament():
    # parliament reads the policy from stdin when stdin is not a terminal.
    with open(POLICY) as f:
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "parliament"), "--json",
                                 "--minimum_severity", "INFO"], stdin=f, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def operations_in_deployer_code():
    ops = set()
    for name in ("aws.py", "bootstrap.py"):
        with open(os.path.join(ROOT, "deployer", name)) as f:
            source = f.read()
        ops |= set(re.findall(r'(?:_call|_pages)\(self\.\w+, "(\w+)"', source))
        ops |= set(re.findall(r"s3\.(\w+)\(", source))
    return {"".join(part.title() for part in op.split("_")) for op in ops}


def test_policy_grants_exactly_the_calls_the_deployer_makes():
    with open(POLICY) as f:
        policy = json.load(f)
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "*" not in str(statement["Action"])
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        granted |= {a.split(":", 1)[1] for a in actions}
    found = operations_in_deployer_code()
    assert len(found) == 22
    assert granted == found


def test_mutations_are_limited_to_tagged_groups_and_retired_instances():
    with open(POLICY) as f:
        statements = {s["Sid"]: s for s in json.load(f)["Statement"]}
    assert statements["FlipOnlyBlueGreenGroups"]["Condition"] == {
        "Null": {"aws:ResourceTag/bluegreen:service": "false"}}
    assert statements["TerminateOnlyRetiredInstances"]["Condition"] == {
        "Null": {"aws:ResourceTag/bluegreen:retired-from": "false"}}
