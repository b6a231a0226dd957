"""The pure planners: given describe results, the steps and AWS calls, with no AWS at all."""

from datetime import timedelta

import pytest

from deployer import health, plan
from deployer.errors import ConflictError, UsageError
from deployer.model import Record, check_version, pair_from_describe
from deployer.policies import policy_copies
from tests.deployer.deployer_fixtures import NOW, TG, calls_of, ctx, group_record, ids, names, record_tag, snapshot

# -- deploy ----------------------------------------------------------------------------------------


def test_fresh_deploy_plans_every_phase_with_standby_in_batches_of_20():
    snap = snapshot(group_record("blue", (45, 45, 90), ids("b", 45)), group_record("green", (0, 0, 0)),
                    policies={"blue": [], "green": []}, scheduled={"blue": [], "green": []})
    steps = plan.plan_deploy(snap, ctx(), "2.0")
    assert names(steps) == ["lock", "set-version", "size-new", "wait-new-healthy", "suspend",
                            "lower-min", "enter-standby", "enter-standby", "enter-standby", "wait-deregistered",
                            "wait-workers-stopped"]
    # Finding 21: phase flip is written by the first EnterStandby batch, right after its call, not before.
    first = steps[names(steps).index("enter-standby")]
    assert [c.op for c in first.calls] == ["EnterStandby", "CreateOrUpdateTags"]
    assert first.calls[1].record.phase == "flip"
    assert all(len(s.calls) == 1 for s in steps if s.name == "enter-standby" and s is not first)
    standby = calls_of(steps, "EnterStandby")
    assert [len(c.params["InstanceIds"]) for c in standby] == [20, 20, 5]
    assert all(c.params["ShouldDecrementDesiredCapacity"] for c in standby)
    lock_tags = {(t["ResourceId"], t["Key"]): t["Value"] for t in steps[0].calls[0].params["Tags"]}
    assert lock_tags[("demo-blue", "bluegreen:saved-sizes")] == "45/45/90"
    assert lock_tags[("demo-blue", "bluegreen:saved-suspended")] == "none"
    assert lock_tags[("demo-green", "bluegreen:operation")].startswith("action=deploy;phase=launch;version=2.0")
    size = calls_of(steps, "UpdateAutoScalingGroup")[0].params
    assert (size["AutoScalingGroupName"], size["MinSize"], size["DesiredCapacity"], size["MaxSize"]) == (
        "demo-green", 45, 45, 90)
    # A1: MinSize is lowered before the first EnterStandby with decrement.
    assert names(steps).index("lower-min") < names(steps).index("enter-standby")


def test_resumed_deploy_skips_what_is_done_and_batches_only_the_instances_still_in_service():
    blue = group_record("blue", (0, 25, 50), ids("b", 25) + ids("s", 20, "Standby"),
                        tags={**record_tag("deploy", "flip", holder="ci@builder:100"),
                              "bluegreen:saved-sizes": "45/45/90", "bluegreen:saved-suspended": "none"},
                        suspended=("AZRebalance", "AlarmNotification", "InstanceRefresh", "ScheduledActions"))
    green = group_record("green", (45, 45, 90), ids("g", 45), tags={"bluegreen:version": "2.0"})
    snap = snapshot(blue, green)
    steps = plan.plan_deploy(snap, ctx(), "2.0")
    # A resumed flip confirms the new fleet again before more old instances leave the load balancer.
    assert names(steps) == ["recheck-new-healthy", "enter-standby", "enter-standby", "wait-deregistered",
                            "wait-workers-stopped"]
    assert steps[0].gate and steps[0].verdict is health.GATE and steps[0].color == "green"
    assert [len(c.params["InstanceIds"]) for c in calls_of(steps, "EnterStandby")] == [20, 5]


def test_resumed_flip_grows_the_new_group_when_the_old_one_scaled_out_during_the_launch():
    # blue had 3, scaled out to 5 before its AlarmNotification was suspended; green was launched with 3.
    blue = group_record("blue", (3, 5, 6), ids("b", 5),
                        tags={**record_tag("deploy", "flip", holder="ci@builder:100"),
                              "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"},
                        suspended=("AZRebalance", "AlarmNotification", "InstanceRefresh", "ScheduledActions"))
    green = group_record("green", (3, 3, 6), ids("g", 3), tags={"bluegreen:version": "2.0"})
    steps = plan.plan_deploy(snapshot(blue, green), ctx(), "2.0")
    assert names(steps)[:3] == ["grow-new", "recheck-new-healthy", "lower-min"]
    grow = calls_of(steps, "UpdateAutoScalingGroup")[0].params
    assert (grow["AutoScalingGroupName"], grow["DesiredCapacity"], grow["MaxSize"]) == ("demo-green", 5, 6)


