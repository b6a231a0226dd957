"""deployer/bake.py and the bake's place in the plans: pure planning, no AWS."""

from datetime import timedelta

import pytest

from deployer import bake, plan
from deployer.errors import ConflictError, UsageError
from deployer.health import FAIL, WAIT, ReplacementBudget
from deployer.model import Record, pair_from_describe
from deployer.steps import ROLLBACK, BakeStep
from deployer.store import Stored
from tests.deployer.deployer_fixtures import NOW, TG, ctx, group_record, ids, names, snapshot

KEY = f"tg:{TG}"
SPEC = bake.Bake(300.0, ("errors",), 5.0)


def alarm(name, state="OK", period=60, periods=2, **extra):
    return {"AlarmName": name, "StateValue": state, "Period": period, "EvaluationPeriods": periods, **extra}


def green(n=3, states=None, lifecycle="InService"):
    record = group_record("green", (n, n, n), ids("g", n, lifecycle))
    group = pair_from_describe("demo", [group_record("blue", (0, 0, 0)), record])["green"]
    health = {i.id: {KEY: (states or {}).get(i.id, "healthy")} for i in group.instances}
    return group, health


# -- what it watches, and the refusals ---------------------------------------------------------------------


def test_the_alarms_are_the_union_of_the_flags_and_both_groups_tags():
    groups = pair_from_describe("demo", [group_record("blue", (3, 3, 3), tags={"bluegreen:alarms": "a, b"}),
                                         group_record("green", (0, 0, 0), tags={"bluegreen:alarms": "b,c,"})])
    assert bake.alarm_names(["x", "a"], groups) == ["x", "a", "b", "c"]


@pytest.mark.parametrize("described, error, message", [
    ([], UsageError, "no alarm named errors"),
    ([alarm("errors", "ALARM")], ConflictError, "alarm errors is already in ALARM"),
    ([alarm("errors", period=120, periods=3)], UsageError, "bake at least 420 s"),
])
def test_a_bake_that_cannot_work_is_refused(described, error, message):
    with pytest.raises(error, match=message):
        bake.refuse(300, ["errors"], described)


def test_insufficient_data_is_not_firing_and_a_long_enough_bake_passes():
    bake.refuse(180, ["errors"], [alarm("errors", "INSUFFICIENT_DATA")])  # 60 x 2 + 60


def test_a_metric_math_alarm_counts_its_longest_query_and_a_composite_none():
    math = alarm("m", Period=None, Metrics=[{"Id": "e", "Expression": "a+b", "Period": 300},
                                            {"Id": "a", "MetricStat": {"Period": 60}}])
    assert bake.window_s(math) == 600
    assert bake.window_s({"AlarmName": "c", "AlarmRule": "ALARM(m)"}) is None


# -- the verdict -----------------------------------------------------------------------------------------


def test_an_alarm_in_alarm_fails_the_bake_with_its_name_as_the_reason():
    group, health = green()
    state, detail, reason = bake.verdict(group, health, [alarm("errors", "ALARM", StateReason="5xx")], ["errors"],
                                         ReplacementBudget(count=1))
    assert (state, reason) == (FAIL, "alarm errors")
    assert "alarm errors is in ALARM (5xx)" in detail


def test_unhealthy_instances_within_the_budget_wait_and_beyond_it_fail_naming_them():
    group, health = green(3, {"i-g00000": "unhealthy"})
    state, _, reason = bake.verdict(group, health, [alarm("errors", "INSUFFICIENT_DATA")], ["errors"],
                                    ReplacementBudget(count=1))
    assert (state, reason) == (WAIT, None)
    group, health = green(3, {"i-g00000": "unhealthy", "i-g00001": "initial"})
    state, detail, reason = bake.verdict(group, health, [], [], ReplacementBudget(count=1))
    assert (state, reason) == (FAIL, "unhealthy i-g00000,i-g00001")
    assert "1 of its capacity 3 healthy" in detail and "i-g00000 unhealthy in target group demo-tg" in detail


def test_an_instance_that_left_the_group_is_named_too():
    group, health = green(2)
    state, _, reason = bake.verdict(group, health, [], [], ReplacementBudget(count=0), seen={"i-gone"})
    assert state == WAIT  # 2 of 2 healthy: nothing short
    group = group.__class__(**dict(group.__dict__, desired=3))
    state, _, reason = bake.verdict(group, health, [], [], ReplacementBudget(count=0), seen={"i-gone"})
    assert (state, reason) == (FAIL, "unhealthy i-gone")


