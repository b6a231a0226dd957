"""Failure paths through the real boot (issue 14): a machine boots the baked image with systemd-nspawn, cloud-init
applies the launch template's user-data, systemd runs the baked units, and the launch hook ends ABANDONed with
the reason on the console, which the emulated EC2 serves with GetConsoleOutput after the machine is gone.

The emulated AWS, HAProxy and the fleet's supervisor run in this process (the supervisor boots machines through
localcloud.fleet.machine_instance.MachineFactory, as the daemon does); the whole fleet on machines, serving
traffic, is test_fleet.py's.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import time

import boto3
import pytest

from localcloud import machines
from localcloud.fleet.control import ControlClient
from localcloud.fleet.haproxy import LoadBalancer
from localcloud.fleet.machine_instance import MachineFactory
from localcloud.fleet.supervisor import FleetSupervisor
from localcloud.stack import create_stack_service
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
TIME_SCALE = 0.2  # the fleet's clock
HOOK_TIMEOUT = 120  # AWS seconds: 24 s here, ample for the fallback's three AWS CLI calls on a busy host
NO_AGENT_AMI = "ami-0noagent0000000"
SETTINGS_AMI = "ami-0settings000000"  # the agent's settings baked into the image: no user-data needed
TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "cloud-init", "user-data.yaml.tmpl")


class World:
    def __init__(self, tmp, patch, cloud) -> None:
        self.cloud = cloud  # the session's emulated AWS (one per process), on the fleet's clock for this module
        reason = machines.available()
        assert reason is None, reason  # CI runs as root with systemd-container: never skipped
        self.root = machines.baked_root()
        self.layers = str(tmp / "layers")
        cloud.reset()
        cloud.configure_time(time_scale=TIME_SCALE, health_interval=300.0)
        patch.setenv("AWS_ENDPOINT_URL", self.cloud.endpoint)
        self.session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing",
                                             aws_secret_access_key="testing")
        self.asg = self.client("autoscaling")
        self.ec2 = self.client("ec2")
        control = ControlClient(self.cloud.endpoint)
        factory = MachineFactory(self.asg, self.ec2, self.client("iam"), self.root,
                                 int(self.cloud.endpoint.rsplit(":", 1)[1]), None,
                                 images={NO_AGENT_AMI: [without_agent(self.layers), self.root],
                                         SETTINGS_AMI: [with_settings(str(tmp / "settings")), self.root]},
                                 on_console=control.post_console, agent_deadline_s=120.0)
        self.lb = LoadBalancer(str(tmp / "lb"), port=0, check_interval=1.0).start()
        self.fleet = FleetSupervisor(control, self.asg, self.client("elbv2"), self.lb, str(tmp / "fleet"),
                                     self.cloud.endpoint, REGION, "", time_scale=TIME_SCALE,
                                     instance_factory=factory).start()
        self.svc = create_stack_service(self.session, name="boot", bucket="boot-bootstrap", version="1.0",
                                        hook_timeout=HOOK_TIMEOUT, health_url="http://127.0.0.1:8080/health",
                                        image="127.0.0.1:5000/boot-web")
        self.group = self.svc["groups"]["blue"]
        self.template = self.svc["launch_template"]

    def client(self, name):
        return self.session.client(name, endpoint_url=self.cloud.endpoint)

    def stop(self) -> None:
        for part in ("fleet", "lb"):  # what __init__ got to start, even when it failed half way
            if getattr(self, part, None) is not None:
                getattr(self, part).stop()
        self.cloud.reset()

    def launch(self, **changes) -> str:
        """A new launch template version with `changes`, the group on it at capacity 1; the instance's id."""
        version = self.ec2.create_launch_template_version(
            LaunchTemplateId=self.template, SourceVersion="1",
            LaunchTemplateData=changes)["LaunchTemplateVersion"]["VersionNumber"]
        self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group, MinSize=0, MaxSize=1, DesiredCapacity=1,
                                           LaunchTemplate={"LaunchTemplateId": self.template,
                                                           "Version": str(version)})

        def launched():
            group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]
            return group["Instances"][0]["InstanceId"] if group["Instances"] else None

        return wait_until(launched, "the group to launch an instance", deadline_s=30.0)

    def abandoned(self, instance_id: str, deadline_s: float = 120.0) -> float:
        """Wait until the launch was ABANDONed (the instance left the group, its launch activity Cancelled)
        and its machine is powered off; returns the seconds it took."""
        started = time.monotonic()

        def gone():
            group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]
            if any(i["InstanceId"] == instance_id for i in group["Instances"]):
                return None
            retired = self.fleet.retired.get(instance_id)
            return retired is not None and not retired.machine.running() and retired.machine.network is None

        wait_until(gone, f"{instance_id}'s launch to be abandoned and its machine powered off", deadline_s, 0.5)
        took = time.monotonic() - started
        # The group launched a replacement meanwhile (desired 1): empty it, so the next test starts clean.
        self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group, DesiredCapacity=0)

        def empty():
            group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]
            return not group["Instances"] and not self.fleet.instances

        wait_until(empty, "the group and the fleet to be empty", deadline_s, 0.5)
        activities = self.asg.describe_scaling_activities(AutoScalingGroupName=self.group)["Activities"]
        launch = [a for a in activities if instance_id in a["Description"] and "Launching" in a["Description"]]
        assert launch and launch[0]["StatusCode"] == "Cancelled", activities
        self.last_activity = launch[0]["StatusMessage"]
        return took

    def console(self, instance_id: str) -> str:
        out = self.ec2.get_console_output(InstanceId=instance_id)
        assert out["InstanceId"] == instance_id
        return out["Output"]  # botocore decodes EC2's base64


