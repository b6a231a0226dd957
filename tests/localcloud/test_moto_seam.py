"""The moto seam (localcloud/aws/moto_seam.py) against the moto installed: every test here fails when a moto
upgrade changes something the fidelity layer relies on, and names what changed (aws-rules.md, first section).

Each test calls `moto_seam.install()` itself, so none depends on another test having started the emulator.
"""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect
import pathlib
import sys

import boto3
import pytest

from localcloud.aws import moto_seam as seam

LAYER = pathlib.Path(seam.__file__).parent


def _name(cls: type, name: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{name}"


def test_every_wrapped_moto_original_has_the_recorded_signature():
    seam.install()
    now = {w: seam.signature_text(seam.original(w.cls, w.name)) for w in seam.WRAPPED}
    changed = [f"{_name(w.cls, w.name)}: recorded {w.signature}, moto has {now[w]}"
               for w in seam.WRAPPED if now[w] != w.signature]
    assert changed == []


def test_every_wrapped_original_is_motos_own_function():
    seam.install()
    for w in seam.WRAPPED:
        moto_version = seam.original(w.cls, w.name)
        assert inspect.isfunction(moto_version), _name(w.cls, w.name)
        assert moto_version.__module__.startswith("moto."), (_name(w.cls, w.name), moto_version.__module__)


def test_every_added_method_is_still_missing_from_moto():
    """If moto implements one of them, compare its version with the layer's before keeping ours (A6)."""
    seam.install()
    for cls, name in seam.ADDED:
        assert seam.original(cls, name) is None, _name(cls, name)
        # CloudFormationModel's abstract placeholder (update_from_cloudformation_json) is no implementation
        assert not any(name in vars(base) and not getattr(vars(base)[name], "__isabstractmethod__", False)
                       for base in cls.__mro__[1:]), _name(cls, name)


def test_every_added_cloudformation_type_is_still_missing_from_moto():
    """If moto's CloudFormation gains one of them, compare it with cfn.py's before keeping ours."""
    from localcloud.aws import cfn

    seam.install()
    motos = {model.cloudformation_type() for model in seam.CloudFormationModel.__subclasses__()
             if model.__module__.startswith("moto.")}
    assert motos & set(seam.ADDED_TYPES) == set()
    added = seam.cloudformation_parsing.get_model_map()
    assert {t: added[t] for t in seam.ADDED_TYPES} == {m.cloudformation_type(): m for m in cfn.ADDED_TYPES}


def test_every_moto_method_the_layer_calls_has_the_recorded_signature():
    changed = [f"{c.owner!r}.{c.name}: recorded {c.signature}, moto has "
               f"{seam.signature_text(getattr(c.owner, c.name), c.bare)}"
               for c in seam.CALLED
               if seam.signature_text(getattr(c.owner, c.name), c.bare) != c.signature]
    assert changed == []


def _replaced_in_moto() -> set[tuple[type, str]]:
    """Every attribute of every loaded moto class whose value comes from localcloud: found, not listed."""
    found = set()
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("moto.") or module is None:
            continue
        for cls in list(vars(module).values()):
            if not (isinstance(cls, type) and cls.__module__.startswith("moto.")):
                continue
            for name, value in vars(cls).items():
                func = getattr(value, "__func__", getattr(value, "fget", value))
                if getattr(func, "__module__", None) and func.__module__.startswith("localcloud."):
                    found.add((cls, name))
    return found


def test_install_replaces_exactly_the_listed_attributes():
    seam.install()
    seam.install()  # idempotent: the class attributes are replaced once per process
    listed = {(w.cls, w.name) for w in seam.WRAPPED} | set(seam.ADDED)
    assert len(listed) == len(seam.WRAPPED) + len(seam.ADDED), "a pair is listed twice"
    found = _replaced_in_moto()
    assert sorted(_name(c, n) for c, n in found - listed) == [], "replaced in moto but not listed in the seam"
    assert sorted(_name(c, n) for c, n in listed - found) == [], "listed in the seam but not replaced"


def test_only_listed_attributes_can_be_replaced():
    with pytest.raises(seam.SeamError, match="not listed"):
        seam.register(seam.AutoScalingResponse, "describe_account_limits", lambda self: None)


def _moto_imports(path: pathlib.Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "moto":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "moto"]
    return found


def test_the_layer_imports_moto_only_through_the_seam_and_every_import_resolves():
    elsewhere = {p.name: _moto_imports(p) for p in LAYER.glob("*.py") if p.name != "moto_seam.py"}
    assert {name: found for name, found in elsewhere.items() if found} == {}
    imports = _moto_imports(LAYER / "moto_seam.py")
    assert ("moto.moto_api._internal.models", "moto_api_backend") in imports  # the private one
    for module_name, name in imports:
        module = importlib.import_module(module_name)
        assert not name or hasattr(module, name), f"moto changed: {module_name} has no {name}"


def _moves_instances(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return called in seam.PATH_CALLS
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Attribute) and t.attr in seam.PATH_ASSIGNS for t in targets)
    return False


