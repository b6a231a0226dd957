"""Crash-and-rerun: `bluegreen` killed at every step boundary and inside the batch loops, in process.

The harness (tests/deployer/harness.py) "kills" the command just before it applies the n-th step of a name
(`crash_at="<step>[:<n>]"`), as `kill -9` of a pipeline would: nothing of the deployer's runs after that. After
each kill the fleet must have lost no instance, and running the same command again from another process (or
`rollback`) must complete it, never with fewer healthy targets than the live capacity after any call.
A real SIGKILL of the console script is in test_deployer_smoke.py.
"""

import pytest

from tests.helpers import expect_exit


def size_for(point):
    """21 instances (two batches of at most 20) where the crash is inside a batch loop, else 3: faster."""
    return 21 if ":" in point else 3

DEPLOY = ["lock", "set-version", "size-new", "wait-new-healthy", "copy-policies", "suspend",
          "recheck-new-healthy", "lower-min", "enter-standby:1", "enter-standby:2", "wait-deregistered"]
# Right after the flip the old instances still drain: the rollback registers them directly (E8); with the
# harness's 5 s drain they are in Standby by the time the new group is retired, and return with ExitStandby.
ROLLBACK = ["lock", "register-draining", "wait-restored", "retire-new", "exit-standby:1", "exit-standby:2",
            "restore-sizes", "wait-restored:2", "resume", "remove-copied-policies", "unlock"]
# With a 300 s drain the rollback reaches `restored` long before the old instances reach Standby (E8, A1).
FAST_ROLLBACK = ["register-draining", "wait-restored", "retire-new", "wait-new-out", "wait-standby-settled",
                 "exit-standby", "restore-sizes", "wait-restored:2", "unlock"]
CANARY = ["lock", "set-version", "size-canary", "wait-canary-healthy"]
FINALIZE = ["lock", "wait-drained", "detach:1", "detach:2", "terminate", "mark-cleanup", "delete-old-policies",
            "empty-old", "resume", "unlock"]


def crash(fleet, args, point):
    """Run `args` as the first process and kill it at `point`; the reruns come from other processes."""
    out = fleet.bluegreen(*args, crash_at=point, me="ci@runner:1")
    expect_exit(out, -9)
    return out


def ok(fleet, *args):
    """Run `args` to its end as another process than the killed one; return the lowest healthy count it kept."""
    with fleet.health_floor() as floor:
        expect_exit(fleet.bluegreen(*args, me="ci@runner:2"), 0)
    return floor.minimum


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


def killed(make_harness, args, point, before=None):
    """A service (with a policy) where `args` was killed at `point`, after `before` ran to its end; the fleet
    and the original ids, with no instance lost."""
    n = size_for(point)
    fleet = with_policy(make_harness(capacity=n))
    original = set(fleet.lifecycles("blue"))
    if before:
        ok(fleet, *before)
    crash(fleet, args, point)
    no_instance_lost(fleet, original)
    return fleet, original, n


def rolled_back(fleet, original, n):
    """`rollback` run to its end: the same old instances serve the old version, with its policy, and no fewer
    healthy targets than the live capacity after any call."""
    assert ok(fleet, "rollback", "demo") >= n
    fleet.assert_serving_only("blue", n, "1.0")
    assert set(fleet.lifecycles("blue")) == original
    assert policy_names(fleet, "blue") == {"cpu50"} and policy_names(fleet, "green") == set()


@pytest.mark.parametrize("point", DEPLOY)
def test_deploy_killed_then_rerun(make_harness, point):
    fleet, original, n = killed(make_harness, ("deploy", "demo", "2.0"), point)
    assert ok(fleet, "deploy", "demo", "2.0") >= n
    fleet.assert_flipped("green", n, "2.0")
    assert set(fleet.lifecycles("blue")) == original
    assert policy_names(fleet, "green") == {"cpu50--bluegreen-demo-green"}


@pytest.mark.parametrize("point", DEPLOY)
def test_deploy_killed_then_rolled_back(make_harness, point):
    fleet, original, n = killed(make_harness, ("deploy", "demo", "2.0"), point)
    if point == "lock":  # killed before anything was recorded or changed: there is nothing to undo
        expect_exit(fleet.bluegreen("rollback", "demo"), 3, "nothing to roll back")
        fleet.assert_serving_only("blue", n, "1.0")
        return
    rolled_back(fleet, original, n)
    assert fleet.sizes("blue") == (n, n, 2 * n)


@pytest.mark.parametrize("point", ROLLBACK)
def test_rollback_killed_then_rerun(make_harness, point):
    rolled_back(*killed(make_harness, ("rollback", "demo"), point, before=("deploy", "demo", "2.0")))


@pytest.mark.parametrize("point", FAST_ROLLBACK)
def test_rollback_during_a_long_drain_killed_then_rerun(make_harness, point):
    fleet = with_policy(make_harness(capacity=3, deregistration_delay=300))
    original = set(fleet.lifecycles("blue"))
    ok(fleet, "deploy", "demo", "2.0")
    assert set(fleet.lifecycles("blue").values()) == {"EnteringStandby"}  # the drain has 300 s to go
    crash(fleet, ("rollback", "demo"), point)
    no_instance_lost(fleet, original)
    rolled_back(fleet, original, 3)
    assert fleet.sizes("blue") == (3, 3, 6)


