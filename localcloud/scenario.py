"""A blue/green service created as an operator would, against any AWS endpoint (normally the emulated one).

    import boto3
    from localcloud.scenario import create_service
    svc = create_service(boto3.session.Session(), name="demo", capacity=3, version="1.0")

Creates: a VPC and a /20 subnet (moto hands out private IPs per subnet and does not reuse them soon, so
many deploys exhaust a /24: aws-rules.md), a launch template, one target group (and optionally a Classic
ELB), and two Auto Scaling groups tagged for `bluegreen`: blue live at `capacity`, green 0/0/0, both
attached to the same load balancer(s) (E4). The agent reads the groups' tags (A12), so the tags are the
whole contract (agent/contract.py's registry, which also says which ones propagate at launch):
`bluegreen:service`, `bluegreen:color`, `bluegreen:version`, `bluegreen:image` (unless image=None),
`bluegreen:bootstrap`, and `bluegreen:lifecycle-hook` / `bluegreen:health-url` when given. Under the bootstrap
prefix, unless a bundle is there already, a one-file bundle and its manifest: the deployer's pre-flight refuses a
pair whose manifest it cannot read.
"""

from __future__ import annotations

import ipaddress
import time

from agent.contract import (
    REGISTRY,
    TAG_BOOTSTRAP,
    TAG_COLOR,
    TAG_HEALTH_URL,
    TAG_IMAGE,
    TAG_LIFECYCLE_HOOK,
    TAG_SERVICE,
    TAG_VERSION,
    check_tags,
)

DEFAULT_IMAGE = "127.0.0.1:5000/web"
# One of moto's built-in AMIs: DescribeImages over all of them takes seconds on the emulator.
DEFAULT_AMI = "ami-12c6146b"


def _tags(group, pairs):
    check_tags(pairs)  # A12, before AWS refuses them
    return [{"ResourceId": group, "ResourceType": "auto-scaling-group", "Key": k, "Value": v,
             "PropagateAtLaunch": REGISTRY[k].propagate} for k, v in pairs.items()]


def _ensure_bucket(session, url):
    from botocore.exceptions import ClientError

    from agent.contract import parse_s3_url

    s3 = session.client("s3")
    bucket = parse_s3_url(url)[0]
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def ensure_bundle(session, url, image):
    """A one-file bundle and its manifest under the bootstrap prefix, unless a bundle is there already (a fleet
    pushes its real one first, localcloud/fleet/service.py): the deployer's pre-flight refuses a pair whose
    manifest cannot be read, as an operator's pair would have one."""
    from botocore.exceptions import ClientError

    from agent.contract import COMPOSE_FILE, MANIFEST, build_manifest, manifest_bytes, parse_s3_url, sha256_hex

    s3 = session.client("s3")
    bucket, prefix = parse_s3_url(url)
    try:
        s3.head_object(Bucket=bucket, Key=prefix + MANIFEST)
        return
    except ClientError:
        pass
    compose = f"services:\n  web:\n    image: {image or 'web'}:live\n".encode()
    s3.put_object(Bucket=bucket, Key=prefix + COMPOSE_FILE, Body=compose)
    s3.put_object(Bucket=bucket, Key=prefix + MANIFEST,
                  Body=manifest_bytes(build_manifest([(COMPOSE_FILE, sha256_hex(compose))])))


