"""The pair as a user deploys it: infra/cloudformation/service.yaml created as a stack (issue 15).

    from localcloud.stack import create_stack_service
    svc = create_stack_service(session, name="demo", image="127.0.0.1:5000/web")   # the stack: two empty groups
    # then, as a user: bluegreen push-bootstrap DIR svc["bootstrap_url"]; bluegreen init demo 1.0 --capacity 3

Against any AWS endpoint (normally the emulated one, whose CloudFormation is moto's with the fidelity layer's
additions, localcloud/aws/cfn.py). The returned dict has the keys localcloud.scenario.create_service returns
(groups, target group ARN, subnets, hook, ...), read from the stack's outputs and resources, plus `stack`.
"""

from __future__ import annotations

import ipaddress
import os
import time

from agent.contract import REGISTRY, TAG_HEALTH_URL, check_tags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "infra", "cloudformation", "service.yaml")
DEFAULT_AMI = "ami-12c6146b"  # one of moto's built-in AMIs (the template's ImageId is an AWS::EC2::Image::Id)
STACK_DEADLINE_S = 60.0


class StackError(Exception):
    """The stack did not reach CREATE_COMPLETE / UPDATE_COMPLETE; the message names its status and reason."""


def template_body(path: str = TEMPLATE) -> str:
    with open(path) as f:
        return f.read()


def network(session, zones: int = 1, subnet_cidr: str = "10.0.0.0/20") -> dict:
    """What the template takes from the account: a VPC, one subnet per zone (/20: moto does not reuse private
    IPs soon, aws-rules.md), and the VPC's main route table for the gateway endpoint."""
    if not 1 <= zones <= 6:
        raise ValueError(f"zones must be 1-6, got {zones!r}")
    ec2 = session.client("ec2")
    region = session.region_name or ec2.meta.region_name
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    first = ipaddress.ip_network(subnet_cidr)
    zone_names = [region + letter for letter in "abcdef"[:zones]]
    subnets = [ec2.create_subnet(VpcId=vpc, AvailabilityZone=zone, CidrBlock=str(ipaddress.ip_network(
        (int(first.network_address) + i * first.num_addresses, first.prefixlen))))["Subnet"]["SubnetId"]
               for i, zone in enumerate(zone_names)]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    return {"vpc_id": vpc, "subnet_ids": subnets, "zones": zone_names, "route_table": tables[0]["RouteTableId"]}


def wait_for_stack(cfn, stack: str, deadline_s: float = STACK_DEADLINE_S, poll: float = 0.2) -> dict:
    """The stack once it has left *_IN_PROGRESS; StackError unless it ended *_COMPLETE (not a rollback)."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = found["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            if status.endswith("_COMPLETE") and "ROLLBACK" not in status:
                return found
            raise StackError(f"stack {stack}: {status} ({found.get('StackStatusReason', 'no reason given')})")
        if time.monotonic() >= deadline:
            raise StackError(f"stack {stack}: still {status} after {deadline_s}s")
        time.sleep(poll)


def _parameters(values: dict) -> list[dict]:
    return [{"ParameterKey": k, "ParameterValue": ",".join(v) if isinstance(v, list) else str(v)}
            for k, v in values.items()]


def create_stack_service(session, name: str = "demo", image: str = "127.0.0.1:5000/web", bucket: str =
                         "bluegreen-bootstrap", capacity: int = 3, max_size: int | None = None, version: str = "1.0",
                         zones: int = 1, health_interval: int = 5, healthy_threshold: int = 2,
                         deregistration_delay: int = 5, hook_timeout: int = 300, app_port: int = 8080,
                         instance_type: str = "t3.micro", image_id: str = DEFAULT_AMI, create_bucket: bool = True,
                         existing_target_group: str | None = None, health_url: str | None = None,
                         body: str | None = None, stack: str | None = None, net: dict | None = None) -> dict:
    """Create the service's stack from the template (or `body`, a variant) and return the pair as a dict.

    `create_bucket=False` uses the existing bucket `bucket` (created here if absent, as an operator's would
    be); `existing_target_group` joins both groups to that target group instead of a new ALB's. `health_url`,
    which the template does not declare, is tagged on both groups after the stack (the local fleet's agents
    answer on per-instance ports)."""
    cfn, s3 = session.client("cloudformation"), session.client("s3")
    net = net or network(session, zones)
    stack = stack or name
    max_size = capacity * 2 if max_size is None else max_size
    if not create_bucket and bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    params = {
        "ServiceName": name, "ImageRepository": image, "InitialVersion": version, "InitialCapacity": capacity,
        "MaxSize": max_size, "VpcId": net["vpc_id"], "SubnetIds": net["subnet_ids"], "AppPort": app_port,
        "ExistingTargetGroupArn": existing_target_group or "", "ImageId": image_id, "InstanceType": instance_type,
        "LaunchHookTimeout": hook_timeout, "HealthCheckIntervalSeconds": health_interval,
        "HealthCheckTimeoutSeconds": max(2, health_interval - 1), "HealthyThresholdCount": healthy_threshold,
        "UnhealthyThresholdCount": 2, "DeregistrationDelay": deregistration_delay, "BucketName": bucket,
        "CreateBucket": "true" if create_bucket else "false", "RouteTableIds": [net["route_table"]],
    }
    cfn.create_stack(StackName=stack, TemplateBody=body or template_body(), Parameters=_parameters(params),
                     Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
    outputs = {o["OutputKey"]: o["OutputValue"] for o in wait_for_stack(cfn, stack).get("Outputs", [])}
    groups = {"blue": outputs["BlueGroup"], "green": outputs["GreenGroup"]}
    if health_url:
        tags = {TAG_HEALTH_URL: health_url}
        check_tags(tags)
        session.client("autoscaling").create_or_update_tags(Tags=[
            {"ResourceId": g, "ResourceType": "auto-scaling-group", "Key": k, "Value": v,
             "PropagateAtLaunch": REGISTRY[k].propagate} for g in groups.values() for k, v in tags.items()])
    asg = session.client("autoscaling")
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=groups["blue"])
    # From the group, not DescribeStackResource: moto 5.2.1 fails that (HTTP 500) on a stack with a resource
    # whose Condition is false.
    launch_template = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[groups["blue"]])[
        "AutoScalingGroups"][0]["LaunchTemplate"]["LaunchTemplateId"]
    return {"service": outputs["ServiceName"], "stack": stack, "region": session.region_name,
            "vpc_id": net["vpc_id"], "subnet_id": net["subnet_ids"][0], "subnet_ids": net["subnet_ids"],
            "zones": net["zones"], "route_table": net["route_table"], "launch_template": launch_template,
            "target_group_arn": outputs["TargetGroupArn"], "classic_elb": None, "groups": groups,
            "lifecycle_hook": next((h["LifecycleHookName"] for h in hooks["LifecycleHooks"]), None),
            "capacity": capacity, "version": version, "bootstrap_url": outputs["BootstrapUrl"],
            "parameters": params}


def update_stack_service(session, svc: dict, body: str | None = None, **changes) -> dict:
    """update-stack with the parameters `svc` was created with, `changes` applied (e.g. InstanceType="t3.small");
    returns the stack once UPDATE_COMPLETE."""
    cfn = session.client("cloudformation")
    params = dict(svc["parameters"], **changes)
    cfn.update_stack(StackName=svc["stack"], TemplateBody=body or template_body(), Parameters=_parameters(params),
                     Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
    svc["parameters"] = params
    return wait_for_stack(cfn, svc["stack"])