def test_moto_launches_registers_and_moves_instances_only_on_the_known_paths():
    found = set()
    for module_name in seam.PATH_MODULES:
        tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
        for top in tree.body:
            functions = [(top.name, f) for f in top.body if isinstance(f, ast.FunctionDef)] \
                if isinstance(top, ast.ClassDef) else [(module_name, top)] if isinstance(top, ast.FunctionDef) else []
            found |= {f"{owner}.{f.name}" for owner, f in functions if any(map(_moves_instances, ast.walk(f)))}
    assert sorted(found - set(seam.MOTO_PATHS)) == [], "new moto paths: check that the layer still sees them"
    assert sorted(set(seam.MOTO_PATHS) - found) == [], "paths moto no longer has: drop them from the seam"


def _live_objects(world) -> list[object]:
    """One real object of every moto class the seam lists, made through boto3 over HTTP."""
    tg = world.target_group()
    world.elb.create_load_balancer(LoadBalancerName="classic", AvailabilityZones=["us-east-1a"], Listeners=[
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}])
    world.elb.configure_health_check(LoadBalancerName="classic", HealthCheck={
        "Target": "HTTP:8080/health", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2})
    world.group("blue", desired=1, target_groups=(tg,), LoadBalancerNames=["classic"])
    world.wait_in_service("blue", 1)
    world.asg.put_lifecycle_hook(AutoScalingGroupName="blue", LifecycleHookName="boot",
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING")
    world.asg.put_scaling_policy(AutoScalingGroupName="blue", PolicyName="out", AdjustmentType="ChangeInCapacity",
                                 ScalingAdjustment=1)
    world.asg.put_scheduled_update_group_action(
        AutoScalingGroupName="blue", ScheduledActionName="night", DesiredCapacity=1,
        StartTime=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName="cpu", Namespace="AWS/EC2", MetricName="CPUUtilization", Statistic="Average", Period=60,
        EvaluationPeriods=1, Threshold=70, ComparisonOperator="GreaterThanThreshold",
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": "blue"}])
    boto3.client("cloudformation").create_stack(StackName="stack", TemplateBody='{"Resources": {"Bucket": '
                                                '{"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "seam-bucket"}}}}')
    (backend,) = world.cloud.state.backends
    cloudwatch = seam.cloudwatch_backends[backend.account_id][backend.region_name]
    stacks = seam.cloudformation_backends[backend.account_id][backend.region_name].stacks
    group = backend.autoscaling_groups["blue"]
    lb = backend.elb_backend.get_load_balancer("classic")
    return [group, group.instance_states[0], group.instance_states[0].instance, backend, backend.ec2_backend,
            backend.elbv2_backend, backend.elbv2_backend.target_groups[tg], lb, lb.listeners[0], lb.health_check,
            *backend.lifecycle_hooks.values(), *backend.policies.values(), *backend.scheduled_actions.values(),
            cloudwatch, *cloudwatch.alarms.values(), *cloudwatch.alarms["cpu"].dimensions,
            *(stack.resource_map for stack in stacks.values()), seam.s3_backends[backend.account_id]["aws"]]


def test_every_moto_attribute_the_layer_relies_on_exists_on_live_objects(world):
    objects = _live_objects(world)
    problems = []
    for cls, attributes in seam.STATE.items():
        if cls.__name__.endswith(("Response", "Error")):
            owner, read = cls, inspect.getattr_static  # a property or class attribute: no live request object
        else:
            owner, read = next((o for o in objects if isinstance(o, cls)), None), getattr
        if owner is None:
            problems.append(f"no live {cls.__name__} was built: add one to _live_objects")
            continue
        for name, expected in attributes.items():
            try:
                value = read(owner, name)
            except AttributeError:
                problems.append(f"{_name(cls, name)} is gone")
                continue
            if expected is not None and not isinstance(value, expected):
                problems.append(f"{_name(cls, name)} is a {type(value).__name__}, not a {expected.__name__}")
    assert problems == []