def test_a_scale_out_during_the_bake_is_no_failure_but_a_failed_instance_of_the_baked_capacity_is():
    """Review finding: 10 healthy + 4 launching after a scale-out (desired 14) failed the bake with budget 2."""
    group, health = green(14, {f"i-g{n:05d}": "initial" for n in range(10, 14)})
    state, detail, _ = bake.verdict(group, health, [], [], ReplacementBudget(count=2), capacity=10)
    assert state == WAIT and "10/10" in detail
    state, _, _ = bake.verdict(group, health, [], [], ReplacementBudget(count=2))  # held to desired: 4 short
    assert state == FAIL
    failed = dict(health, **{f"i-g{n:05d}": {KEY: "unhealthy"} for n in range(3)})
    state, _, reason = bake.verdict(group, failed, [], [], ReplacementBudget(count=2), capacity=10)
    assert state == FAIL and reason.startswith("unhealthy i-g00000,i-g00001,i-g00002")


def test_a_scale_in_during_the_bake_lowers_what_the_fleet_owes():
    group, health = green(2)
    state, _, _ = bake.verdict(group, health, [], [], ReplacementBudget(count=0), capacity=3)
    assert state == WAIT


def test_status_says_not_watched_after_a_few_poll_intervals():
    spec = {"seconds": 300, "alarms": [], "poll_s": 5.0, "until": "2026-11-26T12:05:00Z",
            "watched": "2026-11-26T12:00:00Z"}
    assert bake.status(spec, "bake", NOW + timedelta(seconds=20))["stale"] is False
    assert bake.status(spec, "bake", NOW + timedelta(seconds=31))["stale"] is True
    never = dict(spec, watched=None)  # killed before its first poll: not watched since the bake started
    assert bake.status(never, "bake", NOW)["watched"] == "2026-11-26T12:00:00Z"


# -- the plans -------------------------------------------------------------------------------------------


def stored(op):
    doc = {"operation": op, "holder": "ci@builder:99", "saved": {"sizes": [3, 3, 6], "suspended": []}, "phases": []}
    return Stored(doc, '"etag"', lease_live=False)


def baking_snapshot(phase, bake_state, action="deploy"):
    rec = Record(action, phase, "2.0", "blue", "2026-11-26T11:00:00Z", "ci@builder:99", bake=bake_state)
    blue = group_record("blue", (0, 0, 6), ids("b", 3, "Standby") if action == "deploy" else ids("b", 3))
    green_ = group_record("green", (3, 3, 6 if action == "deploy" else 3), ids("g", 3), tags={"bluegreen:version": "2.0"})
    snap = snapshot(blue, green_, policies={"blue": [], "green": []}, scheduled={"blue": [], "green": []})
    return snap.__class__(**dict(snap.__dict__, store_url="s3://b/p/", stored=stored(rec.as_state())))


def test_a_deploy_asked_to_bake_records_it_at_the_lock_and_enters_phase_bake_after_the_flip():
    blue, green_ = group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", (0, 0, 0))
    steps = plan.plan_deploy(snapshot(blue, green_), ctx(), "2.0", bake=SPEC)
    assert steps[0].calls[0].record.bake == SPEC.as_state()
    flipping = baking_snapshot("flip", SPEC.as_state())
    wait = next(s for s in plan.plan_deploy(flipping, ctx(me="ci@builder:99"), "2.0")
                if s.name == "wait-workers-stopped")
    assert wait.then.record.phase == "bake"


def test_phase_bake_records_the_deadline_first_then_watches_and_records_baked():
    steps = plan.plan_deploy(baking_snapshot("bake", SPEC.as_state()), ctx(me="ci@builder:99"), "2.0")
    assert names(steps) == ["start-bake", "bake"]
    until = (NOW + timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert steps[0].calls[0].record.bake["until"] == until
    watch = steps[1]
    assert isinstance(watch, BakeStep) and watch.until == until and watch.alarms == ("errors",)
    assert watch.on_failure == ROLLBACK and watch.color == "green"
    assert (watch.then.record.phase, watch.then.event) == ("flipped", "baked")
    assert [c.op for c in watch.polls][-1] == "DescribeAlarms"
    resumed = plan.plan_deploy(baking_snapshot("bake", dict(SPEC.as_state(), until="2026-11-26T12:01:00Z")),
                               ctx(me="ci@builder:99"), "2.0")
    assert names(resumed) == ["bake"] and resumed[0].until == "2026-11-26T12:01:00Z"


def test_a_canary_bakes_once_healthy_and_aborts_on_failure():
    steps = plan.plan_canary(baking_snapshot("bake", SPEC.as_state(), "canary"), ctx(me="ci@builder:99"), "2.0", 3)
    assert names(steps) == ["start-bake", "bake"]
    assert steps[1].on_failure == "abort" and steps[1].then.record.phase == "serving"


def test_finalize_and_rollback_end_a_bake_and_an_automatic_rollback_records_why():
    snap = baking_snapshot("bake", dict(SPEC.as_state(), until="2026-11-26T12:01:00Z"))
    final = plan.plan_finalize(snap, ctx())
    assert final[0].calls[0].record.action == "finalize" and final[0].calls[0].record.bake is None
    back = plan.plan_rollback(snap, ctx(), reason="alarm errors")
    lock = next(s for s in back if s.name == "lock")
    assert lock.calls[0].record.as_state()["reason"] == "alarm errors"