def test_rollback_restores_the_live_capacity_when_the_new_group_grew_after_the_flip():
    blue = group_record("blue", (0, 0, 6), ids("b", 3, "Standby"),
                        tags={**record_tag("deploy", "flipped", holder="ci@builder:100"),
                              "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"})
    green = group_record("green", (3, 5, 6), ids("g", 5), tags={"bluegreen:version": "2.0"})
    steps = plan.plan_rollback(snapshot(blue, green, {"blue": [], "green": []}, {"blue": [], "green": []}), ctx())
    restore = calls_of(steps, "UpdateAutoScalingGroup")[0].params
    assert (restore["MinSize"], restore["DesiredCapacity"], restore["MaxSize"]) == (3, 5, 6)
    assert names(steps).index("restore-sizes") < names(steps).index("wait-restored") < names(steps).index(
        "retire-new")


def test_deploy_that_has_flipped_has_nothing_left_to_do():
    blue = group_record("blue", (0, 0, 90), ids("b", 3, "Standby"),
                        tags=record_tag("deploy", "flipped", holder="ci@builder:100"))
    assert plan.plan_deploy(snapshot(blue, group_record("green", (3, 3, 6), ids("g", 3))), ctx(), "2.0") == []


def test_deploy_of_another_version_while_one_is_recorded_is_a_conflict_naming_holder_and_time():
    blue = group_record("blue", (3, 3, 6), ids("b", 3), tags=record_tag("deploy", "launch", version="2.0",
                                                                        holder="alice@ci-7:4242"))
    with pytest.raises(ConflictError) as err:
        plan.plan_deploy(snapshot(blue, group_record("green", (3, 3, 6))), ctx(), "3.0")
    assert "alice@ci-7:4242" in str(err.value) and "2026-11-26T11:00:00Z" in str(err.value)
    assert err.value.exit_code == 3


def test_rerun_while_the_holder_still_runs_is_a_conflict_unless_forced():
    holder = "alice@ci-7:4242"
    blue = group_record("blue", (3, 3, 6), ids("b", 3), tags=record_tag("deploy", "launch", holder=holder))
    snap = snapshot(blue, group_record("green", (3, 3, 6)))
    with pytest.raises(ConflictError, match="running now"):
        plan.plan_deploy(snap, ctx(alive={holder}), "2.0")
    steps = plan.plan_deploy(snap, ctx(alive={holder}, force=True), "2.0")
    assert steps[0].name == "lock" and "take over" in steps[0].summary


def test_deploy_cannot_guess_the_live_color():
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (2, 2, 6), ids("g", 2)))
    with pytest.raises(ConflictError, match="cannot tell which color"):
        plan.plan_deploy(snap, ctx(), "2.0")


def test_deploy_after_a_canary_of_the_same_version_keeps_the_canary_instances():
    tags = record_tag("canary", "serving", holder="ci@builder:1")
    blue = group_record("blue", (3, 3, 6), ids("b", 3), tags=tags)
    green = group_record("green", (1, 1, 1), ids("g", 1), tags={"bluegreen:version": "2.0", **tags})
    steps = plan.plan_deploy(snapshot(blue, green), ctx(), "2.0")
    assert names(steps)[:3] == ["lock", "size-new", "wait-new-healthy"]
    assert "set-version" not in names(steps)
    size = calls_of(steps, "UpdateAutoScalingGroup")[0].params
    assert size["DesiredCapacity"] == 3  # grows from the canary's 1: nothing is replaced


# -- policies (A7) ---------------------------------------------------------------------------------


