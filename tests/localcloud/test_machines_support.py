"""The emulator and fleet pieces behind the booted machines (issue 14), without booting one: EC2's
GetConsoleOutput from a posted console, CreateLaunchTemplateVersion with SourceVersion and UserData (L1), what a
machine is launched from (read_launch_spec), the emulation-only vendor-data, and IMDS's role credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

from localcloud.fleet.control import ControlClient
from localcloud.fleet.machine_instance import MachineInstance, read_instance_spec, read_launch_spec, vendor_data
from localcloud.imds import IMDSServer
from localcloud.machines import SUBNET, Network

USER_DATA = "#cloud-config\nwrite_files: []\n"


def _group(world, version="1"):
    world.asg.create_auto_scaling_group(
        AutoScalingGroupName="g", MinSize=0, MaxSize=2, DesiredCapacity=1, VPCZoneIdentifier=world.subnet,
        LaunchTemplate={"LaunchTemplateId": world.template, "Version": version})
    return world.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["g"])["AutoScalingGroups"][0][
        "Instances"][0]["InstanceId"]


def test_get_console_output_answers_the_posted_console_even_after_termination(world, aws):
    instance_id = _group(world)
    ControlClient(aws.endpoint).post_console(instance_id, "boot line\nbluegreen-agent: config failed: x\n")
    world.ec2.terminate_instances(InstanceIds=[instance_id])
    out = world.ec2.get_console_output(InstanceId=instance_id)
    assert out["InstanceId"] == instance_id
    assert "bluegreen-agent: config failed: x" in out["Output"]  # botocore decodes EC2's base64


def test_get_console_output_keeps_the_most_recent_64_kb(world, aws):
    instance_id = _group(world)
    ControlClient(aws.endpoint).post_console(instance_id, "old\n" + "x" * 70000 + "\nnewest line\n")
    text = world.ec2.get_console_output(InstanceId=instance_id)["Output"]
    assert len(text.encode()) == 64 * 1024 and text.endswith("newest line\n") and "old" not in text


def test_a_console_post_without_an_instance_id_is_refused(aws):
    request = urllib.request.Request(aws.endpoint + "/_localcloud/console", method="POST",
                                     data=json.dumps({"output": "x"}).encode())
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=5)
    assert failed.value.code == 400


def test_a_launch_template_version_from_a_source_keeps_its_user_data_and_launches(world):
    """L1: moto alone drops the source's data and fails (HTTP 500) launching a version given UserData."""
    world.ec2.create_launch_template_version(
        LaunchTemplateId=world.template, SourceVersion="1",
        LaunchTemplateData={"UserData": base64.b64encode(USER_DATA.encode()).decode(),
                            "MetadataOptions": {"HttpTokens": "required"}})
    third = world.ec2.create_launch_template_version(
        LaunchTemplateId=world.template, SourceVersion="2", LaunchTemplateData={"InstanceType": "t3.small"})
    data = third["LaunchTemplateVersion"]["LaunchTemplateData"]
    assert data["ImageId"] == "ami-12c6146b" and data["InstanceType"] == "t3.small"
    assert base64.b64decode(data["UserData"]).decode() == USER_DATA
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert _group(world, "3").startswith("i-")


def test_read_launch_spec_reads_what_ec2_launches_the_instance_from(world):
    iam = boto3.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="app-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    world.ec2.create_launch_template_version(
        LaunchTemplateId=world.template, SourceVersion="1",
        LaunchTemplateData={"UserData": base64.b64encode(USER_DATA.encode()).decode(),
                            "IamInstanceProfile": {"Name": "app-profile"},
                            "MetadataOptions": {"HttpEndpoint": "disabled"}})
    _group(world, "2")
    spec = read_launch_spec(world.asg, world.ec2, iam, "g")
    assert (spec.image_id, spec.user_data, spec.role, spec.imds_enabled) == \
        ("ami-12c6146b", USER_DATA.encode(), "app-role", False)


def test_a_machine_boots_what_its_instance_was_launched_with_not_a_newer_template_version(world):
    iam = boto3.client("iam")
    world.ec2.create_launch_template_version(
        LaunchTemplateId=world.template, SourceVersion="1",
        LaunchTemplateData={"UserData": base64.b64encode(USER_DATA.encode()).decode()})
    instance_id = _group(world, "$Latest")
    world.ec2.create_launch_template_version(  # after the launch: the instance keeps what it was launched with
        LaunchTemplateId=world.template, SourceVersion="2",
        LaunchTemplateData={"ImageId": "ami-0newer00000000000", "UserData": base64.b64encode(b"#newer").decode()})
    spec = read_instance_spec(world.asg, world.ec2, iam, "g", instance_id)
    assert (spec.image_id, spec.user_data) == ("ami-12c6146b", USER_DATA.encode())


