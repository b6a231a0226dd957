"""What ships around the agent: cloud-init user data (Debian's real `cloud-init schema`), the systemd unit
(`systemd-analyze verify`) and the IAM policy (`parliament`, and least privilege against the agent's code)."""

import os
import re
import string
import subprocess
import sys

import pytest
import yaml

from agent.settings import load_config
from tests.iam import granted_operations, parliament_findings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "cloud-init", "user-data.yaml.tmpl")
UNIT = os.path.join(ROOT, "systemd", "bluegreen-agent.service")
POLICY = os.path.join(ROOT, "iam", "agent-policy.json")
PTC_POLICY = os.path.join(ROOT, "iam", "agent-ptc-policy.json")
VALUES = {"PIP_INDEX_URL": "https://pypi.internal.example.com/simple", "PACKAGE_SPEC": "asg-bluegreen==0.1.0",
          "COMPOSE_PROJECT": "web", "BOOTSTRAP_BUCKET": "bluegreen-bootstrap", "S3_UNSIGNED": "true"}


def read(path):
    with open(path) as f:
        return f.read()


def rendered(tmp_path):
    with open(TEMPLATE) as f:
        text = string.Template(f.read()).substitute(VALUES)  # strict: every variable must be given
    path = tmp_path / "user-data.yaml"
    path.write_text(text)
    return path, yaml.safe_load(text)


@pytest.mark.system_tools  # Debian's cloud-init: not in `make unit`
def test_cloud_init_user_data_is_valid_cloud_config(tmp_path):
    path, _ = rendered(tmp_path)
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stdout + result.stderr


def test_cloud_init_installs_from_the_index_writes_the_config_and_starts_the_unit(tmp_path):
    _, doc = rendered(tmp_path)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert files["/etc/systemd/system/bluegreen-agent.service"] == read(UNIT)
    config = tmp_path / "agent.yml"
    config.write_text(files["/etc/bluegreen/agent.yml"])
    assert load_config(str(config), required=True) == {  # the agent's own loader accepts it
        "workdir": "/opt/bluegreen", "compose_project": "web", "allowed_buckets": ["bluegreen-bootstrap"],
        "s3_unsigned": True}
    commands = [" ".join(c) for c in doc["runcmd"]]
    assert "python3 -m venv /opt/bluegreen-agent/venv" in commands
    assert ("/opt/bluegreen-agent/venv/bin/pip install --quiet --index-url "
            "https://pypi.internal.example.com/simple asg-bluegreen==0.1.0") in commands
    assert commands[-1] == "systemctl enable --now --no-block bluegreen-agent.service"


@pytest.mark.system_tools  # systemd-analyze: not in `make unit`
def test_systemd_unit_verifies_and_has_the_required_shape(tmp_path):
    unit = read(UNIT)
    for line in ("Type=oneshot", "RemainAfterExit=yes", "ConditionPathExists=!/etc/bluegreen/agent.disabled",
                 "Wants=network-online.target docker.service", "After=network-online.target docker.service",
                 "StandardError=journal", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    # `verify` checks that ExecStart exists and is executable; this machine has the agent in .venv, not in
    # /opt/bluegreen-agent/venv as on an instance, so point ExecStart there and verify everything else as is.
    agent = os.path.join(os.path.dirname(sys.executable), "bluegreen-agent")
    local = tmp_path / "bluegreen-agent.service"
    local.write_text(unit.replace("/opt/bluegreen-agent/venv/bin/bluegreen-agent", agent))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


# ec2:SourceInstanceARN is an EC2 condition key for every EC2 action (the EC2 Service Authorization Reference,
# and docs/contract.md's grant for `bluegreen:running`); parliament's bundled data does not list it for
# CreateTags.
PARLIAMENT_GAPS = ("Unknown condition ec2:SourceInstanceARN for action ec2:CreateTags",)


def test_iam_policy_passes_parliament():
    assert parliament_findings(POLICY, PARLIAMENT_GAPS) == ""


def test_the_pull_through_cache_statement_passes_parliament():
    # The ECR User Guide (pull-through-cache-iam) scopes BatchImportUpstreamImage to the cache's repositories;
    # parliament's bundled data predates that and wants "*".
    gap = [{"action": "ecr:BatchImportUpstreamImage", "required_format": "*"}]
    assert parliament_findings(PTC_POLICY, (gap,)) == ""
    assert granted_operations(PTC_POLICY) == {"BatchImportUpstreamImage", "CreateRepository"}


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
