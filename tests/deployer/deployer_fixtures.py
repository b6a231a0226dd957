"""Plain describe records and snapshots for the pure planning tests (no AWS)."""

from datetime import datetime, timezone

from deployer.model import Snapshot, pair_from_describe
from deployer.steps import Context

TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo-tg/0123456789abcdef"
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)


def group_record(color, sizes, instances=(), tags=None, suspended=(), service="demo", name=None, elbs=()):
    lo, want, hi = sizes
    all_tags = {"bluegreen:service": service, "bluegreen:color": color, "bluegreen:version": "1.0"}
    all_tags.update(tags or {})
    return {
        "AutoScalingGroupName": name or f"{service}-{color}", "MinSize": lo, "DesiredCapacity": want, "MaxSize": hi,
        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
        "Instances": [{"InstanceId": iid, "LifecycleState": state, "HealthStatus": "Healthy"}
                      for iid, state in instances],
        "SuspendedProcesses": [{"ProcessName": p} for p in suspended],
        "TargetGroupARNs": [TG], "LoadBalancerNames": list(elbs),
    }


def ids(prefix, n, state="InService"):
    return [(f"i-{prefix}{k:05d}", state) for k in range(n)]


def snapshot(blue, green, policies=None, scheduled=None, retired=None, health=None, alarms=None, aside_states=None):
    """With policies and no alarms: no alarm in the Region (they are read together, runner.observe). With health
    and no aside_states: every instance in or entering Standby runs (read together too)."""
    if alarms is None and policies is not None:
        alarms = []
    if aside_states is None and health is not None:
        aside_states = {}
    return Snapshot("demo", pair_from_describe("demo", [blue, green]), health=health, policies=policies,
                    scheduled=scheduled, retired=retired, alarms=alarms, aside_states=aside_states)


def ctx(me="ci@builder:100", alive=(), force=False):
    return Context(me=me, now=NOW, holder_alive=lambda h: h in alive, force_unlock=force)


def record_tag(action, phase, version="2.0", live="blue", holder="ci@builder:99", started="2026-11-26T11:00:00Z"):
    return {"bluegreen:operation":
            f"action={action};phase={phase};version={version};live={live};started={started};holder={holder}"}


def names(steps):
    return [s.name for s in steps]


def calls_of(steps, op):
    return [c for s in steps for c in s.calls if c.op == op]
