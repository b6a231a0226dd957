"""What ships around the agent: the IAM policy (`parliament`, and least privilege against the agent's code).
The cloud-init user data and the systemd units: tests/agent/test_boot_files.py."""

import json
import os
import re

import pytest

from tests.iam import granted_operations, parliament_findings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(ROOT, "iam", "agent-policy.json")
# Attached only where compose_env holds secret references (F15; docs/agent.md "Secrets").
SECRETS_POLICY = os.path.join(ROOT, "iam", "agent-secrets-policy.json")
PTC_POLICY = os.path.join(ROOT, "iam", "agent-ptc-policy.json")


def read(path):
    with open(path) as f:
        return f.read()


# The user-data template and the units: tests/agent/test_boot_files.py.


# ec2:SourceInstanceARN is an EC2 condition key for every EC2 action (the EC2 Service Authorization Reference,
# and docs/contract.md's grant for `bluegreen:running`); parliament's bundled data does not list it for
# CreateTags.
PARLIAMENT_GAPS = ("Unknown condition ec2:SourceInstanceARN for action ec2:CreateTags",)


@pytest.mark.parametrize("policy", [POLICY, SECRETS_POLICY], ids=os.path.basename)
def test_iam_policy_passes_parliament(policy):
    assert parliament_findings(policy, PARLIAMENT_GAPS) == ""


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
    # ListObjectsV2 is authorised as s3:ListBucket (IAM's action names for S3 are not the API's).
    return {IAM_NAME.get(op, "".join(part.title() for part in op.split("_"))) for op in ops}


IAM_NAME = {"list_objects_v2": "ListBucket"}


def test_iam_policy_grants_exactly_the_calls_the_agent_makes():
    granted = granted_operations(POLICY) | granted_operations(SECRETS_POLICY)
    # Docker's pull from ECR makes these two with the token GetAuthorizationToken returned.
    pulled_by_docker = {"BatchGetImage", "GetDownloadUrlForLayer"}
    # SSM and Secrets Manager call kms:Decrypt for the agent when a customer managed key encrypts a value.
    decrypted_via_service = {"Decrypt"}
    assert granted - pulled_by_docker - decrypted_via_service == _operations_in_agent_code()


def test_imdsv1_fallback_is_off_for_the_agents_aws_credentials():
    # I1: botocore's instance-profile lookup falls back to IMDSv1 when the token PUT fails, unless told not to.
    from agent.cli import _imdsv2_only_session

    assert _imdsv2_only_session().get_config_variable("ec2_metadata_v1_disabled") is True
    with open(os.path.join(ROOT, "systemd", "bluegreen-agent.service")) as f:
        assert "Environment=AWS_EC2_METADATA_V1_DISABLED=true" in f.read().splitlines()


def test_iam_policy_is_scoped_to_the_service_its_bundle_and_the_account():
    # Issue 11 part 6 (audit F20): placeholders to replace, each one name: bluegreen-bootstrap (the bucket), demo
    # (the service, whose bundles push-bootstrap writes under s3://BUCKET/demo/), 123456789012 (the account).
    with open(POLICY) as f:
        statements = {s["Sid"]: s for s in json.load(f)["Statement"]}
    assert statements["ReadBootstrapBundle"]["Resource"] == "arn:aws:s3:::bluegreen-bootstrap/demo/*"
    # S3: without s3:ListBucket a missing key answers 403; the agent asks this listing to tell missing from denied.
    listing = statements["TellMissingBundleObjects"]
    assert listing["Action"] == "s3:ListBucket" and listing["Resource"] == "arn:aws:s3:::bluegreen-bootstrap"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["demo/*"]}}
    # CompleteLifecycleAction and RecordLifecycleActionHeartbeat take aws:ResourceTag/<key> on the group (the
    # Service Authorization Reference): only the service's own groups.
    hook = statements["LaunchLifecycleHookOfBlueGreenGroups"]
    assert hook["Condition"] == {"StringEquals": {"aws:ResourceTag/bluegreen:service": "demo"}}
    assert statements["EcrPull"]["Resource"] == "arn:aws:ecr:*:123456789012:repository/*"


def test_the_optional_kms_statement_decrypts_only_through_s3_of_its_region():
    # S4, audit F4: for a bundle bucket with SSE-KMS and a customer managed key (signed reads only).
    path = os.path.join(ROOT, "iam", "agent-policy-kms.json")
    assert parliament_findings(path) == ""
    with open(path) as f:
        (statement,) = json.load(f)["Statement"]
    assert statement["Action"] == "kms:Decrypt"
    region = statement["Resource"].split(":")[3]
    assert statement["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
