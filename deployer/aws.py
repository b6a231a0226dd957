"""The deployer's AWS calls: one thin method per API operation, nothing decided here.

Clients are made by the CLI (STYLE.md point 2) and passed in. Every describe call that AWS pages goes through a
paginator (A9). A `ClientError` leaves this module only as an `AwsError`.

Retries, chosen on purpose (deployer-audit finding 20):
- botocore's `standard` mode (cli.make_clients, 4 attempts) backs off on `Throttling` (A10), 5xx and
  `ResourceContention` (A2), and on connection errors. Not `adaptive`: AWS calls it experimental and fit only
  for specialised cases, and its client-side rate limiter may hold a call back for an unbounded while, where the
  lock needs each call to end within store.MAX_CALL_S.
- `ScalingActivityInProgress` is an HTTP 400 (A11), which standard mode never retries: `_call` retries it here,
  with full-jitter backoff, under SCALING_RETRY_S, confirming the lock before each retry (`before_retry`, set by
  the runner), because each retry is a new change request.
- A retried call may meet what its own first attempt did (the response was lost, botocore retried): EnterStandby
  of an instance already in Standby (A1), ExitStandby of one already back (A2), DetachInstances of one already
  gone (A3), TerminateInstances of one already gone. AWS answers those with a ValidationError; when the call was
  retried and a fresh read shows every instance in the state the call asked for, it is a success, not exit 4.
"""

from __future__ import annotations

import logging
import random
import time

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from .errors import AwsError
from .model import TAG_RETIRED_FROM, TAG_RUNNING, TAG_SERVICE

log = logging.getLogger(__name__)

