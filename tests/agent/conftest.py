"""Fixtures for the agent's tests: a real emulated group (boto3 over HTTP against the `aws` fixture), an IMDSv2
emulator answering for one of its instances, the bootstrap bundle in S3, and `bluegreen-agent` as a subprocess
(or in-process, `agent.cli.main(argv, environ)`, where a test needs no real process)."""

import json
import os
import signal
import subprocess
import sys
import uuid

import boto3
import pytest
import yaml

from agent import contract
from localcloud.imds import IMDSServer
from tests.helpers import Outcome, expect_exit, free_port, wait_until

REGION = "us-east-1"
BUCKET = "bluegreen-bootstrap"
PREFIX = "web/"
# BLUEGREEN_AGENT_BIN runs these tests against another build of the agent, e.g. one under Python 3.9 (Amazon
# Linux 2023's interpreter): `BLUEGREEN_AGENT_BIN=/path/to/py39/bin/bluegreen-agent pytest tests/agent`.
AGENT = os.environ.get("BLUEGREEN_AGENT_BIN") or os.path.join(os.path.dirname(sys.executable), "bluegreen-agent")
# Ports handed out this session: free_port() skips them even before their app has bound them.
PORTS_TAKEN = set()


def app_port():
    """A port for an app or a "closed" endpoint, below the ephemeral range and not handed out before."""
    return free_port(PORTS_TAKEN)


def agent_error(result, code):
    """Assert the exit code and that stderr has exactly one `bluegreen-agent: STEP failed: ...` line, last but for logging;
    return that line (the agent's one-line format: tests.helpers.expect_exit knows `PROG: error:` only)."""
    expect_exit(result, code)
    lines = [line for line in result.stderr.splitlines() if line.startswith("bluegreen-agent: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    # The last line but for progress logging: a run that ABANDONs prints it before the ABANDON (F16), and the
    # ABANDON's own log line may follow it (under systemd progress goes to the journal, not the console).
    rest = result.stderr.strip().splitlines()
    after = rest[rest.index(lines[0]) + 1:]
    assert all(line.split(" ", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR") for line in after), result.stderr
    return lines[0]


class Group:
    """One Auto Scaling group in the emulated AWS, with its instances and tags."""

    def __init__(self, endpoint, name, tags, capacity=1, launch_hook=None):
        self.name = name
        self.asg = boto3.client("autoscaling", region_name=REGION, endpoint_url=endpoint)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # aws-rules.md: moto hands out private IPs without reuse; /20 keeps many launches from running dry.
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/20", AvailabilityZone=REGION + "a")
        template = ec2.create_launch_template(
            LaunchTemplateName=name + "-lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
        group_tags = [{"Key": k, "Value": v, "PropagateAtLaunch": False, "ResourceId": name,
                       "ResourceType": "auto-scaling-group"} for k, v in tags.items()]
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=10, DesiredCapacity=0 if launch_hook else capacity,
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplate"]["LaunchTemplateId"]},
            VPCZoneIdentifier=subnet["Subnet"]["SubnetId"], Tags=group_tags)
        if launch_hook:
            # A6: the hook must exist before the launch for the instance to wait in Pending:Wait.
            self.asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName=launch_hook,
                                        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                        HeartbeatTimeout=30, DefaultResult="ABANDON")
            self.asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=capacity)
        self.instance_ids = self._wait_for_instances(capacity)

    def lifecycle_state(self, instance_id):
        found = self.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
        return found[0]["LifecycleState"] if found else None

    def _wait_for_instances(self, count, deadline=30.0):
        def listed():
            groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])["AutoScalingGroups"]
            found = [i["InstanceId"] for i in groups[0]["Instances"]]
            return found if len(found) >= count else None

        return wait_until(listed, f"group {self.name} to list {count} instances", deadline_s=deadline, interval=0.1)

    def tag_instance(self, instance_id, tags):
        """Give the instance its own tags (e.g. stale ones that disagree with the group's); return what it has."""
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=self.asg.meta.endpoint_url)
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
        return {t["Key"]: t["Value"] for t in found}

    def set_tags(self, **tags):
        self.asg.create_or_update_tags(Tags=[
            {"Key": "bluegreen:" + k.replace("_", "-"), "Value": v, "PropagateAtLaunch": False,
             "ResourceId": self.name, "ResourceType": "auto-scaling-group"} for k, v in tags.items()])


def upload_bundle(endpoint, files, bucket=BUCKET, prefix=PREFIX, manifest_files=None, public=False):
    """Put files ({path: bytes}) and their manifest.json under s3://bucket/prefix; manifest_files overrides the
    manifest's list (to test a lying manifest)."""
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if public:
        # S1: the seed reads through a VPC endpoint that the bucket policy allows; here: anonymous GetObject.
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    for path, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + path, Body=data)
    if manifest_files is None:
        body = contract.manifest_bytes(contract.build_manifest(
            (path, contract.sha256_hex(data)) for path, data in files.items()))
    else:  # a manifest the contract would never build: what a broken or hostile writer leaves
        body = json.dumps({"files": manifest_files}).encode()
    s3.put_object(Bucket=bucket, Key=prefix + contract.MANIFEST, Body=body)
    return contract.format_s3_url(bucket, prefix)


class AgentRunner:
    """Runs `bluegreen-agent` as a real subprocess for one emulated instance."""

    def __init__(self, tmp_path, imds, config=None, name="agent"):
        self.workdir = str(tmp_path / (name + "-work"))
        self.config_path = str(tmp_path / (name + ".yml"))
        self.imds = imds
        self.config = dict(config or {})
        self.config.setdefault("imds_deadline", 10)
        self.config.setdefault("group_deadline", 10)

    def env(self):
        env = dict(os.environ)
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.imds.endpoint
        env.pop("BLUEGREEN_AGENT_CONFIG", None)
        return env

    def command(self, *args):
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f)
        return [AGENT, *args[:1], "--config", self.config_path, "--workdir", self.workdir, *args[1:]]

    def start(self, *args):
        return subprocess.Popen(self.command(*args), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def __call__(self, *args, timeout=120):
        return subprocess.run(self.command(*args), env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def in_process(self, capsys, *args):
        """The same command through `agent.cli.main(argv, environ)` in this process (its logs go to caplog)."""
        from agent import cli

        capsys.readouterr()
        saved = signal.getsignal(signal.SIGTERM)  # main() installs its own handler for systemd's stop
        try:
            code = cli.main(self.command(*args)[1:], environ=self.env())
        finally:
            signal.signal(signal.SIGTERM, saved)
        out = capsys.readouterr()
        return Outcome(code, out.out, out.err)

    def status(self):
        with open(os.path.join(self.workdir, "status.json")) as f:
            return json.load(f)


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:8]


@pytest.fixture
def imds_for():
    servers = []

    def start(instance_id, endpoint):
        server = IMDSServer(instance_id, region=REGION, aws_endpoint=endpoint).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
