"""CloudFormation (moto's, over HTTP) with the layer's rules: what the service template needs (issue 15).

moto's CloudFormation creates resources by calling moto's backends, not the HTTP actions that asg_api.py
replaces. Without this module a stack's group would skip CreateAutoScalingGroup's checks (A5, A12), ignore
its LifecycleHookSpecificationList (A19), and, in a backend no API call had touched yet, never be advanced by
the layer's clock. Everything below the group (capacity, launches, hooks holding in Pending:Wait, target
registration and health) is the layer's already: moto's group constructor sizes itself through the replaced
set_desired_capacity, and target groups are created through the replaced ELBv2Backend.create_target_group.

Also here:
- X3a (docs/localcloud.md): a stack update changes a group IN PLACE, as CloudFormation documents ("Update
  requires: No interruption"); moto deletes and recreates it. MinSize/MaxSize are set to the template's
  values (unless the UpdatePolicy AutoScalingScheduledAction IgnoreUnmodifiedGroupSizeProperties is true and
  the value is unchanged in the template); DesiredCapacity only when the template declares it (likewise).
  Unverified: AWS documents that policy for a group "with an associated scheduled action"; the template's groups
  have none, and whether CloudFormation honours it then is not documented. It is applied here to any group that
  declares it. The deployer is safe either way: the template declares MinSize 0 and one MaxSize on both groups and
  no DesiredCapacity, and `bluegreen init` never raises MaxSize above the template's, so a reset to the template's
  values cannot put MaxSize below the live group's desired capacity (docs/localcloud.md X3a).
  Tags the previous template declared and this one does not are removed; tags no template declared (the
  deployer's bluegreen:version, bluegreen:state) are left alone.
- AWS::ElasticLoadBalancingV2::TargetGroup: TargetGroupAttributes (moto drops them: the deregistration delay,
  E2), and an in-place update of the health check settings (moto has no update at all).
- AWS::S3::BucketPolicy and AWS::CloudWatch::Alarm, which moto's CloudFormation skips.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import asg_api
from . import autoscaling as model
from . import moto_seam as seam
from .moto_seam import (
    CloudFormationModel,
    FakeAutoScalingGroup,
    FakeTargetGroup,
    ResourceMap,
    ValidationError,
    autoscaling_backends,
    cloudwatch_backends,
    elbv2_backends,
    s3_backends,
)
from .state import GroupRecord

GROUP_TYPE = "auto-scaling-group"
HEALTH_CHECK_PROPERTIES = {  # TargetGroup property -> ELBv2Backend.modify_target_group keyword
    "HealthCheckProtocol": "health_check_proto", "HealthCheckPort": "health_check_port",
    "HealthCheckPath": "health_check_path", "HealthCheckIntervalSeconds": "health_check_interval",
    "HealthCheckTimeoutSeconds": "health_check_timeout", "HealthyThresholdCount": "healthy_threshold_count",
    "UnhealthyThresholdCount": "unhealthy_threshold_count", "HealthCheckEnabled": "health_check_enabled",
}
# Changing one of these replaces a target group in AWS; not modelled here (a stack update refuses it).
TARGET_GROUP_REPLACING = ("Port", "Protocol")


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


def _key(account_id: str, region_name: str, name: str) -> tuple[str, str, str]:
    return (account_id, region_name, name)


def _tags(name: str, props: dict[str, Any]) -> list[dict[str, Any]]:
    """The template's Tags as CreateOrUpdateTags takes them; PropagateAtLaunch as the API's "true"/"false"."""
    return [{"ResourceId": name, "ResourceType": GROUP_TYPE, "Key": t["Key"], "Value": str(t.get("Value", "")),
             "PropagateAtLaunch": "true" if _true(t.get("PropagateAtLaunch")) else "false"}
            for t in props.get("Tags") or []]


def _applied(cloudformation_json: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({"Properties": cloudformation_json.get("Properties") or {},
                                  "UpdatePolicy": cloudformation_json.get("UpdatePolicy") or {}}, default=str))


# -- which resources a stack update touches ----------------------------------------------------------------------

def _references(node: Any) -> set[str]:
    """Logical ids a template fragment names through Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", str(text))}
                found |= _references(value[1:] if isinstance(value, list) else [])
            else:
                found |= _references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _references(item)
    return found


