"""Crash-and-rerun: `bluegreen` killed with SIGKILL at every step boundary and inside the batch loops.

The test hook BLUEGREEN_CRASH_AT=<step>[:<n>] (deployer/runner.py) kills the process just before it applies
the n-th step of that name. After each kill the fleet must have lost no instance, and running the same
command again (or `rollback`) must complete it.
"""

import pytest

from tests.deployer.conftest import HealthSampler, run_bluegreen


def size_for(point):
    """21 instances (two batches of at most 20) where the crash is inside a batch loop, else 3: faster."""
    return 21 if ":" in point else 3

DEPLOY = ["lock", "set-version", "size-new", "wait-new-healthy", "copy-policies", "suspend", "mark-flip",
          "lower-min", "enter-standby:1", "enter-standby:2", "wait-deregistered"]
ROLLBACK = ["lock", "resume", "exit-standby:1", "exit-standby:2", "restore-sizes", "wait-restored",
            "remove-copied-policies", "retire-new", "unlock"]
CANARY = ["lock", "set-version", "size-canary", "wait-canary-healthy"]
FINALIZE = ["lock", "wait-drained", "detach:1", "detach:2", "terminate", "mark-cleanup", "delete-old-policies",
            "empty-old", "resume", "unlock"]


def crash(args, point):
    proc = run_bluegreen(*args, env={"BLUEGREEN_CRASH_AT": point})
    assert proc.returncode == -9, f"expected SIGKILL at {point}, got {proc.returncode}:\n{proc.stderr}"
    assert f"killing this process before step {point.split(':')[0]}" in proc.stderr
    return proc


def ok(*args):
    proc = run_bluegreen(*args)
    assert proc.returncode == 0, f"{args} exit {proc.returncode}\n{proc.stderr}"
    return proc


def no_instance_lost(fleet, original):
    """Each old instance is in service, or in Standby with the operation recorded, or detached and then
    terminated (or tagged for termination, which the rerun finishes)."""
    in_group = fleet.lifecycles("blue")
    recorded = "bluegreen:operation" in fleet.tags("blue")
    gone = [i for i in original if i not in in_group]
    res = fleet.ec2.describe_instances(InstanceIds=gone)["Reservations"] if gone else []
    outside = {i["InstanceId"]: i for r in res for i in r["Instances"]}
    for iid in original:
        life = in_group.get(iid)
        if life in ("InService", "Pending", "EnteringStandby"):
            continue
        if life == "Standby":
            assert recorded, f"{iid} is in Standby with no operation recorded"
            continue
        assert life is None, f"{iid} is {life}"
        inst = outside[iid]
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        assert inst["State"]["Name"] in ("shutting-down", "terminated") or \
            tags.get("bluegreen:retired-from") == "demo-blue", f"{iid} left the group and still runs untracked"


def with_policy(fleet):
    fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-blue", PolicyName="cpu50",
                                 PolicyType="TargetTrackingScaling",
                                 TargetTrackingConfiguration={"PredefinedMetricSpecification": {
                                     "PredefinedMetricType": "ASGAverageCPUUtilization"}, "TargetValue": 50.0})
    return fleet


def policy_names(fleet, color):
    return {p["PolicyName"] for p in fleet.asg.describe_policies(
        AutoScalingGroupName=fleet.svc["groups"][color])["ScalingPolicies"]}


@pytest.mark.parametrize("point", DEPLOY)
def test_deploy_killed_then_rerun(make_fleet, point):
    n = size_for(point)
    fleet = with_policy(make_fleet(capacity=n))
    original = set(fleet.lifecycles("blue"))
    crash(("deploy", "demo", "2.0"), point)
    no_instance_lost(fleet, original)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok("deploy", "demo", "2.0")
    assert sampler.minimum >= n
    fleet.assert_flipped("green", n, "2.0")
    assert set(fleet.lifecycles("blue")) == original
    assert policy_names(fleet, "green") == {"cpu50"}


@pytest.mark.parametrize("point", DEPLOY)
def test_deploy_killed_then_rolled_back(make_fleet, point):
    n = size_for(point)
    fleet = with_policy(make_fleet(capacity=n))
    original = set(fleet.lifecycles("blue"))
    crash(("deploy", "demo", "2.0"), point)
    if point == "lock":  # killed before anything was recorded or changed: there is nothing to undo
        proc = run_bluegreen("rollback", "demo")
        assert proc.returncode == 3 and "nothing to roll back" in proc.stderr
        fleet.assert_serving_only("blue", n, "1.0")
        return
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok("rollback", "demo")
    assert sampler.minimum >= n
    fleet.assert_serving_only("blue", n, "1.0")
    assert set(fleet.lifecycles("blue")) == original
    assert fleet.sizes("blue") == (n, n, 2 * n)
    assert policy_names(fleet, "blue") == {"cpu50"} and policy_names(fleet, "green") == set()


@pytest.mark.parametrize("point", ROLLBACK)
def test_rollback_killed_then_rerun(make_fleet, point):
    n = size_for(point)
    fleet = with_policy(make_fleet(capacity=n))
    original = set(fleet.lifecycles("blue"))
    ok("deploy", "demo", "2.0")
    crash(("rollback", "demo"), point)
    no_instance_lost(fleet, original)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok("rollback", "demo")
    assert sampler.minimum >= n
    fleet.assert_serving_only("blue", n, "1.0")
    assert set(fleet.lifecycles("blue")) == original
    assert policy_names(fleet, "blue") == {"cpu50"} and policy_names(fleet, "green") == set()


@pytest.mark.parametrize("point", FINALIZE)
def test_finalize_killed_then_rerun(make_fleet, point):
    n = size_for(point)
    fleet = with_policy(make_fleet(capacity=n))
    original = set(fleet.lifecycles("blue"))
    ok("deploy", "demo", "2.0")
    crash(("finalize", "demo"), point)
    no_instance_lost(fleet, original)
    ok("finalize", "demo")
    fleet.assert_serving_only("green", n, "2.0")
    assert fleet.lifecycles("blue") == {}
    states = fleet.ec2_states(original)
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    assert policy_names(fleet, "blue") == set() and policy_names(fleet, "green") == {"cpu50"}


@pytest.mark.parametrize("point", CANARY)
def test_canary_killed_then_rerun_then_rolled_back(make_fleet, point):
    fleet = make_fleet(capacity=3)
    crash(("canary", "demo", "2.0", "--count", "2"), point)
    ok("canary", "demo", "2.0", "--count", "2")
    assert sorted(fleet.lifecycles("green").values()) == ["InService", "InService"]
    assert set(fleet.lifecycles("green")) <= fleet.healthy()
    assert "action=canary;phase=serving" in fleet.tags("blue")["bluegreen:operation"]
    ok("rollback", "demo")
    fleet.assert_serving_only("blue", 3, "1.0")
