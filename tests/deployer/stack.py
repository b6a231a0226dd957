"""A pair made from infra/cloudformation/service.yaml in the emulated AWS, through CloudFormation (moto's), as a
user's `aws cloudformation create-stack` makes it in a real account (issue 15)."""

from __future__ import annotations

import os

from localcloud import stack as lstack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = lstack.TEMPLATE
BUCKET = "bluegreen-bootstrap"
# An ECR repository of the emulated account: pre-flight asks moto's ECR for IMAGE:VERSION and its digest, never
# whatever registry may listen on 127.0.0.1.
REPOSITORY = "web"
template_body = lstack.template_body


def network(session, zones=2):
    """localcloud.stack.network (an ALB wants two zones) as create-stack parameters."""
    net = lstack.network(session, zones=zones)
    return {"VpcId": net["vpc_id"], "SubnetIds": ",".join(net["subnet_ids"]), "RouteTableIds": net["route_table"]}


def parameters(session, service="demo", image=None, **overrides):
    """Every parameter a user gives create-stack (the rest keep their defaults), as {key: value}."""
    params = {"ServiceName": service, "ImageRepository": image or f"127.0.0.1:5000/{REPOSITORY}",
              "InitialVersion": "1.0", "ImageId": lstack.DEFAULT_AMI, "BucketName": BUCKET, **network(session)}
    params.update(overrides)
    return params


def create_stack(session, name="demo", params=None, deadline_s=60.0):
    """create-stack with `params`; the stack's outputs {key: value} once CREATE_COMPLETE (localcloud.stack.StackError
    naming the status and reason otherwise)."""
    cfn = session.client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=template_body(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in (params or {}).items()])
    stack = lstack.wait_for_stack(cfn, name, deadline_s=deadline_s)
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def svc_of(outputs, capacity):
    """The dict tests/deployer/fleet.py reads, for the stack's pair."""
    service = outputs["ServiceName"]
    return {"service": service, "groups": {"blue": outputs["BlueGroup"], "green": outputs["GreenGroup"]},
            "target_group_arn": outputs["TargetGroupArn"], "classic_elb": None,
            "lifecycle_hook": f"{service}-launch", "capacity": capacity}


def resource(session, stack, logical_id):
    """The physical id of one resource of the stack (DescribeStackResources: moto's DescribeStackResource fails on
    a stack with a resource it does not model)."""
    cfn = session.client("cloudformation")
    found = [r["PhysicalResourceId"] for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
             if r.get("LogicalResourceId") == logical_id]
    assert found, f"stack {stack} has no resource {logical_id}"
    return found[0]


def push_bundle(harness, tmp_path, text="services: {web: {image: web}}\n", base=f"s3://{BUCKET}/demo/"):
    """`bluegreen push-bootstrap` of a one-file bundle under the stack's base; the URL it printed."""
    folder = tmp_path / "bundle"
    folder.mkdir(exist_ok=True)
    (folder / "docker-compose.yml").write_text(text)
    out = harness.bluegreen("push-bootstrap", str(folder), base)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