def test_policy_copies_skip_identical_copies_spent_and_expired_actions_and_update_changed_ones():
    blue, green = group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (3, 3, 6))
    same = {"PolicyName": "same", "PolicyType": "SimpleScaling", "ScalingAdjustment": 2}
    mine = {"PolicyName": "mine", "PolicyType": "SimpleScaling", "ScalingAdjustment": 7}
    policies = {"blue": [{"PolicyName": "cpu", "PolicyType": "TargetTrackingScaling", "AutoScalingGroupName": "x",
                          "TargetTrackingConfiguration": {"TargetValue": 50.0}},
                         {"PolicyName": "old", "PolicyType": "SimpleScaling", "ScalingAdjustment": 1},
                         dict(same, AutoScalingGroupName="demo-blue"), dict(mine, ScalingAdjustment=1)],
                "green": [{"PolicyName": "old--bluegreen-demo-green", "PolicyType": "SimpleScaling",
                           "ScalingAdjustment": 3},
                          dict(same, PolicyName="same--bluegreen-demo-green", AutoScalingGroupName="demo-green"),
                          mine]}
    scheduled = {"blue": [{"ScheduledActionName": "nightly", "Recurrence": "0 2 * * *", "MinSize": 1,
                           "StartTime": NOW - timedelta(days=3)},
                          {"ScheduledActionName": "spent", "DesiredCapacity": 4, "StartTime": NOW - timedelta(days=1)},
                          {"ScheduledActionName": "ended", "Recurrence": "0 3 * * *", "MinSize": 2,
                           "EndTime": NOW - timedelta(hours=1)},
                          {"ScheduledActionName": "later", "DesiredCapacity": 5, "StartTime": NOW + timedelta(days=1)},
                          {"ScheduledActionName": "kept", "Recurrence": "0 4 * * *", "MinSize": 1},
                          {"ScheduledActionName": "morning", "Recurrence": "0 6 * * *", "MinSize": 9}],
                 "green": [{"ScheduledActionName": "kept--bluegreen-demo-green", "Recurrence": "0 4 * * *",
                            "MinSize": 1},
                           {"ScheduledActionName": "morning", "Recurrence": "0 7 * * *", "MinSize": 2}]}
    calls = policy_copies(snapshot(blue, green, policies, scheduled), "blue", "green", NOW)
    puts = [(c.op, c.params.get("PolicyName") or c.params.get("ScheduledActionName")) for c in calls]
    # The tool's copy "old" differs on green (finding 24: a changed policy must reach the copy); "same" and "kept"
    # are identical already; "ended" is past its EndTime, which AWS would refuse. "mine" and "morning": the
    # operator's own on green under the original's name, never overwritten and not doubled by a copy.
    assert puts == [("PutScalingPolicy", "cpu--bluegreen-demo-green"), ("PutScalingPolicy", "old--bluegreen-demo-green"),
                    ("PutScheduledUpdateGroupAction", "nightly--bluegreen-demo-green"),
                    ("PutScheduledUpdateGroupAction", "later--bluegreen-demo-green")]
    assert calls[1].params["ScalingAdjustment"] == 1
    assert calls[0].params["AutoScalingGroupName"] == "demo-green" and "TargetTrackingConfiguration" in calls[0].params
    assert "StartTime" not in calls[2].params  # AWS refuses a StartTime in the past
    assert calls[3].params["StartTime"] == NOW + timedelta(days=1)
    # A later flip copies copies (named for blue by an earlier one), named from the original: never a copy of a copy.
    earlier = [dict(p, PolicyName=p["PolicyName"].split("--")[0] + "--bluegreen-demo-blue") for p in policies["blue"]]
    back = policy_copies(snapshot(blue, group_record("green", (0, 0, 0)), {"blue": earlier, "green": []},
                                  {"blue": [], "green": []}), "blue", "green", NOW)
    assert [c.params["PolicyName"] for c in back] == ["cpu--bluegreen-demo-green", "old--bluegreen-demo-green",
                                                      "same--bluegreen-demo-green", "mine--bluegreen-demo-green"]


# -- rollback --------------------------------------------------------------------------------------


def flipped_pair(n=45, rec=None, green_policies=("cpu",)):
    tags = rec or record_tag("deploy", "flipped")
    blue = group_record("blue", (0, 0, 2 * n), ids("b", n, "Standby"),
                        tags={**tags, "bluegreen:saved-sizes": f"{n}/{n}/{2 * n}",
                              "bluegreen:saved-suspended": "AZRebalance"},
                        suspended=("AZRebalance", "AlarmNotification", "InstanceRefresh", "ScheduledActions"))
    green = group_record("green", (n, n, 2 * n), ids("g", n), tags={"bluegreen:version": "2.0", **tags})
    policies = {"blue": [{"PolicyName": "cpu"}], "green": [{"PolicyName": p} for p in green_policies]}
    return blue, green, policies


