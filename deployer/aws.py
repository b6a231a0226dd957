"""The deployer's AWS calls: one thin method per API operation, nothing decided here.

Clients are made by the CLI (STYLE.md point 2) and passed in, configured with botocore's standard retry
mode, which backs off on `Throttling` (A10): there is no retry loop of our own. Every describe call that AWS
pages goes through a paginator (A9). A `ClientError` leaves this module only as an `AwsError`.
"""

from __future__ import annotations

import logging

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from .errors import AwsError
from .model import TAG_RETIRED_FROM, TAG_RUNNING, TAG_SERVICE

log = logging.getLogger(__name__)

CREDENTIAL_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                    "AuthFailure", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied",
                    "AccessDeniedException", "UnauthorizedOperation"}
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def translate(exc, op):
    """One AwsError for any botocore failure, with a line an operator can act on."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Unknown"), err.get("Message", "")
        if code in CREDENTIAL_CODES:
            return AwsError(f"{op}: {code}: {message} (check the credentials, profile and IAM policy: "
                            "iam/deployer-policy.json)", code)
        return AwsError(f"{op}: {code}: {message}", code)
    if isinstance(exc, NoCredentialsError):
        return AwsError(f"{op}: no AWS credentials found (set a profile with --profile or AWS_PROFILE, "
                        "or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY pair)")
    if isinstance(exc, NoRegionError):
        return AwsError(f"{op}: no AWS Region configured (use --region or AWS_REGION)")
    return AwsError(f"{op}: {exc}")


class CallCounter:
    """Counts API calls (paginator pages included) and HTTP attempts (retries included)."""

    def __init__(self):
        self.calls = 0
        self.attempts = 0
        self.by_op = {}

    def attach(self, client):
        client.meta.events.register("before-call", self._on_call)
        client.meta.events.register("request-created", self._on_attempt)

    def _on_call(self, event_name="", **_):
        self.calls += 1
        op = event_name.rsplit(".", 1)[-1]
        self.by_op[op] = self.by_op.get(op, 0) + 1

    def _on_attempt(self, **_):
        self.attempts += 1


class DeployerAws:
    """Auto Scaling, ELBv2, Classic ELB and EC2, as the deployer uses them."""

    def __init__(self, autoscaling, elbv2, elb, ec2, counter=None):
        self.asg, self.elbv2, self.elb, self.ec2 = autoscaling, elbv2, elb, ec2
        self.counter = counter or CallCounter()
        for client in (autoscaling, elbv2, elb, ec2):
            self.counter.attach(client)

    # -- generic plumbing ----------------------------------------------------------------------------

    def _call(self, client, method, **params):
        try:
            return getattr(client, method)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, method) from exc

    def _pages(self, client, method, key, **params):
        out = []
        try:
            for page in client.get_paginator(method).paginate(**params):
                out.extend(page.get(key, []))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, method) from exc
        return out

    def apply(self, call):
        """Make one planned Call (steps.Call): its op name maps onto the method of the same name, as boto3 names
        it (`EnterStandby` -> `enter_standby`); steps.OPERATIONS lists the ops a plan may name."""
        return getattr(self, xform_name(call.op))(**call.params)

    # -- describe ------------------------------------------------------------------------------------

    def describe_service_groups(self, service):
        return self._pages(self.asg, "describe_auto_scaling_groups", "AutoScalingGroups",
                           Filters=[{"Name": "tag:" + TAG_SERVICE, "Values": [service]}])

    def describe_target_health(self, target_group_arn):
        return self._call(self.elbv2, "describe_target_health",
                          TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]

    def describe_instance_health(self, load_balancer_name):
        return self._call(self.elb, "describe_instance_health",
                          LoadBalancerName=load_balancer_name)["InstanceStates"]

    def describe_policies(self, group_name):
        return self._pages(self.asg, "describe_policies", "ScalingPolicies", AutoScalingGroupName=group_name)

    def describe_scheduled_actions(self, group_name):
        return self._pages(self.asg, "describe_scheduled_actions", "ScheduledUpdateGroupActions",
                           AutoScalingGroupName=group_name)

    def describe_retired_instances(self, group_name):
        """Instances we tagged before detaching them from `group_name` that still exist (A3, A4).

        DescribeTags finds the ids (a tag filter on DescribeInstances scans every instance); DescribeInstances
        then reads their states, filtered by id so that an id already gone is no error.
        """
        tags = self._pages(self.ec2, "describe_tags", "Tags",
                           Filters=[{"Name": "key", "Values": [TAG_RETIRED_FROM]},
                                    {"Name": "value", "Values": [group_name]},
                                    {"Name": "resource-type", "Values": ["instance"]}])
        ids = sorted({t["ResourceId"] for t in tags})
        live = []
        for start in range(0, len(ids), 200):
            reservations = self._pages(self.ec2, "describe_instances", "Reservations",
                                       Filters=[{"Name": "instance-id", "Values": ids[start:start + 200]},
                                                {"Name": "instance-state-name", "Values": LIVE_STATES}])
            live += [i["InstanceId"] for r in reservations for i in r["Instances"]]
        return sorted(live)

    def describe_running_tags(self, instance_ids):
        """{instance id: `bluegreen:running` value} for those of `instance_ids` that carry the tag (finding 7).

        DescribeTags filtered by key and by id, 200 ids per call (a filter's values are bounded), so a launch
        wait reads at most ceil(unverified / 200) pages per poll, nothing once every instance is verified."""
        out = {}
        ids = sorted(instance_ids)
        for start in range(0, len(ids), 200):
            for t in self._pages(self.ec2, "describe_tags", "Tags",
                                 Filters=[{"Name": "key", "Values": [TAG_RUNNING]},
                                          {"Name": "resource-id", "Values": ids[start:start + 200]}]):
                out[t["ResourceId"]] = t["Value"]
        return out

    def describe_scaling_activities(self, group_name, max_records=10):
        """The group's newest scaling activities, newest first (A15): one call, not paged further."""
        return self._call(self.asg, "describe_scaling_activities", AutoScalingGroupName=group_name,
                          MaxRecords=max_records)["Activities"]

    def describe_lifecycle_hooks(self, group_name):
        return self._call(self.asg, "describe_lifecycle_hooks", AutoScalingGroupName=group_name)["LifecycleHooks"]

    def describe_target_group_attributes(self, target_group_arn):
        attrs = self._call(self.elbv2, "describe_target_group_attributes", TargetGroupArn=target_group_arn)
        return {a["Key"]: a["Value"] for a in attrs["Attributes"]}

    def describe_target_group(self, target_group_arn):
        return self._call(self.elbv2, "describe_target_groups", TargetGroupArns=[target_group_arn])["TargetGroups"][0]

    def describe_load_balancer_attributes(self, load_balancer_arn):
        attrs = self._call(self.elbv2, "describe_load_balancer_attributes", LoadBalancerArn=load_balancer_arn)
        return {a["Key"]: a["Value"] for a in attrs["Attributes"]}

    def describe_classic_attributes(self, load_balancer_name):
        return self._call(self.elb, "describe_load_balancer_attributes",
                          LoadBalancerName=load_balancer_name)["LoadBalancerAttributes"]

    # -- Auto Scaling --------------------------------------------------------------------------------

    def create_or_update_tags(self, **params):
        return self._call(self.asg, "create_or_update_tags", **params)

    def delete_tags(self, **params):
        return self._call(self.asg, "delete_tags", **params)

    def update_auto_scaling_group(self, **params):
        return self._call(self.asg, "update_auto_scaling_group", **params)

    def enter_standby(self, **params):
        return self._call(self.asg, "enter_standby", **params)

    def exit_standby(self, **params):
        return self._call(self.asg, "exit_standby", **params)

    def detach_instances(self, **params):
        return self._call(self.asg, "detach_instances", **params)

    def suspend_processes(self, **params):
        return self._call(self.asg, "suspend_processes", **params)

    def resume_processes(self, **params):
        return self._call(self.asg, "resume_processes", **params)

    def put_scaling_policy(self, **params):
        return self._call(self.asg, "put_scaling_policy", **params)

    def put_scheduled_update_group_action(self, **params):
        return self._call(self.asg, "put_scheduled_update_group_action", **params)

    def delete_policy(self, **params):
        return self._call(self.asg, "delete_policy", **params)

    def delete_scheduled_action(self, **params):
        return self._call(self.asg, "delete_scheduled_action", **params)

    # -- EC2 -----------------------------------------------------------------------------------------

    def create_tags(self, **params):
        return self._call(self.ec2, "create_tags", **params)

    def terminate_instances(self, **params):
        return self._call(self.ec2, "terminate_instances", **params)