@seam.replaces(ResourceMap, "build_resource_diff")
def build_resource_diff(self: ResourceMap, other_template: dict[str, Any],
                        parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """moto's diff, plus every resource whose properties name a modified one: CloudFormation updates a group
    whose LaunchTemplate Version is a GetAtt of a template it changed (X3a); moto compares raw template
    text only, so the group would keep the old version. Dependents come after what they depend on."""
    diff = seam.original(ResourceMap, "build_resource_diff")(self, other_template, parameters)
    modified = list(diff["Modify"])
    added = True
    while added:
        added = False
        for name, body in other_template["Resources"].items():
            if name in self._resource_json_map and name not in modified and _references(
                    body.get("Properties") or {}) & set(modified):
                modified.append(name)
                added = True
    diff["Modify"] = modified
    return diff


def _condition_references(node: Any) -> Any:
    """YAML's `!Condition Name` as AWS reads it, {"Condition": Name}: moto's YAML loader makes every `!Tag`
    an {"Fn::Tag": ...}, which its condition parser does not know, so an `!And` naming another condition was
    always false."""
    if isinstance(node, dict):
        if list(node) == ["Fn::Condition"]:
            return {"Condition": node["Fn::Condition"]}
        return {key: _condition_references(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_condition_references(item) for item in node]
    return node


@seam.replaces(ResourceMap, "load_conditions")
def load_conditions(self: ResourceMap) -> None:
    if "Conditions" in self._template:
        self._template["Conditions"] = _condition_references(self._template["Conditions"])
    seam.original(ResourceMap, "load_conditions")(self)


# -- AWS::AutoScaling::AutoScalingGroup ------------------------------------------------------------------------

@seam.replaces(FakeAutoScalingGroup, "create_from_cloudformation_json")
@classmethod
def create_group(cls: type, resource_name: str, cloudformation_json: dict[str, Any], account_id: str,
                 region_name: str, **kwargs: Any) -> FakeAutoScalingGroup:
    """CreateAutoScalingGroup's rules for a stack's group (A5, A11, A12, A19), then moto's own creation."""
    props = cloudformation_json["Properties"]
    backend = autoscaling_backends[account_id][region_name]
    if resource_name in backend.autoscaling_groups:
        raise asg_api.AlreadyExists(f"AutoScalingGroup by this name already exists - A group with the name "
                                    f"{resource_name} already exists")
    min_size, max_size = _int(props.get("MinSize")), _int(props.get("MaxSize"))
    if min_size is None or max_size is None:
        raise ValidationError("MinSize and MaxSize are required")
    asg_api.check_bounds(min_size, max_size, _int(props.get("DesiredCapacity")))
    tags = _tags(resource_name, props)
    asg_api.check_tags(tags)
    hooks = asg_api.hook_specifications(props.get("LifecycleHookSpecificationList") or [])
    state = asg_api.require_state()
    model.remember_backend(state, backend)  # the layer's clock advances the groups of known backends only
    key = _key(account_id, region_name, resource_name)
    # A19: the hooks exist before moto's constructor sizes the group, so the first instances wait (A6).
    for hook_name, transition, timeout, result in hooks:
        backend.create_lifecycle_hook(hook_name, resource_name, transition, timeout, result)
    props["Tags"] = tags
    for size in ("MinSize", "MaxSize", "DesiredCapacity"):
        if props.get(size) not in (None, ""):
            props[size] = int(props[size])
    try:
        group = seam.original(FakeAutoScalingGroup, "create_from_cloudformation_json")(
            cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    except Exception:
        for hook_name, *_ in hooks:
            backend.delete_lifecycle_hook(resource_name, hook_name)
        raise
    state.groups.setdefault(key, GroupRecord()).stack_resource = _applied(cloudformation_json)
    return group


def _size(props: dict[str, Any], before: dict[str, Any], name: str, keep_unmodified: bool) -> int | None:
    """X3a: the value a stack update sets, or None to leave the group's own alone."""
    new = _int(props.get(name))
    if new is None or (keep_unmodified and new == _int(before.get(name))):
        return None
    return new


@seam.replaces(FakeAutoScalingGroup, "update_from_cloudformation_json")
@classmethod
def update_group(cls: type, original_resource: FakeAutoScalingGroup, new_resource_name: str,
                 cloudformation_json: dict[str, Any], account_id: str, region_name: str) -> FakeAutoScalingGroup:
    """X3a: in place, keeping the instances, the sizes the template does not (re)declare, and foreign tags."""
    props = cloudformation_json["Properties"]
    declared = props.get("AutoScalingGroupName")
    if declared and declared != original_resource.name:  # a new name is a new group (Update requires:
        return seam.original(FakeAutoScalingGroup, "update_from_cloudformation_json")(  # Replacement)
            cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name)
    backend = autoscaling_backends[account_id][region_name]
    state = asg_api.require_state()
    group = backend.autoscaling_groups.get(original_resource.name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{original_resource.name}' not found")
    record = state.groups.setdefault(_key(account_id, region_name, group.name), GroupRecord())
    before = (record.stack_resource or {}).get("Properties", {})
    policies = cloudformation_json.get("UpdatePolicy") or {}
    replacing = {"AutoScalingRollingUpdate", "AutoScalingReplacingUpdate"} & set(policies)
    if replacing:  # they replace the group's instances on a launch template change: not modelled, refused
        raise ValidationError(f"UpdatePolicy {', '.join(sorted(replacing))} on {group.name} is not modelled by the "
                              f"emulator (docs/localcloud.md, X3a)")
    # AWS documents this policy for a group with a scheduled action; applied to any group here (unverified
    # without one: see the module docstring and docs/localcloud.md X3a).
    policy = policies.get("AutoScalingScheduledAction") or {}
    keep = _true(policy.get("IgnoreUnmodifiedGroupSizeProperties"))
    min_size, max_size, desired = (_size(props, before, n, keep) for n in ("MinSize", "MaxSize", "DesiredCapacity"))
    new_min = group.min_size if min_size is None else min_size
    new_max = group.max_size if max_size is None else max_size
    asg_api.check_bounds(new_min, new_max, desired)
    if desired is None and not new_min <= group.desired_capacity <= new_max:
        desired = max(new_min, min(new_max, group.desired_capacity))  # A5: the implied SetDesiredCapacity
    tags = _tags(group.name, props)
    declared_before = {t["Key"] for t in before.get("Tags") or []}
    dropped = declared_before - {t["Key"] for t in tags}
    foreign = [t for t in group.tags if t["Key"] not in declared_before | {n["Key"] for n in tags}]
    asg_api.check_tags(tags, existing=len(foreign))
    hooks = asg_api.hook_specifications(props.get("LifecycleHookSpecificationList") or [])
    backend.update_auto_scaling_group(
        name=group.name, availability_zones=props.get("AvailabilityZones") or [], desired_capacity=desired,
        max_size=new_max, min_size=new_min, launch_config_name=props.get("LaunchConfigurationName"),
        launch_template=props.get("LaunchTemplate") or {},
        vpc_zone_identifier=",".join(props.get("VPCZoneIdentifier") or []) or None,
        health_check_period=_int(props.get("HealthCheckGracePeriod")), health_check_type=props.get("HealthCheckType"),
        new_instances_protected_from_scale_in=(None if props.get("NewInstancesProtectedFromScaleIn") is None
                                               else _true(props["NewInstancesProtectedFromScaleIn"])),
        mixed_instances_policy=props.get("MixedInstancesPolicy"))
    if dropped:
        backend.delete_tags([{"ResourceId": group.name, "ResourceType": GROUP_TYPE, "Key": k} for k in dropped])
    if tags:
        backend.create_or_update_tags(tags)
    _update_target_groups(backend, group, props.get("TargetGroupARNs") or [])
    hooks_before = {h[0] for h in asg_api.hook_specifications(before.get("LifecycleHookSpecificationList") or [])}
    for hook_name in hooks_before - {h[0] for h in hooks}:
        backend.delete_lifecycle_hook(group.name, hook_name)
    for hook_name, transition, timeout, result in hooks:
        backend.create_lifecycle_hook(hook_name, group.name, transition, timeout, result)
    record.stack_resource = _applied(cloudformation_json)
    return group


def _update_target_groups(backend: Any, group: FakeAutoScalingGroup, arns: list[str]) -> None:
    added = [a for a in arns if a not in group.target_group_arns]
    removed = [a for a in group.target_group_arns if a not in arns]
    if removed:
        backend.detach_load_balancer_target_groups(group.name, removed)  # the layer's: the targets drain (E2)
    if added:
        backend.attach_load_balancer_target_groups(group.name, added)


def _delete_group(account_id: str, region_name: str, name: str) -> None:
    """CloudFormation deletes a group with its instances (they leave the load balancers and drain, E2)."""
    backend = autoscaling_backends[account_id][region_name]
    group = backend.autoscaling_groups.get(name)
    if group is None:
        return
    state = asg_api.require_state()
    asg_api.remove_group(state, backend, group)
    state.groups.pop(_key(account_id, region_name, name), None)


@seam.replaces(FakeAutoScalingGroup, "delete_from_cloudformation_json")
@classmethod
def delete_group_resource(cls: type, resource_name: str, cloudformation_json: dict[str, Any], account_id: str,
                          region_name: str) -> None:
    _delete_group(account_id, region_name, resource_name)


@seam.replaces(FakeAutoScalingGroup, "delete")
def delete_group(self: FakeAutoScalingGroup, account_id: str, region_name: str) -> None:
    _delete_group(account_id, region_name, self.name)


# -- AWS::ElasticLoadBalancingV2::TargetGroup ------------------------------------------------------------------

def _attributes(props: dict[str, Any]) -> dict[str, str]:
    return {a["Key"]: str(a["Value"]) for a in props.get("TargetGroupAttributes") or []}


@seam.replaces(FakeTargetGroup, "create_from_cloudformation_json")
@classmethod
def create_target_group(cls: type, resource_name: str, cloudformation_json: dict[str, Any], account_id: str,
                        region_name: str, **kwargs: Any) -> FakeTargetGroup:
    """moto's creation (through the layer's create_target_group: E1's ranges), then TargetGroupAttributes,
    which moto drops (E2: the deregistration delay a group's instances drain for)."""
    target_group = seam.original(FakeTargetGroup, "create_from_cloudformation_json")(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    attributes = _attributes(cloudformation_json["Properties"])
    if attributes:
        elbv2_backends[account_id][region_name].modify_target_group_attributes(target_group.arn, attributes)
    return target_group


@seam.replaces(FakeTargetGroup, "update_from_cloudformation_json")
@classmethod
def update_target_group(cls: type, original_resource: FakeTargetGroup, new_resource_name: str,
                        cloudformation_json: dict[str, Any], account_id: str, region_name: str) -> FakeTargetGroup:
    """In place, as AWS updates health check settings and attributes ("No interruption"); moto has none."""
    props = cloudformation_json["Properties"]
    backend = elbv2_backends[account_id][region_name]
    if props.get("Name") not in (None, original_resource.name) or any(
            props.get(p) is not None and str(props[p]) != str(getattr(original_resource, p.lower()))
            for p in TARGET_GROUP_REPLACING):
        raise ValidationError(f"target group {original_resource.name}: a stack update that replaces a target "
                              f"group (a new Name, {', '.join(TARGET_GROUP_REPLACING)}) is not modelled by the "
                              f"emulator")
    checks = {kw: props[p] for p, kw in HEALTH_CHECK_PROPERTIES.items() if props.get(p) is not None}
    if checks:
        backend.modify_target_group(original_resource.arn, **checks)
    attributes = _attributes(props)
    if attributes:
        backend.modify_target_group_attributes(original_resource.arn, attributes)
    return original_resource


@seam.replaces(FakeTargetGroup, "get_cfn_attribute")
def target_group_attribute(self: FakeTargetGroup, attribute_name: str) -> Any:
    """Fn::GetAtt of a target group (moto has none): what an alarm's TargetGroup dimension names."""
    values = {"TargetGroupArn": self.arn, "TargetGroupName": self.name,
              "TargetGroupFullName": self.arn.split(":", 5)[5], "LoadBalancerArns": list(self.load_balancer_arns)}
    if attribute_name not in values:
        raise ValidationError(f"Template error: target group has no attribute {attribute_name}")
    return values[attribute_name]


# -- resource types moto's CloudFormation skips ----------------------------------------------------------------

class StackBucketPolicy(CloudFormationModel):
    """AWS::S3::BucketPolicy: PutBucketPolicy on create and update, DeleteBucketPolicy on delete (S1: the
    bootstrap bucket's aws:sourceVpce policy). Ref is the bucket name. IAM is not enforced (moto)."""

    def __init__(self, account_id: str, bucket: str) -> None:
        self.account_id, self.bucket = account_id, bucket

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::S3::BucketPolicy"

    @property
    def physical_resource_id(self) -> str:
        return self.bucket

    @staticmethod
    def _put(account_id: str, props: dict[str, Any]) -> StackBucketPolicy:
        document = props["PolicyDocument"]
        text = document if isinstance(document, str) else json.dumps(document)
        s3_backends[account_id]["aws"].put_bucket_policy(props["Bucket"], text.encode())
        return StackBucketPolicy(account_id, props["Bucket"])

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],  # type: ignore[override]
                                        account_id: str, region_name: str, **kwargs: Any) -> StackBucketPolicy:
        return cls._put(account_id, cloudformation_json["Properties"])

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: StackBucketPolicy, new_resource_name: str,  # type: ignore[override]
                                        cloudformation_json: dict[str, Any], account_id: str,
                                        region_name: str) -> StackBucketPolicy:
        if cloudformation_json["Properties"]["Bucket"] != original_resource.bucket:
            original_resource.delete(account_id, region_name)
        return cls._put(account_id, cloudformation_json["Properties"])

    def delete(self, account_id: str, region_name: str) -> None:
        backend = s3_backends[account_id]["aws"]
        if self.bucket in backend.buckets:
            backend.delete_bucket_policy(self.bucket)


class StackAlarm(CloudFormationModel):
    """AWS::CloudWatch::Alarm: PutMetricAlarm on create and update (a metric alarm; MetricDataQuery alarms are
    not modelled), DeleteAlarms on delete. Ref is the alarm name, GetAtt Arn its ARN. PutMetricAlarm goes through
    alarms.py's wrapper, so a stack's alarm evaluates as an API-made one does (W2)."""

    def __init__(self, name: str, arn: str) -> None:
        self.name, self.arn = name, arn

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @property
    def physical_resource_id(self) -> str:
        return self.name

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict[str, Any],  # type: ignore[override]
                                        account_id: str, region_name: str, **kwargs: Any) -> StackAlarm:
        props = cloudformation_json["Properties"]
        if props.get("Metrics"):
            raise ValidationError("AWS::CloudWatch::Alarm with Metrics (metric math) is not modelled by the emulator")
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=resource_name, namespace=props.get("Namespace"), metric_name=props.get("MetricName"),
            comparison_operator=props.get("ComparisonOperator"),
            evaluation_periods=_int(props.get("EvaluationPeriods")), period=_int(props.get("Period")),
            threshold=float(props["Threshold"]) if props.get("Threshold") is not None else None,
            statistic=props.get("Statistic"), description=props.get("AlarmDescription"),
            dimensions=[{"Name": d["Name"], "Value": d["Value"]} for d in props.get("Dimensions") or []],
            alarm_actions=props.get("AlarmActions") or [], ok_actions=props.get("OKActions") or [],
            insufficient_data_actions=props.get("InsufficientDataActions") or [],
            datapoints_to_alarm=_int(props.get("DatapointsToAlarm")), unit=props.get("Unit"),
            extended_statistic=props.get("ExtendedStatistic"),
            actions_enabled=props.get("ActionsEnabled") is None or _true(props["ActionsEnabled"]),
            treat_missing_data=props.get("TreatMissingData"))
        return StackAlarm(resource_name, alarm.alarm_arn)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: StackAlarm, new_resource_name: str,  # type: ignore[override]
                                        cloudformation_json: dict[str, Any], account_id: str,
                                        region_name: str) -> StackAlarm:
        name = cloudformation_json["Properties"].get("AlarmName") or original_resource.name
        if name != original_resource.name:
            original_resource.delete(account_id, region_name)
        return cls.create_from_cloudformation_json(name, cloudformation_json, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        cloudwatch_backends[account_id][region_name].delete_alarms([self.name])


ADDED_TYPES = (StackBucketPolicy, StackAlarm)
