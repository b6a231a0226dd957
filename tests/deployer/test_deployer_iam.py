"""iam/deployer-policy.json: parliament finds nothing, and it grants exactly the calls the deployer makes."""

import json
import os
import re

from deployer.alarms import MARKER
from tests.iam import granted_operations, parliament_findings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(ROOT, "iam", "deployer-policy.json")


def test_policy_passes_parliament():
    assert parliament_findings(POLICY) == ""


def operations_in_deployer_code():
    ops = set()
    for name in ("aws.py", "bootstrap.py", "store.py", "events.py"):
        with open(os.path.join(ROOT, "deployer", name)) as f:
            source = f.read()
        # self._call(self.asg, "op") and, for clients passed in (S3, ECR of the image's Region), _call(s3, "op");
        # events.py: self._call(self.events, "put_events"), self._call(self.sns, "publish").
        ops |= set(re.findall(r'(?:_call|_pages|_change)\((?:self\.)?\w+, "(\w+)"', source))
        ops |= set(re.findall(r"\bs3\.([a-z][a-z0-9_]+)\b", source))
    # ListObjectsV2 is authorised as s3:ListBucket (IAM's action names for S3 are not the API's).
    return {IAM_NAME.get(op, "".join(part.title() for part in op.split("_"))) for op in ops}


IAM_NAME = {"list_objects_v2": "ListBucket"}


def test_policy_grants_exactly_the_calls_the_deployer_makes():
    granted = granted_operations(POLICY)
    found = operations_in_deployer_code()
    assert len(found) == 41
    assert granted == found


def test_mutations_are_limited_to_tagged_groups_and_retired_instances():
    with open(POLICY) as f:
        statements = {s["Sid"]: s for s in json.load(f)["Statement"]}
    assert statements["FlipOnlyBlueGreenGroups"]["Condition"] == {
        "Null": {"aws:ResourceTag/bluegreen:service": "false"}}
    # The state store: the lock and the journal beside the bundle (the default location), listing only there.
    assert statements["StateStoreLockAndJournal"]["Resource"] == "arn:aws:s3:::bluegreen-bootstrap/*.bluegreen/*"
    assert statements["StateStoreHistory"]["Condition"] == {"StringLike": {"s3:prefix": ["*.bluegreen/*"]}}
    # W1: the tool writes and deletes only alarms named with its marker (deployer/alarms.py MARKER).
    for sid in ("CopyOnlyTheToolsAlarmsWithoutEc2Actions", "DeleteOnlyTheToolsAlarms"):
        assert statements[sid]["Resource"] == f"arn:aws:cloudwatch:*:*:alarm:*{MARKER}*"
    # A copy keeps the operator's other actions (SNS, Lambda, Systems Manager) and acts on scaling policies; the
    # deployer's credentials never make an alarm that stops, reboots or terminates instances (arn:aws:automate).
    allowed = statements["CopyOnlyTheToolsAlarmsWithoutEc2Actions"]["Condition"]["ForAllValues:StringLike"][
        "cloudwatch:AlarmActions"]
    assert "arn:aws:autoscaling:*:*:scalingPolicy:*" in allowed and not any("automate" in a for a in allowed)
    # Issue 12 events: PutEvents only onto event buses (EventBridge's resource for it), Publish onto topics.
    assert statements["PutDeploymentEvents"]["Resource"] == "arn:aws:events:*:*:event-bus/*"
    assert statements["PublishDeploymentEvents"]["Resource"] == "arn:aws:sns:*:*:*"
    # Issue 13, E8: a rollback registers the old instances that still drain, in target groups or Classic ELBs only.
    assert statements["RollbackRegistersDrainingInstances"]["Resource"] == [
        "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*", "arn:aws:elasticloadbalancing:*:*:loadbalancer/*"]
    assert statements["TerminateOnlyRetiredInstances"]["Condition"] == {
        "Null": {"aws:ResourceTag/bluegreen:retired-from": "false"}}
    # Tag-then-terminate must not reach any instance of the account: only those a blue/green group launched
    # (bluegreen:service propagates to them at launch) may be marked retired.
    assert statements["MarkInstancesBeforeDetaching"]["Condition"] == {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["bluegreen:retired-from"]},
        "Null": {"aws:ResourceTag/bluegreen:service": "false"}}


def test_bundles_are_read_by_manifest_and_latest_only():
    # Issue 11: pre-flight reads the new bundle's manifest.json, deploy and push-bootstrap read BASE/LATEST; the
    # deployer reads no other bundle file.
    with open(POLICY) as f:
        statements = {s["Sid"]: s for s in json.load(f)["Statement"]}
    assert statements["ReadBootstrapManifest"]["Resource"] == [
        "arn:aws:s3:::bluegreen-bootstrap/*manifest.json", "arn:aws:s3:::bluegreen-bootstrap/*LATEST"]
