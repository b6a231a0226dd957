"""What ships around the agent: the IAM policy (`parliament`, and least privilege against the agent's code).
The cloud-init user data and the systemd units: tests/agent/test_boot_files.py."""

import os
import re

from tests.iam import granted_operations, parliament_findings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(ROOT, "iam", "agent-policy.json")


def read(path):
    with open(path) as f:
        return f.read()


# The user-data template and the units: tests/agent/test_boot_files.py.


def test_iam_policy_passes_parliament():
    assert parliament_findings(POLICY) == ""


def _operations_in_agent_code():
    ops = set()
    for name in os.listdir(os.path.join(ROOT, "agent")):
        if name.endswith(".py"):
            source = read(os.path.join(ROOT, "agent", name))
            ops |= set(re.findall(r"client\.(\w+)\(", source)) | set(re.findall(r'get_paginator\("(\w+)"\)', source))
    ops.discard("get_paginator")
    return {"".join(part.title() for part in op.split("_")) for op in ops}


def test_iam_policy_grants_exactly_the_calls_the_agent_makes():
    granted = granted_operations(POLICY)
    # Docker's pull from ECR makes these two with the token GetAuthorizationToken returned.
    pulled_by_docker = {"BatchGetImage", "GetDownloadUrlForLayer"}
    assert granted - pulled_by_docker == _operations_in_agent_code()


def test_imdsv1_fallback_is_off_for_the_agents_aws_credentials():
    # I1: botocore's instance-profile lookup falls back to IMDSv1 when the token PUT fails, unless told not to.
    from agent.cli import _imdsv2_only_session

    assert _imdsv2_only_session().get_config_variable("ec2_metadata_v1_disabled") is True
    with open(os.path.join(ROOT, "systemd", "bluegreen-agent.service")) as f:
        assert "Environment=AWS_EC2_METADATA_V1_DISABLED=true" in f.read().splitlines()
