"""The one owner of the fidelity layer's boundary with moto (pinned: moto[server]==5.2.1, setup.cfg).

Everything the layer takes from moto beyond the AWS API is listed here, and nowhere else:
- IMPORTS: the layer imports moto only in this module (the others import these names from here);
- WRAPPED: moto methods the layer replaces, with the signature of moto's original;
- ADDED: methods moto lacks, which the layer adds to moto's classes;
- ADDED_TYPES: CloudFormation resource types moto's CloudFormation skips, which the layer adds (cfn.py);
- CALLED: moto methods and constructors the layer calls with arguments of its own, with their signatures;
- STATE: attributes of moto's objects the layer reads or writes, with the type it relies on;
- MOTO_PATHS: the places in moto's Auto Scaling code that launch, register, or move lifecycle state or
  capacity, each with the reason it cannot bypass the layer (moto's own call graph, code-review §5).

Each replacement registers itself here (`@replaces(cls, name)`, or `register()`), and only listed pairs
may; `install()` puts them on moto's classes, once per process (moto's backends are process-global, so the
replacements are class-level and never removed). aws-rules.md asks for a test that all of this still holds
in the pinned moto: tests/localcloud/test_moto_seam.py checks every entry against moto, and the exact set of
replaced attributes after install(). To upgrade moto, run that test and read its failures (docs/localcloud.md).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

# -- IMPORTS -----------------------------------------------------------------------------------------------
from moto.autoscaling.exceptions import AutoscalingClientError, ResourceContentionError, ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    DetachInstanceActivity,
    EnterStandbyActivity,
    ExitStandbyActivity,
    FakeAutoScalingGroup,
    FakeScalingPolicy,
    FakeScheduledAction,
    InstanceState,
    LifecycleHook,
    TerminateInstanceActivity,
    autoscaling_backends,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.cloudformation import parsing as cloudformation_parsing
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.parsing import ResourceMap
from moto.cloudwatch.models import Alarm, CloudWatchBackend, Dimension, cloudwatch_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.common_models import CloudFormationModel
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse, EmptyResult
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models.instances import Instance
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.ec2.utils import parse_user_data
from moto.elb.models import ELBBackend, FakeHealthCheck, FakeListener, LoadBalancer
from moto.elb.responses import ELBResponse
from moto.elbv2.exceptions import ValidationError as ELBv2ValidationError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup, elbv2_backends

# Private: an underscore module. moto's own server resets every backend through it (EmulatedAWS.reset).
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server import werkzeug_app
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import S3Backend, s3_backends

__all__ = [
    "ASG_NAME_TAG", "DEFAULT_ACCOUNT_ID", "ActionResult", "Alarm", "AutoScalingBackend", "AutoScalingResponse",
    "AutoscalingClientError", "CloudFormationModel", "CloudWatchBackend", "DetachInstanceActivity",
    "DomainDispatcherApplication", "ELBBackend", "ELBResponse", "ELBv2Backend", "ELBv2ValidationError",
    "EmptyResult", "EnterStandbyActivity", "ExitStandbyActivity", "FakeAutoScalingGroup", "FakeHealthStatus",
    "FakeScalingPolicy", "FakeScheduledAction", "FakeTargetGroup", "InstanceState", "LaunchTemplates",
    "ResourceContentionError",
    "ResourceMap", "TerminateInstanceActivity", "ValidationError", "autoscaling_backends",
    "cloudformation_backends", "cloudwatch_backends", "create_backend_app", "ec2_backends", "elbv2_backends",
    "moto_api_backend", "parse_user_data", "s3_backends",
]


class SeamError(Exception):
    """The layer and the moto it runs on disagree: a replacement for an unlisted attribute, or moto changed."""


class Wrap(NamedTuple):
    cls: type
    name: str
    signature: str  # str(inspect.signature(moto's original)) in the pinned moto


class Call(NamedTuple):
    owner: Any  # a moto class, module or object
    name: str
    signature: str  # str(inspect.signature(getattr(owner, name))) in the pinned moto
    bare: bool = False  # compare parameter names and defaults only (the annotations list every AWS service)


ACTION = "(self) -> moto.core.responses.ActionResult"  # every moto response action

# -- WRAPPED -----------------------------------------------------------------------------------------------
WRAPPED: tuple[Wrap, ...] = (
    # targets.py: target health moves with time (E1), deregistration drains (E2), Classic ELB (E3).
    Wrap(FakeTargetGroup, "register", "(self, targets: list[dict[str, typing.Any]]) -> None"),
    Wrap(FakeTargetGroup, "deregister", "(self, targets: list[dict[str, typing.Any]]) -> None"),
    Wrap(FakeTargetGroup, "deregister_terminated_instances", "(self, instance_ids: list[str]) -> None"),
    Wrap(FakeTargetGroup, "health_for",
         "(self, target: dict[str, typing.Any], ec2_backend: moto.ec2.models.EC2Backend)"
         " -> moto.elbv2.models.FakeHealthStatus"),
    Wrap(ELBv2Backend, "describe_target_health",
         "(self, target_group_arn: str, targets: list[dict[str, typing.Any]])"
         " -> list[moto.elbv2.models.FakeHealthStatus]"),
    Wrap(ELBv2Backend, "create_target_group", "(self, name: str, **kwargs: Any) -> moto.elbv2.models.FakeTargetGroup"),
    Wrap(ELBv2Backend, "modify_target_group",
         "(self, arn: str, health_check_proto: str | None = None, health_check_port: str | None = None,"
         " health_check_path: str | None = None, health_check_interval: int | None = None,"
         " health_check_timeout: int | None = None, healthy_threshold_count: str | None = None,"
         " unhealthy_threshold_count: str | None = None, http_codes: str | None = None,"
         " health_check_enabled: bool | None = None) -> moto.elbv2.models.FakeTargetGroup"),
    Wrap(ELBv2Backend, "modify_target_group_attributes",
         "(self, target_group_arn: str, attributes: dict[str, typing.Any]) -> None"),
    # cross_zone.py: cross-zone load balancing defaults and settings (E6).
    Wrap(ELBv2Backend, "create_load_balancer",
         "(self, name: str, security_groups: list[str], subnet_ids: list[str],"
         " subnet_mappings: list[dict[str, str]] | None = None, scheme: str = 'internet-facing',"
         " loadbalancer_type: str | None = None, ip_address_type: str = 'ipv4',"
         " tags: list[dict[str, str]] | None = None) -> moto.elbv2.models.FakeLoadBalancer"),
    Wrap(ELBv2Backend, "modify_load_balancer_attributes",
         "(self, arn: str, attrs: dict[str, typing.Any]) -> dict[str, typing.Any]"),
    Wrap(ELBBackend, "register_instances",
         "(self, load_balancer_name: str, instance_ids: collections.abc.Iterable[str],"
         " from_autoscaling: bool = False) -> moto.elb.models.LoadBalancer"),
    Wrap(ELBBackend, "deregister_instances",
         "(self, load_balancer_name: str, instance_ids: collections.abc.Iterable[str],"
         " from_autoscaling: bool = False) -> moto.elb.models.LoadBalancer"),
    Wrap(ELBResponse, "describe_instance_health", ACTION),
    # launch_templates.py: CreateLaunchTemplateVersion with SourceVersion and UserData (L1).
    Wrap(LaunchTemplates, "create_launch_template_version", ACTION),
    # autoscaling.py: capacity and launches (A5, A6), load balancer membership (A1, A8, E3), A4.
    Wrap(FakeAutoScalingGroup, "set_desired_capacity", "(self, new_capacity: 'int | None') -> 'None'"),
    Wrap(AutoScalingBackend, "update_attached_elbs", "(self, group_name: 'str') -> 'None'"),
    Wrap(AutoScalingBackend, "update_attached_target_groups", "(self, group_name: 'str') -> 'None'"),
    Wrap(AutoScalingBackend, "detach_load_balancer_target_groups",
         "(self, group_name: 'str', target_group_arns: 'list[str]') -> 'None'"),
    Wrap(AutoScalingBackend, "detach_load_balancers",
         "(self, group_name: 'str', load_balancer_names: 'list[str]') -> 'None'"),
    Wrap(AutoScalingBackend, "notify_terminate_instances", "(self, instance_ids: 'list[str]') -> 'None'"),
    # attach_instances, execute_policy and the warm-pool guards below are NOT USED BY THE PRODUCT YET: kept for
    # the warm-pool and standby-worker issues (docs/localcloud.md, "Not used by the product yet").
    # asg_api.py: request rules (A1-A6, A11, A12).
    *(Wrap(AutoScalingResponse, name, ACTION) for name in (
        "set_desired_capacity", "update_auto_scaling_group", "create_auto_scaling_group",
        "delete_auto_scaling_group", "enter_standby", "exit_standby", "detach_instances",
        "terminate_instance_in_auto_scaling_group", "attach_instances", "put_lifecycle_hook", "set_instance_health",
        "set_instance_protection")),
    # asg_api.py: A11, an unknown group is a ValidationError; then moto's own action runs.
    *(Wrap(AutoScalingResponse, name, ACTION) for name in (
        "suspend_processes", "resume_processes", "attach_load_balancer_target_groups",
        "detach_load_balancer_target_groups", "describe_load_balancer_target_groups", "attach_load_balancers",
        "detach_load_balancers", "describe_load_balancers", "describe_lifecycle_hooks",
        "delete_lifecycle_hook", "enable_metrics_collection", "put_warm_pool", "delete_warm_pool",
        "put_scheduled_update_group_action", "batch_put_scheduled_update_group_action")),
    # asg_catalog.py: pages (A9), tags (A12), policies and scheduled actions per group (A7).
    *(Wrap(AutoScalingResponse, name, ACTION) for name in (
        "describe_auto_scaling_groups", "describe_auto_scaling_instances", "describe_tags", "describe_policies",
        "describe_scheduled_actions", "create_or_update_tags", "delete_tags", "delete_policy", "execute_policy")),
    # warm.py: A17, the pool's instances (moto lists none).
    Wrap(AutoScalingResponse, "describe_warm_pool", ACTION),
    # activities.py: A15, moto answers no activities at all.
    Wrap(AutoScalingResponse, "describe_scaling_activities", ACTION),
    Wrap(AutoScalingBackend, "put_scaling_policy",
         "(self, name: 'str', policy_type: 'str', metric_aggregation_type: 'str', adjustment_type: 'str',"
         " as_name: 'str', min_adjustment_magnitude: 'str', scaling_adjustment: 'int | None',"
         " cooldown: 'int | None', target_tracking_config: 'dict[str, Any]', step_adjustments: 'str',"
         " estimated_instance_warmup: 'str', predictive_scaling_configuration: 'str') -> 'FakeScalingPolicy'"),
    Wrap(AutoScalingBackend, "put_scheduled_update_group_action",
         "(self, name: 'str', desired_capacity: 'None | str | int', max_size: 'None | str | int',"
         " min_size: 'None | str | int', scheduled_action_name: 'str', start_time: 'str | None',"
         " end_time: 'str | None', recurrence: 'str | None', timezone: 'str | None') -> 'FakeScheduledAction'"),
    Wrap(AutoScalingBackend, "delete_scheduled_action",
         "(self, auto_scaling_group_name: 'str', scheduled_action_name: 'str') -> 'None'"),
    # alarms.py: W2, alarms evaluate the metric data the layer keeps; PutMetricAlarm keeps an existing alarm's
    # state; SetAlarmState holds until the next evaluation.
    Wrap(CloudWatchBackend, "put_metric_data",
         "(self, namespace: str, metric_data: list[dict[str, typing.Any]]) -> None"),
    Wrap(CloudWatchBackend, "put_metric_alarm",
         "(self, name: str, namespace: str, metric_name: str, comparison_operator: str, evaluation_periods: int,"
         " period: int, threshold: float, statistic: str, description: str, dimensions: list[dict[str, str]],"
         " alarm_actions: list[str], metric_data_queries: list[moto.cloudwatch.models.MetricDataQuery] | None = None,"
         " datapoints_to_alarm: int | None = None, extended_statistic: str | None = None,"
         " ok_actions: list[str] | None = None, insufficient_data_actions: list[str] | None = None,"
         " unit: str | None = None, actions_enabled: bool = True, treat_missing_data: str | None = None,"
         " evaluate_low_sample_count_percentile: str | None = None, threshold_metric_id: str | None = None,"
         " rule: str | None = None, tags: list[dict[str, str]] | None = None) -> moto.cloudwatch.models.Alarm"),
    Wrap(CloudWatchBackend, "set_alarm_state",
         "(self, alarm_name: str, reason: str, reason_data: str, state_value: str) -> None"),
    # cfn.py: moto's CloudFormation calls backends, not the actions above: a stack's group gets the create
    # rules and hooks (A5, A12, A19), an update in place (X3a), a delete that drains (E2); a target group its
    # attributes. Classmethods: the signature is that of the function under moto's classmethod.
    Wrap(FakeAutoScalingGroup, "create_from_cloudformation_json",
         "(cls, resource_name: 'str', cloudformation_json: 'dict[str, Any]', account_id: 'str', region_name: 'str',"
         " **kwargs: 'Any') -> 'FakeAutoScalingGroup'"),
    Wrap(FakeAutoScalingGroup, "update_from_cloudformation_json",
         "(cls, original_resource: 'Any', new_resource_name: 'str', cloudformation_json: 'dict[str, Any]',"
         " account_id: 'str', region_name: 'str') -> 'FakeAutoScalingGroup'"),
    Wrap(FakeAutoScalingGroup, "delete_from_cloudformation_json",
         "(cls, resource_name: 'str', cloudformation_json: 'dict[str, Any]', account_id: 'str',"
         " region_name: 'str') -> 'None'"),
    Wrap(FakeAutoScalingGroup, "delete", "(self, account_id: 'str', region_name: 'str') -> 'None'"),
    Wrap(ResourceMap, "load_conditions", "(self) -> None"),  # YAML's !Condition inside !And / !Or / !Not
    Wrap(ResourceMap, "build_resource_diff",
         "(self, other_template: dict[str, typing.Any], parameters: dict[str, typing.Any] | None = None)"
         " -> dict[str, typing.Any]"),
    Wrap(FakeTargetGroup, "create_from_cloudformation_json",
         "(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any)"
         " -> 'FakeTargetGroup'"),
)

# -- ADDED: moto answers these with HTTP 500 (not implemented); A6 needs them. -----------------------------
ADDED: tuple[tuple[type, str], ...] = (
    (AutoScalingResponse, "complete_lifecycle_action"),
    (AutoScalingResponse, "record_lifecycle_action_heartbeat"),
    # refresh.py: A16, instance refresh.
    (AutoScalingResponse, "start_instance_refresh"),
    (AutoScalingResponse, "describe_instance_refreshes"),
    (AutoScalingResponse, "cancel_instance_refresh"),
    # cfn.py: moto's target group inherits only CloudFormationModel's abstract update, so a stack update
    # that touches one fails; the layer updates its health check settings and attributes in place.
    (FakeTargetGroup, "update_from_cloudformation_json"),
    (FakeTargetGroup, "get_cfn_attribute"),  # Fn::GetAtt TargetGroupFullName and the others
)

# -- ADDED_TYPES: CloudFormation resource types moto skips ("No Moto CloudFormation support"); cfn.py defines
# a CloudFormationModel for each, which moto's parser finds among CloudFormationModel's subclasses.
ADDED_TYPES: tuple[str, ...] = ("AWS::S3::BucketPolicy", "AWS::CloudWatch::Alarm")

# -- CALLED ------------------------------------------------------------------------------------------------
CALLED: tuple[Call, ...] = (
    # The request readers every replaced action uses (moto's private API).
    Call(BaseResponse, "_get_param", "(self, param_name: 'str', if_none: 'Any' = None) -> 'Any'"),
    Call(BaseResponse, "_get_int_param",
         "(self, param_name: 'str', if_none: 'TYPE_IF_NONE' = None) -> 'int | TYPE_IF_NONE'"),
    Call(BaseResponse, "_get_bool_param",
         "(self, param_name: 'str', if_none: 'TYPE_IF_NONE' = None) -> 'bool | TYPE_IF_NONE'"),
    Call(BaseResponse, "_get_params", "(self) -> 'dict[str, Any]'"),
    # Models the layer drives itself.
    Call(FakeAutoScalingGroup, "replace_autoscaling_group_instances",
         "(self, count_needed: 'int', propagated_tags: 'dict[str, str]') -> 'None'"),
    Call(FakeAutoScalingGroup, "get_propagated_tags", "(self) -> 'dict[str, str]'"),
    Call(AutoScalingBackend, "set_desired_capacity",
         "(self, group_name: 'str', desired_capacity: 'int | None') -> 'None'"),
    Call(AutoScalingBackend, "update_auto_scaling_group",
         "(self, name: 'str', availability_zones: 'list[str]', desired_capacity: 'int | None',"
         " max_size: 'int | None', min_size: 'int | None', launch_config_name: 'str',"
         " launch_template: 'dict[str, Any]', vpc_zone_identifier: 'str', health_check_period: 'int',"
         " health_check_type: 'str', new_instances_protected_from_scale_in: 'bool | None' = None,"
         " mixed_instances_policy: 'dict[str, Any] | None' = None) -> 'FakeAutoScalingGroup'"),
    Call(AutoScalingBackend, "describe_auto_scaling_groups",
         "(self, names: 'list[str]', filters: 'list[dict[str, str]] | None' = None) -> 'list[FakeAutoScalingGroup]'"),
    Call(AutoScalingBackend, "describe_auto_scaling_instances",
         "(self, instance_ids: 'list[str]') -> 'list[InstanceState]'"),
    Call(AutoScalingBackend, "describe_tags",
         "(self, filters: 'list[dict[str, str]]') -> 'list[dict[str, str]]'"),
    Call(AutoScalingBackend, "create_lifecycle_hook",  # A19: LifecycleHookSpecificationList
         "(self, name: 'str', as_name: 'str', transition: 'str', timeout: 'int | None', result: 'str')"
         " -> 'LifecycleHook'"),
    Call(AutoScalingBackend, "delete_lifecycle_hook", "(self, as_name: 'str', name: 'str') -> 'None'"),
    Call(ELBBackend, "get_load_balancer", "(self, load_balancer_name: str) -> moto.elb.models.LoadBalancer"),
    Call(ELBBackend, "describe_instance_health",
         "(self, lb_name: str, instances: list[dict[str, str]]) -> list[dict[str, typing.Any]]"),
    Call(EC2Backend, "create_tags", "(self, resource_ids: list[str], tags: dict[str, str]) -> bool"),
    Call(EC2Backend, "delete_tags", "(self, resource_ids: list[str], tags: dict[str, str]) -> bool"),
    Call(EC2Backend, "all_instances", "(self, filters: 'Any' = None) -> 'list[Instance]'"),  # A15: vCPU limit
    Call(EC2Backend, "get_subnet", "(self, subnet_id: 'str') -> 'Subnet'"),  # A19: a subnet's zone
    Call(EC2Backend, "get_instance", "(self, instance_id: 'str') -> 'Instance'"),
    Call(EC2Backend, "terminate_instances",
         "(self, instance_ids: 'list[str]') -> 'list[tuple[Instance, InstanceState]]'"),
    # cfn.py: what a stack update and the added resource types change.
    Call(AutoScalingBackend, "create_or_update_tags", "(self, tags: 'list[dict[str, str]]') -> 'None'"),
    Call(AutoScalingBackend, "delete_tags", "(self, tags: 'list[dict[str, str]]') -> 'None'"),
    Call(AutoScalingBackend, "attach_load_balancer_target_groups",
         "(self, group_name: 'str', target_group_arns: 'list[str]') -> 'None'"),
    Call(S3Backend, "put_bucket_policy", "(self, bucket_name: 'str', policy: 'bytes') -> 'None'"),
    Call(S3Backend, "delete_bucket_policy", "(self, bucket_name: 'str') -> 'None'"),
    # (cfn.py also calls CloudWatchBackend.put_metric_alarm for a stack's alarm: WRAPPED above holds its signature
    # and routes the call through alarms.py, so a stack's alarm evaluates as an API-made one does.)
    Call(CloudWatchBackend, "delete_alarms", "(self, alarm_names: list[str]) -> None"),
    # moto's parser caches the list of CloudFormationModel subclasses (functools.lru_cache): install() calls
    # their cache_clear once cfn.py's are defined.
    Call(cloudformation_parsing, "get_model_list", "()", bare=True),
    Call(cloudformation_parsing, "get_model_map", "()", bare=True),
    Call(cloudformation_parsing, "get_name_type_map", "()", bare=True),
    # Constructors.
    Call(InstanceState, "__init__",
         "(self, instance: 'Instance', lifecycle_state: 'str' = 'InService', health_status: 'str' = 'Healthy',"
         " protected_from_scale_in: 'bool | None' = False, autoscaling_group: 'FakeAutoScalingGroup | None' = None)"),
    Call(EnterStandbyActivity, "__init__", "(self, instance: 'Instance', original_capacity: 'int | None' = None)"),
    Call(ExitStandbyActivity, "__init__", "(self, instance: 'Instance', original_capacity: 'int | None' = None)"),
    Call(DetachInstanceActivity, "__init__", "(self, instance: 'Instance')"),
    Call(TerminateInstanceActivity, "__init__", "(self, instance: 'Instance', original_capacity: 'int')"),
    Call(FakeHealthStatus, "__init__",
         "(self, instance_id: str, port: str, health_port: str | None, status: str, reason: str | None = None,"
         " description: str | None = None)"),
    Call(Alarm, "update_state", "(self, reason: str, reason_data: str, state_value: str) -> None"),  # W2
    Call(ActionResult, "__init__", "(self, result: 'object') -> 'None'"),
    Call(EmptyResult, "__init__", "(self) -> 'None'"),
    Call(ServiceException, "__init__", "(self, *args: Any, **kwargs: Any) -> None"),  # every moto error class
    # The HTTP server (server.py).
    Call(moto_api_backend, "reset", "() -> None"),
    Call(DomainDispatcherApplication, "__init__", "(self, create_app)", bare=True),
    Call(DomainDispatcherApplication, "__call__", "(self, environ, start_response)", bare=True),
    Call(werkzeug_app, "create_backend_app", "(service)", bare=True),
)

# -- STATE: attribute -> the type the layer relies on (None: any) ------------------------------------------
STATE: dict[type, dict[str, type | None]] = {
    FakeAutoScalingGroup: {
        "name": str, "autoscaling_backend": AutoScalingBackend, "instance_states": list, "desired_capacity": int,
        "min_size": int, "max_size": int, "target_group_arns": list, "load_balancer_names": list, "tags": list,
        "new_instances_protected_from_scale_in": None,
        # A19: launch() shows moto's single-subnet launch only the chosen subnet and zone for one call
        "vpc_zone_identifier": None, "availability_zones": list,
        # A15: what a launch failure names (activities.py)
        "arn": str, "ec2_launch_template": None, "instance_type": None, "image_id": None,
        # A18 (weights.py): read, and `desired_capacity_type` written by the layer (moto has none; its
        # serializer reports it as DesiredCapacityType because the botocore shape names it)
        "mixed_instances_policy": None, "desired_capacity_type": None,
        "warm_pool": None,  # A17 (warm.py): moto's FakeWarmPool (max_group_prepared_capacity, min_size, pool_state)
        "_suspended_processes": list,  # private: A8 reads it directly (moto has no public reader)
        "health_check_type": str, "health_check_grace_period": None,  # A20 (group_health.py)
    },
    InstanceState: {
        "instance": Instance, "auto_scaling_group_name": str, "lifecycle_state": str, "health_status": str,
        "protected_from_scale_in": None,
        "weighted_capacity": None,  # A18: written by the layer at launch; reported as WeightedCapacity
    },
    Instance: {"id": str, "state": str, "autoscaling_group": None, "subnet_id": str, "instance_type": str},
    AutoScalingBackend: {
        "autoscaling_groups": dict, "policies": dict, "scheduled_actions": dict, "lifecycle_hooks": dict,
        "ec2_backend": EC2Backend, "elb_backend": ELBBackend, "elbv2_backend": ELBv2Backend, "account_id": str,
        "region_name": str,
    },
    EC2Backend: {"tags": dict},  # resource id -> {key: value}; A12 holds propagated tags back through it
    ELBv2Backend: {"target_groups": dict, "load_balancers": dict},
    FakeTargetGroup: {
        "arn": str, "port": None, "targets": dict, "attributes": dict, "health_check_interval_seconds": None,
        "healthy_threshold_count": None, "health_check_port": None,
        "name": str, "unhealthy_threshold_count": None, "health_check_enabled": bool,  # E5
        "load_balancer_arns": list,  # E6
    },
    LoadBalancer: {
        "name": str, "instance_ids": list, "instance_autoscaling_ids": list, "attributes": dict, "listeners": list,
        "health_check": FakeHealthCheck,
    },
    FakeListener: {"instance_port": None},
    FakeHealthCheck: {"interval": None, "healthy_threshold": None, "unhealthy_threshold": None},
    LifecycleHook: {
        "name": str, "auto_scaling_group_name": str, "lifecycle_transition": str, "default_result": str,
        "heartbeat_timeout": None,
    },
    FakeScalingPolicy: {
        "name": str, "arn": str, "auto_scaling_group_name": str, "policy_type": str, "adjustment_type": str,
        "scaling_adjustment": None,
        "step_adjustments": None, "cooldown": None,  # W2: an alarm executes the policy (alarms.py)
        # W1 (asg_catalog._link_alarms): the layer writes `alarms` at every DescribePolicies (moto has none; its
        # serializer reports it as Alarms because the botocore shape names it)
    },
    FakeScheduledAction: {
        "scheduled_action_name": str, "auto_scaling_group_name": str, "start_time": None, "recurrence": None,
        "min_size": None, "max_size": None, "desired_capacity": None,
    },
    # W1 (asg_catalog.delete_policy): the alarms, by name, and the action lists DeletePolicy strips.
    # W1 (asg_catalog._link_alarms), cfn.py (GetAtt Arn): name and ARN of an alarm.
    # W2 (alarms.py): what an alarm evaluates, its state (written directly only at creation and when
    # PutMetricAlarm replaces it; transitions go through Alarm.update_state), its actions.
    CloudWatchBackend: {"alarms": dict, "account_id": str, "region_name": str},
    Alarm: {"alarm_actions": list, "ok_actions": list, "insufficient_data_actions": list, "name": str,
            "namespace": None, "metric_name": None, "metric_data_queries": list, "comparison_operator": None,
            "evaluation_periods": None, "datapoints_to_alarm": None, "period": None, "threshold": None,
            "statistic": None, "dimensions": list, "unit": None, "actions_enabled": None,
            "treat_missing_data": None, "rule": None, "state_value": str, "state_reason": str,
            "state_reason_data": None, "state_updated_timestamp": None, "history": list, "alarm_arn": str},
    Dimension: {"name": None, "value": None},
    ResourceMap: {"_resource_json_map": dict,  # cfn.py: the stack's current resources, before an update
                  "_template": dict},  # cfn.py: its Conditions, read before moto parses them
    S3Backend: {"buckets": dict},  # cfn.py: a bucket policy outlives no bucket
    # Response classes: properties, present only on an instance serving a request; checked on the class.
    AutoScalingResponse: {"autoscaling_backend": property},
    ELBResponse: {"elb_backend": property},
    AutoscalingClientError: {"code": str},  # asg_api subclasses it with codes of its own (A11)
}

# -- MOTO_PATHS --------------------------------------------------------------------------------------------
# The layer assumes that moto's Auto Scaling code launches, registers, and moves lifecycle state or capacity
# only where listed below. The test finds every function in PATH_MODULES that calls one of PATH_CALLS or
# assigns one of PATH_ASSIGNS, and compares with this list: a new path in a moto upgrade fails there.
PATH_MODULES = ("moto.autoscaling.models", "moto.autoscaling.responses")
PATH_CALLS = ("replace_autoscaling_group_instances", "InstanceState", "register_instances", "deregister_instances",
              "register_targets", "deregister_targets")
PATH_ASSIGNS = ("lifecycle_state", "instance_states", "desired_capacity")
_UNREACHABLE = "unreachable: the action's response method is replaced and never calls it"
MOTO_PATHS: dict[str, str] = {
    "InstanceState.__init__": "the record's own constructor",
    "FakeScheduledAction.__init__": "the action's own desired_capacity, not a group's",
    "FakeAutoScalingGroup.__init__": "the group's own constructor; it sizes itself through set_desired_capacity",
    "FakeAutoScalingGroup.set_desired_capacity": "replaced (autoscaling.py)",
    "FakeAutoScalingGroup.replace_autoscaling_group_instances": "called by the layer's launch(); moto's callers are "
                                                                "replaced",
    "AutoScalingBackend.update_attached_elbs": "replaced (autoscaling.py)",
    "AutoScalingBackend.update_attached_target_groups": "replaced (autoscaling.py)",
    "AutoScalingBackend.detach_load_balancers": "replaced (autoscaling.py)",
    "AutoScalingBackend.detach_load_balancer_target_groups": "replaced (autoscaling.py)",
    "AutoScalingBackend.notify_terminate_instances": "replaced (autoscaling.py)",
    "AutoScalingBackend.attach_instances": _UNREACHABLE,
    "AutoScalingBackend.detach_instances": _UNREACHABLE,
    "AutoScalingBackend.enter_standby_instances": _UNREACHABLE,
    "AutoScalingBackend.exit_standby_instances": _UNREACHABLE,
}

# -- registration and install ------------------------------------------------------------------------------
_LISTED = {(w.cls, w.name) for w in WRAPPED} | set(ADDED)
_replacements: dict[tuple[type, str], Callable[..., Any]] = {}
_originals: dict[tuple[type, str], Any] = {}


def register(cls: type, name: str, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """Make `replacement` answer for moto's cls.name once install() runs. Only listed pairs may be replaced."""
    key = (cls, name)
    if key not in _LISTED:
        raise SeamError(f"{cls.__name__}.{name} is not listed in moto_seam.WRAPPED or ADDED; list it there first")
    if _replacements.get(key, replacement) is not replacement:
        raise SeamError(f"{cls.__name__}.{name} has two replacements")
    _replacements[key] = replacement
    return replacement