def test_rollback_after_flip_returns_the_old_fleet_before_touching_the_new_one():
    # green: the tool's copy of blue's "cpu", the operator's own "own", and the operator's own "cpu" (same name)
    blue, green, policies = flipped_pair(green_policies=("cpu--bluegreen-demo-green", "own", "cpu"))
    snap = snapshot(blue, green, policies, {"blue": [], "green": []})
    steps = plan.plan_rollback(snap, ctx())
    # Stage one (restored): the old fleet back, then the new one out of the load balancers.
    assert names(steps) == ["lock", "exit-standby", "exit-standby", "exit-standby", "restore-sizes",
                            "wait-restored", "retire-new", "wait-new-out"]
    assert steps[-1].then.record.phase == "restored"
    # Stage two (settled), planned once the record says restored and the new group is empty: the processes are
    # resumed only once the old fleet serves again (A8: no alarm launches into Standby).
    tags = {t["Key"]: t["Value"] for t in blue["Tags"]}
    tags["bluegreen:operation"] = tags["bluegreen:operation"].replace("action=deploy;phase=flipped",
                                                                      "action=rollback;phase=restored")
    back = group_record("blue", (45, 45, 90), ids("b", 45), tags=tags,
                        suspended=("AZRebalance", "AlarmNotification", "InstanceRefresh", "ScheduledActions"))
    settle = plan.plan_rollback(snapshot(back, group_record("green", (0, 0, 0), tags={
        "bluegreen:operation": tags["bluegreen:operation"]}), policies, {"blue": [], "green": []}), ctx())
    assert names(settle)[-4:] == ["resume", "remove-copied-policies", "wait-workers-running", "unlock"]
    steps = steps + settle
    # only the processes the deploy suspended: AZRebalance was suspended before it
    assert calls_of(steps, "ResumeProcesses")[0].params["ScalingProcesses"] == ["AlarmNotification",
                                                                               "ScheduledActions",
                                                                               "InstanceRefresh"]
    assert [len(c.params["InstanceIds"]) for c in calls_of(steps, "ExitStandby")] == [20, 20, 5]
    assert [c.params["PolicyName"] for c in calls_of(steps, "DeletePolicy")] == ["cpu--bluegreen-demo-green"]
    assert names(steps).index("wait-restored") < names(steps).index("retire-new") < names(steps).index("resume")
    restore = calls_of(steps, "UpdateAutoScalingGroup")[0].params
    assert (restore["AutoScalingGroupName"], restore["MinSize"], restore["MaxSize"]) == ("demo-blue", 45, 90)


def test_rollback_with_nothing_recorded_is_a_conflict():
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (0, 0, 0)))
    with pytest.raises(ConflictError, match="nothing to roll back"):
        plan.plan_rollback(snap, ctx())


def test_rollback_refuses_once_finalize_detaches():
    blue, green, _ = flipped_pair(3, rec=record_tag("finalize", "detach"))
    with pytest.raises(ConflictError, match="bluegreen finalize demo"):
        plan.plan_rollback(snapshot(blue, green), ctx())


def _draining_pair(phase="flip", entering=2):
    tags = {**record_tag("deploy", phase), "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"}
    blue = group_record("blue", (0, 3 - entering, 6), ids("b", entering, "EnteringStandby") + ids("c", 3 - entering),
                        tags=tags)
    green = group_record("green", (3, 3, 6), ids("g", 3), tags=tags)
    return blue, green


def _restored_pair(entering):
    """A rollback in phase restored: the new group emptied, the old instances still EnteringStandby."""
    blue, green = _draining_pair(phase="restored", entering=entering)
    rec = record_tag("rollback", "restored")
    for g in (blue, green):
        g["Tags"] = [t for t in g["Tags"] if t["Key"] != "bluegreen:operation"] + [
            {"Key": "bluegreen:operation", "Value": rec["bluegreen:operation"]}]
    green["DesiredCapacity"], green["MinSize"], green["MaxSize"], green["Instances"] = 0, 0, 0, []
    return blue, green