@pytest.mark.parametrize("point", FINALIZE)
def test_finalize_killed_then_rerun(make_harness, point):
    fleet, original, n = killed(make_harness, ("finalize", "demo"), point, before=("deploy", "demo", "2.0"))
    assert ok(fleet, "finalize", "demo") >= n
    fleet.assert_serving_only("green", n, "2.0")
    assert fleet.lifecycles("blue") == {}
    states = fleet.ec2_states(original)
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    assert policy_names(fleet, "blue") == set() and policy_names(fleet, "green") == {"cpu50--bluegreen-demo-green"}


@pytest.mark.parametrize("point", CANARY)
def test_canary_killed_then_rerun_then_rolled_back(make_harness, point):
    fleet = make_harness(capacity=3)
    crash(fleet, ("canary", "demo", "2.0", "--count", "2"), point)
    assert ok(fleet, "canary", "demo", "2.0", "--count", "2") >= 3
    assert sorted(fleet.lifecycles("green").values()) == ["InService", "InService"]
    assert set(fleet.lifecycles("green")) <= fleet.healthy()
    assert "action=canary;phase=serving" in fleet.tags("blue")["bluegreen:operation"]
    assert ok(fleet, "rollback", "demo") >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


@pytest.mark.parametrize("point", ["abort-new", "unlock"])
def test_a_deploy_killed_while_it_aborts_is_finished_by_rollback(make_harness, aws, point):
    from tests.deployer.fleet import unhealthy_launches

    fleet = with_policy(make_harness(capacity=3))
    original = set(fleet.lifecycles("blue"))
    with unhealthy_launches(aws, "demo-green"):
        crash(fleet, ("deploy", "demo", "3.0"), point)
    no_instance_lost(fleet, original)
    assert ok(fleet, "rollback", "demo") >= 3
    fleet.assert_serving_only("blue", 3, "1.0")
    assert set(fleet.lifecycles("blue")) == original
    assert policy_names(fleet, "blue") == {"cpu50"} and policy_names(fleet, "green") == set()


STEP = {"PolicyType": "StepScaling", "AdjustmentType": "ChangeInCapacity",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}