def create_service(session, name="demo", capacity=3, version="1.0", image=DEFAULT_IMAGE,
                   bootstrap="s3://bluegreen-bootstrap/demo/", health_interval=5, healthy_threshold=2,
                   deregistration_delay=5, launch_hook=False, hook_timeout=300, classic_elb=False,
                   subnet_cidr="10.0.0.0/20", max_size=None, app_port=8080, health_url=None,
                   health_check_path="/health", instance_type="t3.micro", image_id=DEFAULT_AMI, zones=1,
                   load_balancer=False):
    """Create the service's AWS resources and return their names and ARNs as a plain dict.

    `load_balancer=True` also puts an Application Load Balancer (`NAME-alb`, an HTTP :80 listener forwarding
    to the target group) in front of the target group: its ARN names the `LoadBalancer` dimension of the
    AWS/ApplicationELB metrics the local fleet publishes (localcloud/fleet/metrics.py).

    `zones=N` (1-6) gives both groups N subnets in the zones REGIONa, REGIONb, ... (A19: the groups spread
    their instances over them); the subnets are `subnet_cidr` and the blocks of its size that follow it."""
    ec2 = session.client("ec2")
    elbv2 = session.client("elbv2")
    asg = session.client("autoscaling")
    region = session.region_name or ec2.meta.region_name
    max_size = capacity * 2 if max_size is None else max_size

    _ensure_bucket(session, bootstrap)  # the agents' bundle, and beside it the deployer's state store
    ensure_bundle(session, bootstrap, image)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    if not 1 <= zones <= 6:
        raise ValueError(f"zones must be 1-6, got {zones!r}")
    first = ipaddress.ip_network(subnet_cidr)
    zone_names = [region + letter for letter in "abcdef"[:zones]]
    subnet_ids = [ec2.create_subnet(VpcId=vpc_id, AvailabilityZone=zone, CidrBlock=str(ipaddress.ip_network(
        (int(first.network_address) + i * first.num_addresses, first.prefixlen))))["Subnet"]["SubnetId"]
                  for i, zone in enumerate(zone_names)]
    subnet_id = subnet_ids[0]
    template = f"{name}-lt"
    ec2.create_launch_template(LaunchTemplateName=template,
                               LaunchTemplateData={"ImageId": image_id, "InstanceType": instance_type})

    tg_arn = elbv2.create_target_group(
        Name=f"{name}-tg"[:32], Protocol="HTTP", Port=app_port, VpcId=vpc_id, TargetType="instance",
        HealthCheckProtocol="HTTP", HealthCheckPath=health_check_path,
        HealthCheckIntervalSeconds=health_interval, HealthyThresholdCount=healthy_threshold,
        UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}])

    lb_arn = None
    if load_balancer:
        lb_arn = elbv2.create_load_balancer(Name=f"{name}-alb"[:32], Subnets=subnet_ids, Type="application")[
            "LoadBalancers"][0]["LoadBalancerArn"]
        elbv2.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])

    elb_name = None
    if classic_elb:
        elb = session.client("elb")
        elb_name = f"{name}-elb"[:32]
        elb.create_load_balancer(LoadBalancerName=elb_name, Subnets=subnet_ids, Listeners=[
            {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": app_port}])
        elb.configure_health_check(LoadBalancerName=elb_name, HealthCheck={
            "Target": f"HTTP:{app_port}{health_check_path}", "Interval": health_interval, "Timeout": 2,
            "UnhealthyThreshold": 2, "HealthyThreshold": healthy_threshold})
        elb.modify_load_balancer_attributes(LoadBalancerName=elb_name, LoadBalancerAttributes={
            "ConnectionDraining": {"Enabled": True, "Timeout": max(1, deregistration_delay)}})

    hook = f"{name}-launch" if launch_hook else None
    groups = {}
    for color in ("blue", "green"):
        group = f"{name}-{color}"
        groups[color] = group
        tags = {TAG_SERVICE: name, TAG_COLOR: color, TAG_VERSION: version, TAG_BOOTSTRAP: bootstrap}
        if image:  # None: a pair whose agents take the image from their own config (no agent runs here)
            tags[TAG_IMAGE] = image
        if hook:
            tags[TAG_LIFECYCLE_HOOK] = hook
        if health_url:
            tags[TAG_HEALTH_URL] = health_url
        params = {"AutoScalingGroupName": group, "LaunchTemplate": {"LaunchTemplateName": template,
                                                                    "Version": "$Latest"},
                  "MinSize": 0, "MaxSize": 0, "DesiredCapacity": 0, "VPCZoneIdentifier": ",".join(subnet_ids),
                  "TargetGroupARNs": [tg_arn], "HealthCheckType": "ELB", "HealthCheckGracePeriod": 60,
                  "Tags": _tags(group, tags)}
        if elb_name:
            params["LoadBalancerNames"] = [elb_name]
        asg.create_auto_scaling_group(**params)
        if hook:
            # A6: created before any capacity, so every instance of either group waits in Pending:Wait
            # until its agent completes the hook.
            asg.put_lifecycle_hook(LifecycleHookName=hook, AutoScalingGroupName=group,
                                   LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                   HeartbeatTimeout=hook_timeout, DefaultResult="ABANDON")
    asg.update_auto_scaling_group(AutoScalingGroupName=groups["blue"], MinSize=capacity,
                                  MaxSize=max_size, DesiredCapacity=capacity)
    return {"service": name, "region": region, "vpc_id": vpc_id, "subnet_id": subnet_id,
            "subnet_ids": subnet_ids, "zones": zone_names,
            "launch_template": template, "target_group_arn": tg_arn, "load_balancer_arn": lb_arn,
            "classic_elb": elb_name,
            "groups": groups, "lifecycle_hook": hook, "capacity": capacity, "version": version}


def healthy_targets(session, svc):
    """Instance ids `healthy` in the service's target group (and InService in its Classic ELB, if any)."""
    elbv2 = session.client("elbv2")
    healthy = {d["Target"]["Id"] for d in elbv2.describe_target_health(
        TargetGroupArn=svc["target_group_arn"])["TargetHealthDescriptions"]
        if d["TargetHealth"]["State"] == "healthy"}
    if svc.get("classic_elb"):
        states = session.client("elb").describe_instance_health(LoadBalancerName=svc["classic_elb"])
        healthy &= {s["InstanceId"] for s in states["InstanceStates"] if s["State"] == "InService"}
    return healthy


def wait_until_serving(session, svc, count=None, timeout=60.0, poll=0.1):
    """Wait until `count` (default: the capacity) targets are healthy; TimeoutError names the last count."""
    want = svc["capacity"] if count is None else count
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        seen = healthy_targets(session, svc)
        if len(seen) >= want:
            return seen
        time.sleep(poll)
    raise TimeoutError(f"service {svc['service']}: {len(seen)} of {want} targets healthy after {timeout}s")