def test_rollback_registers_instances_still_draining_instead_of_waiting_for_the_drain():
    blue, green = _draining_pair()
    steps = plan.plan_rollback(snapshot(blue, green), ctx())
    assert names(steps) == ["lock"] and steps[0].needs == ("policies",)  # A8: the scheduled actions first
    read = {"blue": [], "green": []}
    steps = plan.plan_rollback(snapshot(blue, green, read, read), ctx())
    # E8: the target health is read before registering (a placeholder asks for it); nothing waits for the drain.
    assert names(steps)[:2] == ["lock", "register-draining"] and steps[1].needs == ("health",)
    assert not steps[1].calls and "wait-standby-settled" not in names(steps)
    health = {"i-b00000": {f"tg:{TG}": "draining"}, "i-b00001": {f"tg:{TG}": "initial"},
              "i-c00000": {f"tg:{TG}": "healthy"}}
    steps = plan.plan_rollback(snapshot(blue, green, read, read, health=health), ctx())
    assert names(steps)[:3] == ["lock", "register-draining", "wait-restored"]
    # Only the one out of the target group: i-b00001 was registered again already (a rerun).
    assert [c.as_json() for c in steps[1].calls] == [
        {"op": "RegisterTargets", "params": {"TargetGroupArn": TG, "Targets": [{"Id": "i-b00000"}]}}]
    # Sizes are not restored while instances still enter Standby: the group would launch in their place (A1, A5).
    assert "restore-sizes" not in names(steps) and "exit-standby" not in names(steps)
    assert steps[2].then is not None  # the first pass records `retire`


def test_rollback_registers_draining_instances_with_classic_load_balancers_too():
    blue, green = _draining_pair(entering=3)
    for g in (blue, green):
        g["LoadBalancerNames"] = ["web"]
    read = {"blue": [], "green": []}
    health = {f"i-b{k:05d}": {f"tg:{TG}": "draining", "elb:web": "draining"} for k in range(3)}
    steps = plan.plan_rollback(snapshot(blue, green, read, read, health=health), ctx())
    ops = [c.op for s in steps if s.name == "register-draining" for c in s.calls]
    assert ops == ["RegisterTargets", "RegisterInstancesWithLoadBalancer"]


def test_rollback_after_the_fast_restore_settles_once_the_drain_is_over():
    # Phase restored: the old instances serve (registered directly) while still EnteringStandby.
    blue, green = _restored_pair(entering=2)
    read = {"blue": [], "green": []}
    health = {f"i-b{k:05d}": {f"tg:{TG}": "healthy"} for k in range(2)}
    steps = plan.plan_rollback(snapshot(blue, green, read, read, health=health), ctx(me="ci@builder:99"))
    # Nothing to register again, no wait on what already serves, no phase moved back: wait for Standby.
    assert names(steps) == ["wait-standby-settled"]
    # Once they are in Standby: ExitStandby, sizes restored, then the rest of the settled stage.
    blue["Instances"] = [dict(i, LifecycleState="Standby") if i["LifecycleState"] == "EnteringStandby" else i
                         for i in blue["Instances"]]
    steps = plan.plan_rollback(snapshot(blue, green, read, read, health=health), ctx(me="ci@builder:99"))
    assert names(steps)[:3] == ["exit-standby", "restore-sizes", "wait-restored"]
    assert steps[2].then is None


# -- finalize --------------------------------------------------------------------------------------


def test_finalize_detaches_in_batches_without_decrement_then_terminates_only_detached_instances():
    blue, green, policies = flipped_pair(45)
    snap = snapshot(blue, green, policies, {"blue": [{"ScheduledActionName": "nightly"}], "green": []})
    steps = plan.plan_finalize(snap, ctx())
    # Finding 23: the old group's sizes ask for nothing (0/0/0) before the first DetachInstances; the terminate
    # is planned once the detached instances are read (X1: by id, and a tag search repeated until it finds them).
    assert names(steps) == ["lock", "wait-drained", "empty-old", "detach", "detach", "detach", "terminate",
                            "mark-cleanup", "delete-old-policies", "resume", "unlock"]
    assert calls_of(steps, "UpdateAutoScalingGroup")[0].params["MaxSize"] == 0
    assert steps[names(steps).index("terminate")].needs == ("retired",)
    detach = calls_of(steps, "DetachInstances")
    assert [len(c.params["InstanceIds"]) for c in detach] == [20, 20, 5]
    assert not any(c.params["ShouldDecrementDesiredCapacity"] for c in detach)  # A3, footnote 2
    # every detach batch is tagged first, so a crash between detach and terminate still finds it
    for step in steps:
        if step.name == "detach":
            assert [c.op for c in step.calls] == ["CreateTags", "DetachInstances"]
    detached = {i for c in detach for i in c.params["InstanceIds"]}
    blue = group_record("blue", (0, 0, 0), (), tags={t["Key"]: t["Value"] for t in blue["Tags"]},
                        suspended=("AZRebalance", "AlarmNotification", "ScheduledActions"))
    blue["Tags"] = [dict(t, Value=t["Value"].replace("deploy;phase=flipped", "finalize;phase=detach"))
                    if t["Key"] == "bluegreen:operation" else t for t in blue["Tags"]]
    steps += plan.plan_finalize(snapshot(blue, green, policies, {"blue": [{"ScheduledActionName": "nightly"}],
                                                                  "green": []}, retired=sorted(detached)), ctx())
    terminated = [i for c in calls_of(steps, "TerminateInstances") for i in c.params["InstanceIds"]]
    assert set(terminated) == detached  # A4: never one that was not detached first
    assert names(steps).index("terminate") > max(i for i, n in enumerate(names(steps)) if n == "detach")
    assert [(c.params["AutoScalingGroupName"], c.params["ScheduledActionName"])
            for c in calls_of(steps, "DeleteScheduledAction")] == [("demo-blue", "nightly")] * 2
    assert [(c.params["AutoScalingGroupName"], c.params["PolicyName"]) for c in calls_of(steps, "DeletePolicy")] == [
        ("demo-blue", "cpu")] * 2


