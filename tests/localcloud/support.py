"""What the emulated-AWS tests share: one builder of a small world (VPC, subnet, launch template, target
groups, groups, loose instances), one reading of AWS errors, a predicate for tests.helpers.wait_until that keeps
the last state seen, and a stopped clock that moves only when a test moves it (EmulatedAWS.use_clock).
"""

from __future__ import annotations

from typing import Any, Callable

import boto3
from botocore.config import Config

from tests.helpers import FakeTime, wait_until

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})  # no retry at all


def aws_error(excinfo: Any) -> tuple[str, str]:
    """(code, message) of the botocore ClientError that `pytest.raises` caught."""
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


class NotYet:
    """A falsy predicate result that still shows the value seen, for wait_until's timeout message."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"not yet: {self.value!r}"


def matching(probe: Callable[[], Any], done: Callable[[Any], bool]) -> Callable[[], Any]:
    """A wait_until predicate: probe's value once `done(value)` (True when that value is empty), else a NotYet."""
    def predicate() -> Any:
        value = probe()
        if not done(value):
            return NotYet(value)
        return value or True
    return predicate


class World:
    """boto3 clients against the emulated AWS (a separate HTTP client, as the tools use it) and builders.

    One VPC, one /20 subnet (aws-rules.md: moto does not reuse private IPs soon) and one launch template per
    test; every target group, group and loose instance goes there.
    """

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.asg = boto3.client("autoscaling", config=NO_RETRIES)
        self.ec2 = boto3.client("ec2", config=NO_RETRIES)
        self.elbv2 = boto3.client("elbv2", config=NO_RETRIES)
        self.elb = boto3.client("elb", config=NO_RETRIES)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.0.0.0/20",
                                             AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName="lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]

    # -- builders -----------------------------------------------------------------------------------------
    def target_group(self, name: str = "web", delay: int | None = 30, port: int = 8080, **kwargs: Any) -> str:
        """A target group; `delay` is the deregistration delay in AWS seconds (None: AWS's default, 300)."""
        arn = self.elbv2.create_target_group(Name=name, Protocol="HTTP", Port=port, VpcId=self.vpc, **kwargs)[
            "TargetGroups"][0]["TargetGroupArn"]
        if delay is not None:
            self.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
        return arn

    def classic_lb(self, name: str = "classic", interval: int = 5, healthy_threshold: int = 2,
                   draining: int | None = 30) -> str:
        """A Classic ELB on port 80 -> 8080; `draining` is the connection-draining timeout (None: off)."""
        self.elb.create_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1a"], Listeners=[
            {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}])
        self.elb.configure_health_check(LoadBalancerName=name, HealthCheck={
            "Target": "HTTP:8080/health", "Interval": interval, "Timeout": 2, "UnhealthyThreshold": 2,
            "HealthyThreshold": healthy_threshold})
        if draining is not None:
            self.elb.modify_load_balancer_attributes(LoadBalancerName=name, LoadBalancerAttributes={
                "ConnectionDraining": {"Enabled": True, "Timeout": draining}})
        return name

    def group(self, name: str, desired: int = 2, min_size: int = 0, max_size: int = 10,
              target_groups: tuple[str, ...] = (), **kwargs: Any) -> str:
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=min_size, MaxSize=max_size, DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateId": self.template}, TargetGroupARNs=list(target_groups),
            **{"VPCZoneIdentifier": self.subnet, **kwargs})
        return name

    def zone_subnets(self, count: int) -> list[str]:
        """The world's subnet (us-east-1a) and count-1 more /20 subnets in us-east-1b, c, ... (A19): pass
        `VPCZoneIdentifier=",".join(...)` to group() for a group over several zones."""
        more = [self.ec2.create_subnet(VpcId=self.vpc, CidrBlock=f"10.0.{16 * i}.0/20",
                                       AvailabilityZone=f"us-east-1{'abcdef'[i]}")["Subnet"]["SubnetId"]
                for i in range(1, count)]
        return [self.subnet, *more]

    def instances(self, count: int = 1) -> list[str]:
        """Loose EC2 instances in the world's subnet, outside any group."""
        reply = self.ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count, SubnetId=self.subnet)
        return [i["InstanceId"] for i in reply["Instances"]]

    # -- readers ------------------------------------------------------------------------------------------
    def describe(self, name: str) -> dict[str, Any]:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def states(self, name: str) -> dict[str, str]:
        return {i["InstanceId"]: i["LifecycleState"] for i in self.describe(name)["Instances"]}

    def health(self, tg_arn: str) -> dict[str, str]:
        return {d["Target"]["Id"]: d["TargetHealth"]["State"]
                for d in self.elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}

    def in_service(self, name: str, count: int) -> list[str]:
        """The group's instance ids, asserting that exactly `count` are there, all InService."""
        states = self.states(name)
        assert sorted(states.values()) == ["InService"] * count, states
        return sorted(states)

    def wait_in_service(self, name: str, count: int, timeout: float = 10.0) -> list[str]:
        all_in_service = matching(lambda: self.states(name), lambda s: sorted(s.values()) == ["InService"] * count)
        return sorted(wait_until(all_in_service, f"{count} InService instances in {name}", timeout))


class StoppedClock:
    """The emulated world's clock, stopped until the test moves it; one clock second is one AWS second.

    Nothing the layer times (launches, health checks, draining, hook timeouts, tag propagation) moves on its
    own, so a test may assert any intermediate state for as long as it likes, on a loaded machine too.
    """

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.time = FakeTime(start=1000.0)
        cloud.configure_time(time_scale=1.0)
        cloud.use_clock(self.time.now)

    def advance(self, aws_seconds: float) -> None:
        """Move AWS time on, and let the model catch up at once (EmulatedAWS.tick) before and after: what a
        request just made due (a launch after ResumeProcesses, say) starts at the old time."""
        self.cloud.tick()
        self.time.advance(aws_seconds)
        self.cloud.tick()