def replaces(cls: type, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of register()."""
    return lambda replacement: register(cls, name, replacement)


def install() -> None:
    """Put every replacement on moto's classes; idempotent (a class attribute is replaced once per process)."""
    from . import (  # noqa: F401  (importing them registers them)
        activities,
        alarms,
        asg_api,
        asg_catalog,
        autoscaling,
        cfn,
        launch_templates,
        refresh,
        targets,
        warm,
    )

    for cache in (cloudformation_parsing.get_model_list, cloudformation_parsing.get_model_map,
                  cloudformation_parsing.get_name_type_map):
        cache.cache_clear()  # moto's parser lists CloudFormationModel's subclasses once: now with cfn.py's

    missing = _LISTED - set(_replacements)
    if missing:
        raise SeamError(f"no replacement registered for {sorted(f'{c.__name__}.{n}' for c, n in missing)}")
    added = set(ADDED)
    for (cls, name), replacement in _replacements.items():
        if (cls, name) in _originals:
            continue
        present = name in cls.__dict__
        if (cls, name) in added and present:
            raise SeamError(f"moto changed: {cls.__name__}.{name} exists now; compare it with the layer's own")
        if (cls, name) not in added and not present:
            raise SeamError(f"moto changed: {cls.__name__}.{name} no longer exists; the fidelity layer needs it")
        moto_version = cls.__dict__.get(name)
        # A classmethod's original is the function under it: call it as original(cls, name)(cls, ...).
        _originals[(cls, name)] = getattr(moto_version, "__func__", moto_version)
        setattr(cls, name, replacement)


def original(cls: type, name: str) -> Any:
    """moto's own cls.name, as it was before install()."""
    return _originals[(cls, name)]


def signature_text(obj: Any, bare: bool = False) -> str:
    """`str(inspect.signature(obj))`, or with `bare` only the parameter names, kinds and defaults."""
    signature = inspect.signature(obj)
    if bare:
        signature = signature.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
            return_annotation=inspect.Signature.empty)
    return str(signature)