def test_finalize_resumed_after_a_crash_between_detach_and_terminate():
    blue, green, policies = flipped_pair(3, rec=record_tag("finalize", "detach", holder="ci@builder:100"))
    blue["Instances"] = blue["Instances"][2:]  # two were detached, then the process died
    retired = ["i-b00000", "i-b00001", "i-b00002"]  # i-b00002 was tagged but not yet detached
    snap = snapshot(blue, green, policies, {"blue": [], "green": []}, retired=retired)
    steps = plan.plan_finalize(snap, ctx())
    assert names(steps)[:3] == ["empty-old", "detach", "terminate"]
    assert calls_of(steps, "TerminateInstances")[0].params["InstanceIds"] == ["i-b00000", "i-b00001"]


def test_finalize_fits_only_after_a_flip():
    blue = group_record("blue", (3, 3, 6), ids("b", 3), tags=record_tag("deploy", "launch"))
    with pytest.raises(ConflictError, match="only after a deploy has flipped"):
        plan.plan_finalize(snapshot(blue, group_record("green", (3, 3, 6), ids("g", 3))), ctx())
    done = snapshot(group_record("blue", (0, 0, 0)), group_record("green", (3, 3, 6), ids("g", 3)))
    assert plan.plan_finalize(done, ctx()) == []


# -- canary ----------------------------------------------------------------------------------------


def test_canary_sizes_the_idle_group_and_a_second_count_relaunches_the_wait():
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (0, 0, 0)))
    steps = plan.plan_canary(snap, ctx(), "2.0", 2)
    assert names(steps) == ["lock", "set-version", "size-canary", "wait-canary-healthy"]
    tags = record_tag("canary", "serving", holder="ci@builder:100")
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3), tags=tags),
                    group_record("green", (2, 2, 2), ids("g", 2), tags={"bluegreen:version": "2.0", **tags}))
    assert plan.plan_canary(snap, ctx(), "2.0", 2) == []
    steps = plan.plan_canary(snap, ctx(), "2.0", 3)
    assert names(steps) == ["size-canary", "wait-canary-healthy"]
    assert steps[0].calls[0].op == "CreateOrUpdateTags"  # back to phase launch first, so a crash re-waits


def test_abort_returns_the_new_group_to_zero_and_clears_the_lock():
    tags = {**record_tag("deploy", "launch"), "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"}
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3), tags=tags),
                    group_record("green", (3, 3, 6), ids("g", 3), tags=tags))
    assert names(plan.plan_abort(snap, ctx())) == ["abort-new", "wait-new-out", "wait-new-empty", "unlock"]
    steps = plan.plan_abort(snap, ctx(), wait="restored")
    assert names(steps) == ["abort-new", "wait-new-out"]
    # restored: recorded as a rollback in phase restored (what `--wait restored` leaves for a rerun to settle)
    assert (steps[1].then.record.action, steps[1].then.record.phase) == ("rollback", "restored")
    tags["bluegreen:operation"] = tags["bluegreen:operation"].replace("deploy;phase=launch", "rollback;phase=restored")
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3), tags=tags), group_record("green", (0, 0, 0), tags=tags))
    steps = plan.plan_abort(snap, ctx())
    assert names(steps) == ["unlock"]
    deleted = {(t["ResourceId"], t["Key"]) for t in steps[0].calls[0].params["Tags"]}
    assert deleted == {("demo-blue", "bluegreen:operation"), ("demo-green", "bluegreen:operation"),
                       ("demo-blue", "bluegreen:saved-sizes"), ("demo-blue", "bluegreen:saved-suspended")}