def without_agent(folder: str) -> str:
    """An overlay layer that removes the agent from the image root below it (overlayfs whiteouts: character
    devices 0/0), as an image baked without the agent's virtualenv would be."""
    for path in ("opt/bluegreen-agent", "usr/local/bin/bluegreen-agent"):
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if not os.path.exists(full):
            os.mknod(full, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    return folder


def with_settings(folder: str) -> str:
    """An overlay layer with the agent's settings in the image itself (an AMI baked for one service)."""
    path = os.path.join(folder, "etc", "bluegreen", "agent.yml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("workdir: /opt/bluegreen\ncompose_project: boot\nallowed_buckets: [boot-bootstrap]\n")
    return folder


def user_data_like_envsubst(**values) -> str:
    """The user-data template rendered as envsubst does (audit F15): a variable not given becomes empty."""
    with open(TEMPLATE) as f:
        text = f.read()
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), ""), text)


@pytest.fixture(scope="module")
def world(tmp_path_factory, cloud):
    with pytest.MonkeyPatch.context() as patch:
        # localcloud.stack makes its clients from the session: they find the emulation by the environment (C1)
        patch.delenv("AWS_PROFILE", raising=False)
        world = World.__new__(World)
        try:
            world.__init__(tmp_path_factory.mktemp("machines"), patch, cloud)
            yield world
        finally:
            world.stop()


def test_a_user_data_with_a_missing_variable_abandons_the_launch_and_says_why_on_the_console(world):
    user_data = user_data_like_envsubst(COMPOSE_PROJECT="boot", S3_UNSIGNED="false")  # no BOOTSTRAP_BUCKET
    instance_id = world.launch(UserData=base64.b64encode(user_data.encode()).decode())
    world.abandoned(instance_id)
    console = world.console(instance_id)
    # cloud-init wrote the settings, systemd ran the baked unit, the agent refused them and ABANDONed.
    assert "Cloud-init v." in console and "finished at" in console
    assert re.search(r"bluegreen-agent\[\d+\]: .*allowed_buckets is empty", console), console[-3000:]
    assert world.fleet.retired[instance_id].agent_state.startswith("failed")
    assert world.last_activity.endswith("Lifecycle Action Completed with ABANDON Result"), world.last_activity


def test_an_image_without_the_agent_abandons_the_launch_through_the_units_fallback(world):
    instance_id = world.launch(ImageId=NO_AGENT_AMI)
    world.abandoned(instance_id)
    console = world.console(instance_id)
    # The agent unit could not even start (203/EXEC); its OnFailure= fallback ABANDONed with curl and the CLI.
    assert re.search(r"bluegreen-agent-abandon\[\d+\]: bluegreen-agent-abandon: ABANDONing the launch of "
                     + instance_id, console), console[-3000:]
    assert "203" in world.fleet.retired[instance_id].agent_state
    assert world.last_activity.endswith("Lifecycle Action Completed with ABANDON Result"), world.last_activity


def test_an_agent_that_cannot_reach_imds_says_so_and_the_hooks_own_timeout_abandons_it(world):
    # Its settings are in the image, so it runs; IMDS answers 403 (disabled, I1): no instance id, no
    # credentials, for the agent and for its fallback alike. Both say why on the console, and only the launch
    # hook's own HeartbeatTimeout (DefaultResult ABANDON) releases the launch.
    instance_id = world.launch(ImageId=SETTINGS_AMI, MetadataOptions={"HttpEndpoint": "disabled"})
    world.abandoned(instance_id)
    console = world.console(instance_id)
    assert re.search(r"bluegreen-agent\[\d+\]: bluegreen-agent: identity failed: IMDS at http://169.254.169.254 "
                     r"answered 403", console), console[-3000:]
    assert re.search(r"bluegreen-agent-abandon\[\d+\]: .*the launch hook's own timeout applies", console), \
        console[-3000:]
    assert world.last_activity.endswith("was abandoned: Heartbeat Timeout"), world.last_activity


def test_an_instance_without_imds_gets_no_user_data_and_is_abandoned_by_the_hooks_own_timeout(world):
    instance_id = world.launch(MetadataOptions={"HttpEndpoint": "disabled", "HttpTokens": "required"})
    world.abandoned(instance_id)
    console = world.console(instance_id)
    # EC2's datasource reads the user-data from IMDS: with the endpoint disabled cloud-init runs with none, writes
    # no settings, and the agent unit's condition keeps it from running; no credentials either (I1). Only the
    # launch hook's own HeartbeatTimeout (DefaultResult ABANDON) releases the launch, worded as AWS words it.
    assert "Cloud-init v." in console and "finished at" in console, console[-3000:]
    assert not re.search(r"bluegreen-agent(-abandon)?\[\d+\]", console), console[-3000:]
    assert world.fleet.retired[instance_id].agent_state.startswith("skipped"), \
        world.fleet.retired[instance_id].agent_state
    assert world.last_activity.endswith("was abandoned: Heartbeat Timeout"), world.last_activity