def test_vendor_data_is_a_script_that_appends_only_the_emulated_endpoint(tmp_path):
    text = vendor_data(4566)
    # A script: a vendor cloud-config's write_files would be replaced by the user-data's own.
    assert text.startswith("#!/bin/sh\n")
    assert "KEY" not in text.upper().replace("KEYS", "")  # no credentials: the machine gets them from IMDS
    # Run it on a copy of the path: the user-data's own agent.env (no final newline) keeps its line.
    folder = tmp_path / "etc" / "bluegreen"
    folder.mkdir(parents=True)
    (folder / "agent.env").write_text("HTTPS_PROXY=http://proxy:3128")
    script = tmp_path / "vendor.sh"
    script.write_text(text.replace("/etc/bluegreen", str(folder)))
    subprocess.run(["sh", str(script)], check=True, timeout=10)
    lines = [line for line in (folder / "agent.env").read_text().splitlines() if line]
    assert lines == ["HTTPS_PROXY=http://proxy:3128", "AWS_ENDPOINT_URL=http://127.0.0.1:4566"]


@pytest.mark.parametrize("unit, state", [
    ({}, "booting"),
    ({"ActiveState": "inactive", "ConditionResult": "yes", "ConditionTimestampMonotonic": "0"}, "booting"),
    ({"ActiveState": "activating"}, "running"),
    ({"ActiveState": "active", "Result": "success"}, "succeeded"),
    ({"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "203"}, "failed (exit-code, exit 203)"),
    # What systemd shows for a unit whose condition failed: no state change, only the check's time stamp.
    ({"ActiveState": "inactive", "ConditionResult": "no", "ConditionTimestampMonotonic": "5",
      "InactiveExitTimestampMonotonic": "0"},
     "skipped (a unit condition failed: no /etc/bluegreen/agent.yml?)"),
])
def test_the_agent_units_state_reads_as_the_fleet_shows_it(unit, state):
    assert MachineInstance._agent_state(unit) == state


def test_each_machine_gets_its_own_slash_30_inside_the_project_subnet():
    first, second = Network("bgm-a", 0), Network("bgm-b", 1)
    assert (first.host_address, first.address) == ("10.231.0.1", "10.231.0.2")
    assert (second.host_address, second.address) == ("10.231.0.5", "10.231.0.6")
    last = Network("bgm-z", SUBNET.num_addresses // 4 - 1)
    assert last.address == "10.231.255.254" and len(last.host_link) <= 15  # a Linux link name's limit


def test_imds_serves_the_instance_profiles_credentials_with_a_token_only():
    with IMDSServer("i-0123456789abcdef0", role="app-role") as imds:
        def get(path, token=None):
            headers = {"X-aws-ec2-metadata-token": token} if token else {}
            with urllib.request.urlopen(urllib.request.Request(imds.endpoint + path, headers=headers),
                                        timeout=5) as resp:
                return resp.read().decode()

        with pytest.raises(urllib.error.HTTPError) as no_token:
            get("/latest/meta-data/iam/security-credentials/app-role")
        assert no_token.value.code == 401  # I1
        token_request = urllib.request.Request(imds.endpoint + "/latest/api/token", method="PUT",
                                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(token_request, timeout=5) as resp:
            token = resp.read().decode()
        assert get("/latest/meta-data/iam/security-credentials/", token) == "app-role"
        creds = json.loads(get("/latest/meta-data/iam/security-credentials/app-role", token))
        assert creds["Code"] == "Success" and creds["AccessKeyId"].startswith("ASIA") and creds["Token"]
        # botocore's own IMDS provider finds them, as the agent's SDK does on EC2
        from botocore.credentials import InstanceMetadataProvider
        from botocore.utils import InstanceMetadataFetcher
        found = InstanceMetadataProvider(InstanceMetadataFetcher(
            timeout=2, num_attempts=1, base_url=imds.endpoint + "/")).load()
        assert found is not None and found.access_key == creds["AccessKeyId"]


def test_without_a_role_imds_has_no_credentials():
    with IMDSServer("i-0123456789abcdef0") as imds:
        assert imds.metadata("/latest/meta-data/iam/security-credentials/") is None


def test_a_missing_instance_console_falls_through_to_ec2(world):
    with pytest.raises(ClientError) as failed:
        world.ec2.get_console_output(InstanceId="i-0000000000000dead")
    assert "InvalidInstanceID" in failed.value.response["Error"]["Code"]