# -- model -----------------------------------------------------------------------------------------


def test_pairs_must_be_exactly_one_blue_and_one_green():
    with pytest.raises(UsageError, match="no Auto Scaling group is tagged bluegreen:service=demo"):
        pair_from_describe("demo", [])
    with pytest.raises(UsageError, match="no group tagged bluegreen:color=green"):
        pair_from_describe("demo", [group_record("blue", (1, 1, 1))])
    with pytest.raises(UsageError, match="2 groups tagged bluegreen:color=blue"):
        pair_from_describe("demo", [group_record("blue", (1, 1, 1)), group_record("blue", (1, 1, 1), name="x"),
                                    group_record("green", (0, 0, 0))])
    with pytest.raises(UsageError, match="expected blue or green"):
        pair_from_describe("demo", [group_record("red", (1, 1, 1))])


def test_record_round_trips_and_a_record_too_long_for_a_tag_is_refused_not_cut():
    rec = Record("deploy", "flip", "v" * 128, "blue", "2026-11-26T11:00:00Z", "u" * 40 + "@" + "h" * 60 + ":1")
    # A12: a cut record would lose its holder's pid, and the lock would no longer know its own holder.
    with pytest.raises(UsageError, match="a tag value holds 256"):
        rec.encode()
    short = Record("deploy", "flip", "2.0", "blue", "2026-11-26T11:00:00Z", "ci@builder:7")
    assert Record.decode(short.encode()) == short


@pytest.mark.parametrize("bad", ["", "has space", "-leading", "a" * 129, "x/y"])
def test_versions_must_be_docker_tags(bad):
    with pytest.raises(UsageError):
        check_version(bad)


def test_a_deploy_first_waits_for_instances_still_terminating_in_the_idle_group():
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)),
                    group_record("green", (0, 0, 0), ids("t", 2, "Terminating:Wait")))
    steps = plan.plan_deploy(snap, ctx(), "2.0")
    assert names(steps)[:3] == ["lock", "wait-idle-scaled-in", "set-version"]
    assert steps[1].verdict is health.SCALED_IN and steps[1].then is None  # replanned once they are gone


def test_finalize_waits_for_detaching_instances_before_it_terminates_and_records_cleanup():
    # A3: right after DetachInstances an instance may still be listed, Detaching; terminating only what has
    # left, then recording cleanup, would leave it running with nothing looking for it again.
    blue = group_record("blue", (0, 0, 6), [("i-a", "Detaching"), ("i-b", "Standby")],
                        tags={**record_tag("finalize", "detach", holder="ci@builder:100"),
                              "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"})
    green = group_record("green", (3, 3, 6), ids("g", 3), tags={"bluegreen:version": "2.0"})
    steps = plan.plan_finalize(snapshot(blue, green, retired=["i-a"]), ctx())
    assert names(steps) == ["empty-old", "detach", "wait-detached"]
    assert "TerminateInstances" not in {c.op for s in steps for c in s.calls}
    blue["Instances"] = [{"InstanceId": "i-b", "LifecycleState": "Standby", "HealthStatus": "Healthy"}]
    steps = plan.plan_finalize(snapshot(blue, green, retired=["i-a"]), ctx())
    assert [c.params["InstanceIds"] for c in calls_of(steps, "TerminateInstances")] == [["i-a"]]


# -- what the idle group launches: version, digest and bundle in one call (issue 11; audit F8, F9) ----------
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
B1, B2 = "s3://b/web/" + "a" * 64 + "/", "s3://b/web/" + "c" * 64 + "/"


def _tags_of(step):
    (call,) = [c for c in step.calls if c.op == "CreateOrUpdateTags"]
    return {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in call.params["Tags"]}