CREDENTIAL_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                    "AuthFailure", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied",
                    "AccessDeniedException", "UnauthorizedOperation"}
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
ALARM_NAMES_MAX = 100  # DescribeAlarms: at most 100 AlarmNames a call
# How long `_call` keeps retrying ScalingActivityInProgress (AWS seconds), and its backoff's cap.
SCALING_RETRY_S = 60.0
SCALING_BACKOFF_CAP_S = 10.0
RETRIED_CODES = frozenset({"ScalingActivityInProgress"})
# What each instance is in once the call landed: the state it asked for, or on its way there (A1-A3).
TARGET_STATES = {
    "enter_standby": ("Standby", "EnteringStandby"),
    "exit_standby": ("InService", "Pending", "Pending:Wait", "Pending:Proceed"),
    "detach_instances": ("Detaching", "Detached", None),  # None: no longer in the group
}
GONE_STATES = ("shutting-down", "terminated")


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
    """Auto Scaling, ELBv2, Classic ELB, EC2 and CloudWatch alarms, as the deployer uses them."""

    def __init__(self, autoscaling, elbv2, elb, ec2, counter=None, sleep=time.sleep, clock=time.monotonic,
                 cloudwatch=None):
        self.asg, self.elbv2, self.elb, self.ec2 = autoscaling, elbv2, elb, ec2
        self.cloudwatch = cloudwatch
        self.counter = counter or CallCounter()
        self.sleep, self.clock = sleep, clock
        self.before_retry = None  # the runner's lock check before each retry of a change (see the module doc)
        self.random = random.random
        for client in (autoscaling, elbv2, elb, ec2, cloudwatch):
            if client is not None:
                self.counter.attach(client)

    # -- generic plumbing ----------------------------------------------------------------------------

    def _call(self, client, method, _raw=False, **params):
        """One API call; ScalingActivityInProgress retried (see the module doc). `_raw`: any other ClientError
        leaves untranslated, for _change to inspect."""
        deadline = None
        attempt = 0
        while True:
            try:
                return getattr(client, method)(**params)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in RETRIED_CODES:
                    if _raw:
                        raise
                    raise translate(exc, method) from exc
                deadline = deadline if deadline is not None else self.clock() + SCALING_RETRY_S
                # Full jitter, as botocore's standard mode backs off (STYLE.md, botocore retries/standard.py).
                delay = self.random() * min(SCALING_BACKOFF_CAP_S, 2 ** attempt)
                if self.clock() + delay > deadline:
                    raise translate(exc, f"{method} (retried for {SCALING_RETRY_S:g}s)") from exc
                attempt += 1
                log.info("%s: %s, retrying in %.1fs (%d)", method, code, delay, attempt)
                self.sleep(delay)
                if self.before_retry is not None:
                    self.before_retry()
            except BotoCoreError as exc:
                raise translate(exc, method) from exc

    def _change(self, client, method, check, **params):
        """A change that a lost response may make botocore retry: "already done" by its own first attempt is
        done (see the module doc)."""
        try:
            return self._call(client, method, _raw=True, **params)
        except ClientError as exc:
            if _retried(exc) and check(params):
                log.info("%s: %s after a retry, and every instance is already where the call puts it: done "
                         "(its first attempt landed)", method, exc.response.get("Error", {}).get("Code"))
                return {}
            raise translate(exc, method) from exc

    def _pages(self, client, method, key, **params):
        out = []
        keys = key if isinstance(key, tuple) else (key,)
        try:
            for page in client.get_paginator(method).paginate(**params):
                for name in keys:
                    out.extend(page.get(name, []))
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

    def describe_group(self, group_name):
        """One group's DescribeAutoScalingGroups record by name (a list: empty when the group is gone). A wait on
        one group polls this instead of the pair: the instances of the other group are not read (runner.observe)."""
        return self._pages(self.asg, "describe_auto_scaling_groups", "AutoScalingGroups",
                           AutoScalingGroupNames=[group_name])

    def describe_target_health(self, target_group_arn):
        return self._call(self.elbv2, "describe_target_health",
                          TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]

    def describe_instance_health(self, load_balancer_name):
        return self._call(self.elb, "describe_instance_health",
                          LoadBalancerName=load_balancer_name)["InstanceStates"]

    def describe_policies(self, group_name):
        return self._pages(self.asg, "describe_policies", "ScalingPolicies", AutoScalingGroupName=group_name)

    def describe_alarms(self, names):
        """The metric alarms named `names` (those that exist), never the whole Region: the callers take the names
        from the policies' own `Alarms` (DescribePolicies) and the operation record (W1)."""
        return self._alarms_named(names, ("MetricAlarm",))

    def describe_named_alarms(self, names):
        """The metric and composite alarms named (a bake's, W2): a bake's poll costs one call per 100 alarms
        whatever else the account has. A name CloudWatch does not know is simply absent from the answer."""
        return self._alarms_named(names, ("MetricAlarm", "CompositeAlarm"))

    def _alarms_named(self, names, types):
        # AlarmNames takes at most 100 names a call.
        if self.cloudwatch is None:
            raise AwsError("DescribeAlarms: internal error: no CloudWatch client was made")
        names = sorted(set(names))
        out = []
        for start in range(0, len(names), ALARM_NAMES_MAX):
            out += self._pages(self.cloudwatch, "describe_alarms", ("MetricAlarms", "CompositeAlarms"),
                               AlarmNames=names[start:start + ALARM_NAMES_MAX], AlarmTypes=list(types))
        return out

    def describe_scheduled_actions(self, group_name):
        return self._pages(self.asg, "describe_scheduled_actions", "ScheduledUpdateGroupActions",
                           AutoScalingGroupName=group_name)

    def describe_retired_instances(self, group_name, expected=()):
        """(tagged, live): the ids tagged as detached from `group_name` that a tag search finds now, and which
        of those and of `expected` (ids known to be detached) still exist (A3, A4, X1).

        DescribeTags finds the ids (a tag filter on DescribeInstances scans every instance); DescribeInstances
        then reads their states, filtered by id so that an id already gone is no error.
        """
        tags = self._pages(self.ec2, "describe_tags", "Tags",
                           Filters=[{"Name": "key", "Values": [TAG_RETIRED_FROM]},
                                    {"Name": "value", "Values": [group_name]},
                                    {"Name": "resource-type", "Values": ["instance"]}])
        tagged = sorted({t["ResourceId"] for t in tags})
        ids = sorted(set(tagged) | set(expected))
        live = []
        for start in range(0, len(ids), 200):
            reservations = self._pages(self.ec2, "describe_instances", "Reservations",
                                       Filters=[{"Name": "instance-id", "Values": ids[start:start + 200]},
                                                {"Name": "instance-state-name", "Values": LIVE_STATES}])
            live += [i["InstanceId"] for r in reservations for i in r["Instances"]]
        return tagged, sorted(live)

    def describe_running_tags(self, instance_ids):
        """{instance id: `bluegreen:running` value} for those of `instance_ids` that carry the tag (finding 7).

        DescribeTags filtered by key and by id, 200 ids per call (a filter's values are bounded), so a launch
        wait reads at most ceil(unverified / 200) pages per poll, nothing once every instance is verified."""
        return self.describe_instance_tag(instance_ids, TAG_RUNNING)

    def describe_instance_tag(self, instance_ids, key):
        """{instance id: the value of tag `key`} for those of `instance_ids` that carry it (DescribeTags by key
        and id, 200 ids a call)."""
        out = {}
        ids = sorted(instance_ids)
        for start in range(0, len(ids), 200):
            for t in self._pages(self.ec2, "describe_tags", "Tags",
                                 Filters=[{"Name": "key", "Values": [key]},
                                          {"Name": "resource-id", "Values": ids[start:start + 200]}]):
                out[t["ResourceId"]] = t["Value"]
        return out

    def describe_instance_states(self, instance_ids):
        """{id: EC2 state name} of the given instances (an id EC2 no longer lists is taken as terminated)."""
        out = {}
        ids = sorted(instance_ids)
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            for r in self._pages(self.ec2, "describe_instances", "Reservations",
                                 Filters=[{"Name": "instance-id", "Values": chunk}]):
                for i in r["Instances"]:
                    out[i["InstanceId"]] = i["State"]["Name"]
            out.update({i: "terminated" for i in chunk if i not in out})
        return out

    def describe_scaling_activities(self, group_name, max_records=10):
        """The group's newest scaling activities, newest first (A15): one call, not paged further."""
        return self._call(self.asg, "describe_scaling_activities", AutoScalingGroupName=group_name,
                          MaxRecords=max_records)["Activities"]

    def describe_load_balancer_attributes(self, load_balancer_arn):
        attrs = self._call(self.elbv2, "describe_load_balancer_attributes", LoadBalancerArn=load_balancer_arn)
        return {a["Key"]: a["Value"] for a in attrs["Attributes"]}

    # -- Auto Scaling --------------------------------------------------------------------------------

    def create_or_update_tags(self, **params):
        return self._call(self.asg, "create_or_update_tags", **params)

    def delete_tags(self, **params):
        return self._call(self.asg, "delete_tags", **params)

    def update_auto_scaling_group(self, **params):
        return self._call(self.asg, "update_auto_scaling_group", **params)

    def enter_standby(self, **params):
        return self._change(self.asg, "enter_standby", self._in_target_state("enter_standby"), **params)

    def exit_standby(self, **params):
        return self._change(self.asg, "exit_standby", self._in_target_state("exit_standby"), **params)

    def detach_instances(self, **params):
        return self._change(self.asg, "detach_instances", self._in_target_state("detach_instances"), **params)

    def set_instance_protection(self, **params):
        return self._call(self.asg, "set_instance_protection", **params)

    def _in_target_state(self, method):
        def check(params):
            records = self.describe_group(params["AutoScalingGroupName"])
            states = {i["InstanceId"]: i["LifecycleState"] for r in records for i in r.get("Instances", [])}
            return all(states.get(iid) in TARGET_STATES[method] for iid in params["InstanceIds"])
        return check

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

    # -- Elastic Load Balancing (E8: a rollback registers instances that still drain after the flip) ----------

    def register_targets(self, **params):
        return self._call(self.elbv2, "register_targets", **params)

    def register_instances_with_load_balancer(self, **params):
        return self._call(self.elb, "register_instances_with_load_balancer", **params)

    # -- CloudWatch (W1) -------------------------------------------------------------------------------

    def put_metric_alarm(self, **params):
        return self._call(self.cloudwatch, "put_metric_alarm", **params)

    def delete_alarms(self, **params):
        return self._call(self.cloudwatch, "delete_alarms", **params)

    # -- EC2 -----------------------------------------------------------------------------------------

    def create_tags(self, **params):
        return self._call(self.ec2, "create_tags", **params)

    def terminate_instances(self, **params):
        return self._change(self.ec2, "terminate_instances", self._terminated, **params)

    def _terminated(self, params):
        # An id EC2 no longer lists at all was terminated long ago (describe_instance_states says so).
        states = self.describe_instance_states(params["InstanceIds"])
        return all(states[iid] in GONE_STATES for iid in params["InstanceIds"])

    # -- pre-flight and doctor reads (deployer/preflight.py decides; nothing here changes anything) -------

    def describe_instance_refreshes(self, group_name):
        """The group's instance refreshes, newest first (A16). One page: only one refresh can be active at a
        time, and it is the newest."""
        return self._call(self.asg, "describe_instance_refreshes", AutoScalingGroupName=group_name,
                          MaxRecords=100).get("InstanceRefreshes", [])

    def describe_warm_pool(self, group_name):
        """The group's WarmPoolConfiguration, or None (A17). One page: the configuration is on every page."""
        return self._call(self.asg, "describe_warm_pool", AutoScalingGroupName=group_name,
                          MaxRecords=1).get("WarmPoolConfiguration") or None

    def describe_lifecycle_hooks(self, group_name):
        return self._call(self.asg, "describe_lifecycle_hooks",
                          AutoScalingGroupName=group_name).get("LifecycleHooks", [])

    def describe_target_groups(self, arns):
        return self._pages(self.elbv2, "describe_target_groups", "TargetGroups", TargetGroupArns=list(arns))

    def describe_target_group_attributes(self, arn):
        """{key: value}: deregistration_delay.timeout_seconds, load_balancing.cross_zone.enabled, ... (E2, E6)."""
        attrs = self._call(self.elbv2, "describe_target_group_attributes", TargetGroupArn=arn)["Attributes"]
        return {a["Key"]: a["Value"] for a in attrs}

    def describe_classic_load_balancers(self, names):
        return self._pages(self.elb, "describe_load_balancers", "LoadBalancerDescriptions",
                           LoadBalancerNames=list(names))

    def describe_classic_attributes(self, name):
        """ConnectionDraining, CrossZoneLoadBalancing, ... of a Classic ELB (E3, E6)."""
        return self._call(self.elb, "describe_load_balancer_attributes",
                          LoadBalancerName=name)["LoadBalancerAttributes"]

    def describe_ecr_image(self, ecr, registry_id, repository, tag):
        """The image digest (sha256:...) when ECR has `repository:tag`, None when it has not (the image or the
        repository). DescribeImages' imageDigest is the manifest's (or the index's) digest, what a pull by digest
        names (audit F8). `ecr` is a client of the repository's own Region (the CLI makes it)."""
        try:
            resp = self._call(ecr, "describe_images", registryId=registry_id, repositoryName=repository,
                              imageIds=[{"imageTag": tag}])
        except AwsError as exc:
            if exc.code in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        details = resp.get("imageDetails") or [{}]
        return details[0].get("imageDigest") or ""

    def describe_object(self, s3, bucket, key):
        """GetObject: the object's bytes (the bootstrap manifest the agent reads), or AwsError. Named describe_* as
        every read here is: the step tests tell mutations from reads by the name."""
        return self._call(s3, "get_object", Bucket=bucket, Key=key)["Body"].read()


def _retried(exc):
    """Whether botocore retried the call that ended in `exc` (ResponseMetadata.RetryAttempts)."""
    return bool(exc.response.get("ResponseMetadata", {}).get("RetryAttempts"))
