"""Helpers for the emulated-AWS tests: boto3 clients over HTTP, a small VPC, groups, and bounded waits."""

from __future__ import annotations

import time
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})  # no retry at all


class World:
    """boto3 clients against the emulated AWS (a separate HTTP client, as the tools use it) and builders."""

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.asg = boto3.client("autoscaling", config=NO_RETRIES)
        self.ec2 = boto3.client("ec2", config=NO_RETRIES)
        self.elbv2 = boto3.client("elbv2", config=NO_RETRIES)
        self.elb = boto3.client("elb", config=NO_RETRIES)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # aws-rules.md: moto does not reuse private IPs soon, so /20 subnets.
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.0.0.0/20",
                                             AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName="lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]

    def target_group(self, name: str = "web", delay: int = 30, **kwargs: Any) -> str:
        """A target group; `delay` is the deregistration delay in AWS seconds (30: 0.3 s at the test scale)."""
        arn = self.elbv2.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId=self.vpc, **kwargs)[
            "TargetGroups"][0]["TargetGroupArn"]
        self.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
        return arn

    def group(self, name: str, desired: int = 2, min_size: int = 0, max_size: int = 10,
              target_groups: tuple[str, ...] = (), **kwargs: Any) -> str:
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=min_size, MaxSize=max_size, DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateId": self.template}, VPCZoneIdentifier=self.subnet,
            TargetGroupARNs=list(target_groups), **kwargs)
        return name

    def describe(self, name: str) -> dict[str, Any]:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def states(self, name: str) -> dict[str, str]:
        return {i["InstanceId"]: i["LifecycleState"] for i in self.describe(name)["Instances"]}

    def health(self, tg_arn: str) -> dict[str, str]:
        return {d["Target"]["Id"]: d["TargetHealth"]["State"]
                for d in self.elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}

    def wait_in_service(self, name: str, count: int, timeout: float = 10.0) -> list[str]:
        states = wait_for(lambda: self.states(name),
                          lambda s: sorted(s.values()) == ["InService"] * count,
                          f"{count} InService instances in {name}", timeout)
        return sorted(states)


def wait_for(probe: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 10.0,
             interval: float = 0.05) -> Any:
    """Poll `probe` until `done(value)`; on timeout say what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last state: {value!r}")
        time.sleep(interval)
        value = probe()
    return value


@pytest.fixture
def world(aws) -> World:
    return World(aws)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """`wait_for` as a fixture, so test modules import nothing from this conftest."""
    return wait_for