def test_a_fresh_deploy_sets_the_resolved_digest_and_bundle_in_one_call_and_records_them():
    snap = snapshot(group_record("blue", (2, 2, 4), ids("b", 2)),
                    group_record("green", (0, 0, 0), tags={"bluegreen:bootstrap": "s3://b/web/"}))
    steps = plan.plan_deploy(snap, ctx(), "2.0", launch=plan.Launch(digest=D1, bootstrap=B1))
    step = steps[names(steps).index("set-version")]
    assert [c.op for c in step.calls] == ["CreateOrUpdateTags"]
    assert _tags_of(step) == {"bluegreen:version": ("2.0", True), "bluegreen:digest": (D1, False),
                              "bluegreen:bootstrap": (B1, False)}
    record = steps[0].calls[0].record
    assert (record.digest, record.bootstrap) == (D1, B1)
    assert record.as_state()["digest"] == D1 and "digest" not in record.encode()  # the tag has no room (A12)
    # Nothing resolved and nothing given: the bundle tag stays, no digest; recorded as none ("").
    steps = plan.plan_deploy(snap, ctx(), "2.0", launch=plan.Launch())
    assert _tags_of(steps[names(steps).index("set-version")]) == {"bluegreen:version": ("2.0", True),
                                                                 "bluegreen:bootstrap": ("s3://b/web/", False)}
    assert steps[0].calls[0].record.as_state()["digest"] == ""


def test_a_resumed_deploy_sets_what_it_recorded_not_what_is_resolved_now():
    blue = group_record("blue", (2, 2, 4), ids("b", 2), tags={**record_tag("deploy", "launch", holder="ci@builder:100"),
                                                              "bluegreen:saved-sizes": "2/2/4",
                                                              "bluegreen:saved-suspended": "none"})
    green = group_record("green", (0, 0, 0))
    rec = Record("deploy", "launch", "2.0", "blue", "2026-11-26T11:00:00Z", "ci@builder:100", digest=D1, bootstrap=B1)
    assert plan.launch_values(rec, pair_from_describe("demo", [blue, green])["green"], "2.0",
                              plan.Launch(D2, B2)) == (D1, B1)
    assert plan.launch_values(rec.moved(digest=""), pair_from_describe("demo", [blue, green])["green"], "2.0",
                              plan.Launch(D2, B2)) == (None, B1)
    # Without a store the tag record holds neither: the idle group's own tags once they carry the version
    # (written in the one call with it), else what is resolved now (nothing was launched with the old values).
    steps = plan.plan_deploy(snapshot(blue, green), ctx(), "2.0", launch=plan.Launch(D2, B2))
    assert _tags_of(steps[names(steps).index("set-version")])["bluegreen:digest"] == (D2, False)
    tagged = group_record("green", (2, 2, 4), ids("g", 2),
                          tags={"bluegreen:version": "2.0", "bluegreen:digest": D1, "bluegreen:bootstrap": B1})
    steps = plan.plan_deploy(snapshot(blue, tagged), ctx(), "2.0", launch=plan.Launch(D2, B2))
    assert "set-version" not in names(steps)


def test_an_unknown_digest_removes_the_old_one_before_the_version_changes():
    green = group_record("green", (0, 0, 0), tags={"bluegreen:digest": D1})
    steps = plan.plan_canary(snapshot(group_record("blue", (2, 2, 4), ids("b", 2)), green), ctx(), "2.0", 1,
                             launch=plan.Launch())
    step = steps[names(steps).index("set-version")]
    assert [c.op for c in step.calls] == ["DeleteTags", "CreateOrUpdateTags"]
    assert step.calls[0].params["Tags"] == [{"ResourceId": "demo-green", "ResourceType": "auto-scaling-group",
                                             "Key": "bluegreen:digest"}]


def test_after_restored_an_old_instance_out_of_the_load_balancer_again_is_registered_again():
    # Review of issue 13: a later pass (phase restored) sees one draining instance out of the target group again
    # and registers it (only the running one: a terminated one is left to the capacity hold, A4).
    blue, green = _restored_pair(entering=3)
    read = {"blue": [], "green": []}
    health = {"i-b00000": {f"tg:{TG}": "draining"}, "i-b00001": {f"tg:{TG}": "healthy"},
              "i-b00002": {f"tg:{TG}": "unused"}}
    steps = plan.plan_rollback(snapshot(blue, green, read, read, health=health,
                                        aside_states={"i-b00002": "terminated"}), ctx(me="ci@builder:99"))
    assert names(steps)[:3] == ["register-draining", "hold-capacity", "wait-restored"]
    assert [c.params["Targets"] for c in steps[0].calls] == [[{"Id": "i-b00000"}]]
    # 3 live, 2 of them running in Standby: the hold launches the third (desired 0 -> 1).
    assert steps[1].calls[0].params["DesiredCapacity"] == 1