def put_alarm(fleet, name, group, arn):
    fleet.session.client("cloudwatch").put_metric_alarm(
        AlarmName=name, Namespace="AWS/EC2", MetricName="CPUUtilization", Statistic="Average", Period=60,
        EvaluationPeriods=2, Threshold=70, ComparisonOperator="GreaterThanThreshold", AlarmActions=[arn],
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": group}])


def with_step_policy_and_alarm(fleet):
    """A step policy on the live group and the operator's alarm acting on it (W1); and on the idle group the
    operator's own policy and alarm, which nothing may touch."""
    fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-blue", PolicyName="out", **STEP)
    put_alarm(fleet, "cpu-high", "demo-blue", policy_arn(fleet, "blue"))
    fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-green", PolicyName="mine", **STEP)
    put_alarm(fleet, "green-own", "demo-green", policy_arn(fleet, "green", "mine"))
    return fleet


def policy_arn(fleet, color, name=None):
    """The ARN of the step policy on `color`: the operator's `out` on blue, else the tool's copy of it."""
    group = fleet.svc["groups"][color]
    name = name or ("out" if color == "blue" else f"out--bluegreen-{group}")
    policies = fleet.asg.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
    return next((p["PolicyARN"] for p in policies if p["PolicyName"] == name), None)


def alarm_actions(fleet):
    return {a["AlarmName"]: (a["AlarmActions"], a["Dimensions"][0]["Value"])
            for a in fleet.session.client("cloudwatch").describe_alarms()["MetricAlarms"]}


def assert_autoscaling_of(fleet, live):
    """The alarms act on the live group only: the tool's copy on green when green is live, the operator's on blue
    (with its action only while blue's policy exists, W1); the operator's own on green is untouched; and no copy
    of the tool's is left anywhere else."""
    expected = {"cpu-high": ([policy_arn(fleet, "blue")] if policy_arn(fleet, "blue") else [], "demo-blue"),
                "green-own": ([policy_arn(fleet, "green", "mine")], "demo-green")}
    if live == "green":
        expected["cpu-high--bluegreen-demo-green"] = ([policy_arn(fleet, "green")], "demo-green")
    assert alarm_actions(fleet) == expected
    assert policy_names(fleet, "green") == ({"mine", "out--bluegreen-demo-green"} if live == "green" else {"mine"})


ALARM_POINTS = [(("deploy", "demo", "2.0"), "copy-policies", ()), (("deploy", "demo", "2.0"), "copy-alarms", ()),
                (("deploy", "demo", "2.0"), "suspend", ()),
                (("rollback", "demo"), "remove-copied-alarms", ("deploy", "demo", "2.0")),
                (("rollback", "demo"), "remove-copied-policies", ("deploy", "demo", "2.0")),
                (("rollback", "demo"), "unlock", ("deploy", "demo", "2.0")),
                (("finalize", "demo"), "delete-old-policies", ("deploy", "demo", "2.0"))]


@pytest.mark.parametrize(("args", "point", "before"), ALARM_POINTS, ids=[f"{a[0]}-{p}" for a, p, _ in ALARM_POINTS])
def test_killed_at_an_alarm_step_then_rerun_leaves_the_alarm_acting_on_the_live_group(make_harness, args, point,
                                                                                       before):
    fleet = with_step_policy_and_alarm(make_harness(capacity=3))
    if before:
        ok(fleet, *before)
    crash(fleet, args, point)
    assert ok(fleet, *args) >= 3
    assert_autoscaling_of(fleet, "blue" if args[0] == "rollback" else "green")


@pytest.mark.parametrize("point", ["copy-policies", "copy-alarms", "suspend", "wait-deregistered"])
def test_killed_at_an_alarm_copy_step_then_rolled_back_leaves_no_copy(make_harness, point):
    fleet = with_step_policy_and_alarm(make_harness(capacity=3))
    crash(fleet, ("deploy", "demo", "2.0"), point)
    assert ok(fleet, "rollback", "demo") >= 3
    fleet.assert_serving_only("blue", 3, "1.0")
    assert_autoscaling_of(fleet, "blue")


def test_the_copies_are_recorded_before_they_are_made(make_harness):
    from tests.deployer.test_deployer_lock import lock_doc

    fleet = with_step_policy_and_alarm(make_harness(capacity=3))
    crash(fleet, ("deploy", "demo", "2.0"), "suspend")
    assert lock_doc(fleet)["operation"]["created"] == [["alarm", "", "cpu-high--bluegreen-demo-green"],
                                                       ["policy", "demo-green", "out--bluegreen-demo-green"]]
    crash(fleet, ("rollback", "demo"), "remove-copied-alarms")
    assert len(lock_doc(fleet)["operation"]["created"]) == 2  # the rollback that took over keeps the list
    # An operator (or an IaC apply) deleted the copied policy meanwhile: the copy's alarm is no longer listed by
    # any policy, and the record alone still finds it.
    fleet.asg.delete_policy(AutoScalingGroupName="demo-green", PolicyName="out--bluegreen-demo-green")
    assert ok(fleet, "rollback", "demo") >= 3
    assert_autoscaling_of(fleet, "blue")


def test_a_second_flip_killed_at_delete_old_alarms_then_rerun(make_harness):
    fleet = with_step_policy_and_alarm(make_harness(capacity=3))
    ok(fleet, "deploy", "demo", "2.0")
    ok(fleet, "finalize", "demo")
    ok(fleet, "deploy", "demo", "3.0")
    assert "cpu-high--bluegreen-demo-blue" in alarm_actions(fleet)
    crash(fleet, ("finalize", "demo"), "delete-old-alarms")
    assert ok(fleet, "finalize", "demo") >= 3
    # Green was live, so its policies moved to blue, the operator's "mine" too: finalize completes the move (the
    # operator's alarms are kept, their action stripped by DeletePolicy, W1), and only the tool's copies for green
    # were deleted.
    arn = {name: policy_arn(fleet, "blue", f"{name}--bluegreen-demo-blue") for name in ("out", "mine")}
    assert alarm_actions(fleet) == {"cpu-high": ([], "demo-blue"), "green-own": ([], "demo-green"),
                                    "cpu-high--bluegreen-demo-blue": ([arn["out"]], "demo-blue"),
                                    "green-own--bluegreen-demo-blue": ([arn["mine"]], "demo-blue")}
    assert policy_names(fleet, "green") == set()
    assert policy_names(fleet, "blue") == {"out--bluegreen-demo-blue", "mine--bluegreen-demo-blue"}


def test_a_deploy_an_older_version_started_is_rolled_back_with_its_same_name_copies(make_harness):
    """Migration: versions before the policy marker copied policies under the same name. Their stored operation
    lacks `copies: marked`, so the rollback removes the new group's policies named like the live group's too."""
    import json

    from tests.deployer.test_deployer_lock import BUCKET, LOCK, STATE, lock_doc

    fleet = with_step_policy_and_alarm(make_harness(capacity=3))
    ok(fleet, "deploy", "demo", "2.0")
    # What an older version left: the copy of "out" under its own name, the alarm copy acting on it.
    fleet.asg.delete_policy(AutoScalingGroupName="demo-green", PolicyName="out--bluegreen-demo-green")
    fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-green", PolicyName="out", **STEP)
    put_alarm(fleet, "cpu-high--bluegreen-demo-green", "demo-green", policy_arn(fleet, "green", "out"))
    doc = lock_doc(fleet)
    for key in ("copies", "created"):
        del doc["operation"][key]
    fleet.session.client("s3").put_object(Bucket=BUCKET, Key=STATE + LOCK, Body=json.dumps(doc).encode())
    assert ok(fleet, "rollback", "demo") >= 3
    assert_autoscaling_of(fleet, "blue")  # the older copy and its alarm gone; the operator's "mine" kept
