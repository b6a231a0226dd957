"""The wait verdicts: when a wait is done, keeps waiting, or fails, and what it says it saw."""

import dataclasses

import pytest

from deployer import health
from deployer.model import classic_state
from tests.deployer.deployer_fixtures import TG, group_record, ids, snapshot

KEY = "tg:" + TG


def green(instances, sizes=(3, 3, 6)):
    snap = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), group_record("green", sizes, instances))
    return snap.groups["green"]


def test_healthy_needs_every_desired_instance_in_service_and_healthy():
    group = green(ids("g", 3))
    states = {"i-g00000": {KEY: "healthy"}, "i-g00001": {KEY: "healthy"}, "i-g00002": {KEY: "initial"}}
    state, detail = health.HEALTHY(group, states)
    assert state == health.WAIT and detail.startswith("2/3 of demo-green healthy")
    assert "i-g00002 initial in target group demo-tg" in detail
    states["i-g00002"][KEY] = "healthy"
    assert health.HEALTHY(group, states)[0] == health.OK


def test_too_few_instances_is_not_done_even_if_all_present_are_healthy():
    group = green(ids("g", 2) + ids("p", 1, "Pending"))
    states = {"i-g00000": {KEY: "healthy"}, "i-g00001": {KEY: "healthy"}}
    state, detail = health.HEALTHY(group, states)
    assert state == health.WAIT and "i-p00000 Pending" in detail


def test_a_strict_budget_fails_at_once_on_unhealthy_or_terminating_but_rollback_keeps_waiting():
    strict = health.WaitFacts(budget=health.ReplacementBudget(count=0))
    group = green(ids("g", 3))
    states = {"i-g00000": {KEY: "healthy"}, "i-g00001": {KEY: "unhealthy"}, "i-g00002": {KEY: "healthy"}}
    state, detail = health.HEALTHY(group, states, facts=strict)
    assert state == health.FAIL
    assert detail == ("1 new instances of demo-green failed or were replaced, more than the budget of 0 (0, "
                      "--max-replacements): i-g00001 unhealthy in target group demo-tg")
    assert health.RESTORED(group, states)[0] == health.WAIT
    group = green(ids("g", 2) + ids("t", 1, "Terminating"))
    assert health.HEALTHY(group, {}, facts=strict)[0] == health.FAIL


def test_deregistered_accepts_draining_but_drained_does_not():
    group = green(ids("g", 2, "Standby"), sizes=(0, 0, 6))
    states = {"i-g00000": {KEY: "draining"}}
    assert health.DEREGISTERED(group, states)[0] == health.OK
    state, detail = health.DRAINED(group, states)
    assert state == health.WAIT and "i-g00000 draining" in detail
    assert health.DRAINED(group, {})[0] == health.OK
    states = {"i-g00000": {KEY: "healthy"}}
    assert health.DEREGISTERED(group, states)[0] == health.WAIT


def test_entering_standby_while_draining_is_deregistered_but_not_drained():
    # AWS keeps an instance EnteringStandby while it drains; a deploy must not sit out the delay (E2).
    group = green(ids("g", 1, "EnteringStandby"), sizes=(0, 0, 6))
    assert health.DEREGISTERED(group, {"i-g00000": {KEY: "draining"}})[0] == health.OK
    state, detail = health.DRAINED(group, {"i-g00000": {KEY: "draining"}})
    assert state == health.WAIT and "i-g00000 EnteringStandby" in detail
    assert health.SETTLED(group, {})[0] == health.WAIT
    # Still InService: only a new plan moves it to Standby, so the wait hands back to the planner.
    assert health.DEREGISTERED(green(ids("g", 1), sizes=(0, 0, 6)), {})[0] == health.REPLAN
    assert health.DEREGISTERED(green(ids("p", 1, "Pending"), sizes=(0, 1, 6)), {})[0] == health.WAIT


def test_classic_elb_out_of_service_counts_as_initial_unless_checks_failed():
    assert classic_state("InService") == "healthy"
    assert classic_state("OutOfService", "Instance registration is still in progress.") == "initial"
    assert classic_state("OutOfService", "Instance has failed at least the UnhealthyThreshold number of "
                                         "health checks consecutively.") == "unhealthy"
    # E3: a deregistered instance stays InService while its connections drain; it takes no new requests.
    assert classic_state("InService", "Instance deregistration currently in progress.") == "draining"


def test_rollback_replans_when_instances_are_back_in_standby():
    group = green(ids("g", 2) + ids("s", 1, "Standby"))
    state, detail = health.RESTORED(group, {})
    assert state == health.REPLAN and detail == "1 instances of demo-green are in Standby and out of the load balancers"
    # Still draining (a late EnterStandby of a displaced deploy) is out too: a new plan registers it (E8).
    group = green(ids("g", 2) + ids("s", 1, "EnteringStandby"))
    state, _ = health.RESTORED(group, {"i-s00000": {KEY: "draining"}})
    assert state == health.REPLAN


def test_restored_counts_instances_registered_directly_while_they_enter_standby():
    # E8: desired 1 (two entered Standby with decrement), both registered again by the rollback.
    group = green(ids("g", 1) + ids("s", 2, "EnteringStandby"), sizes=(0, 1, 6))
    health_of = {"i-g00000": {KEY: "healthy"}, "i-s00000": {KEY: "healthy"}, "i-s00001": {KEY: "initial"}}
    state, detail = health.RESTORED(group, health_of)
    assert state == health.WAIT and detail.startswith("2/3 of demo-green healthy") and "i-s00001 initial" in detail
    health_of["i-s00001"] = {KEY: "healthy"}
    assert health.RESTORED(group, health_of)[0] == health.OK
    # Reached Standby meanwhile, still registered: it serves, and counts.
    group = green(ids("g", 1) + ids("s", 2, "Standby"), sizes=(0, 1, 6))
    assert health.RESTORED(group, health_of)[0] == health.OK


def test_a_new_instance_that_left_the_group_during_the_wait_counts_as_replaced():
    # An ABANDONed launch (A6) may pass through Terminating between two polls: seen once, then gone.
    group = green(ids("g", 2, "Pending:Wait") + ids("n", 1, "Pending"))
    facts = health.WaitFacts(budget=health.ReplacementBudget(count=1))
    assert health.HEALTHY(group, {}, {"i-g00000", "i-g00001"}, facts)[0] == health.WAIT
    state, detail = health.HEALTHY(group, {}, {"i-g00000", "i-x00000"}, facts)
    assert state == health.WAIT and "1/1 replaced" in detail
    state, detail = health.HEALTHY(group, {}, {"i-g00000", "i-x00000", "i-x00001"}, facts)
    assert state == health.FAIL
    assert detail == ("2 new instances of demo-green failed or were replaced, more than the budget of 1 (1, "
                      "--max-replacements): i-x00000 left demo-green before turning healthy, and 1 more")


# -- the launch wait: replacement budget, grace period, activities, reason codes (finding 11, 15, 19) ------


def test_the_replacement_budget_is_a_count_or_a_share_of_the_capacity_with_a_default_of_at_least_two():
    assert health.ReplacementBudget.parse("3").allowed(1000) == 3
    assert health.ReplacementBudget.parse("10%").allowed(45) == 5  # rounded up
    assert health.ReplacementBudget.parse("0").allowed(10) == 0
    assert health.DEFAULT_BUDGET.allowed(3) == 2 and health.DEFAULT_BUDGET.allowed(1000) == 100
    for bad in ("-1", "x", "150%", "nan%"):
        with pytest.raises(ValueError):
            health.ReplacementBudget.parse(bad)


def test_one_replaced_instance_is_tolerated_while_its_replacement_arrives():
    group = green(ids("g", 2) + ids("t", 1, "Terminating") + ids("r", 1, "Pending"))
    states = {"i-g00000": {KEY: "healthy"}, "i-g00001": {KEY: "healthy"}}
    state, detail = health.HEALTHY(group, states)
    assert state == health.WAIT and "i-r00000 Pending" in detail and "1/2 replaced" in detail
    group = green(ids("g", 2) + ids("t", 1, "Terminating") + ids("r", 1))
    states["i-r00000"] = {KEY: "healthy"}
    assert health.HEALTHY(group, states)[0] == health.OK


def test_unhealthy_without_a_launch_hook_is_tolerated_during_the_grace_period_only():
    record = group_record("green", (3, 3, 6), ids("g", 3))
    record["HealthCheckGracePeriod"] = 300
    group = snapshot(group_record("blue", (3, 3, 6), ids("b", 3)), record).groups["green"]
    states = {"i-g00000": {KEY: "unhealthy"}, "i-g00001": {KEY: "healthy"}, "i-g00002": {KEY: "healthy"}}
    strict = health.ReplacementBudget(count=0)
    booting = health.WaitFacts(budget=strict, hooked=False, age={"i-g00000": 120.0})
    state, detail = health.HEALTHY(group, states, facts=booting)
    assert state == health.WAIT and "i-g00000 unhealthy in target group demo-tg, within the 300s grace" in detail
    late = health.WaitFacts(budget=strict, hooked=False, age={"i-g00000": 301.0})
    assert health.HEALTHY(group, states, facts=late)[0] == health.FAIL
    # E5: with a launch hook the target is registered only after CONTINUE; unhealthy then is a real failure.
    hooked = health.WaitFacts(budget=strict, hooked=True, age={"i-g00000": 120.0})
    assert health.HEALTHY(group, states, facts=hooked)[0] == health.FAIL


def test_a_failed_scaling_activity_is_the_reason_at_once_when_nothing_else_launches():
    group = green(ids("g", 1), sizes=(3, 3, 6))
    message = ("We currently do not have sufficient t3.micro capacity in the Availability Zone you requested "
               "(us-east-1a).")
    failed = {"StatusCode": "Failed", "StatusMessage": message, "Description": "Launching a new EC2 instance"}
    state, detail = health.HEALTHY(group, {"i-g00000": {KEY: "healthy"}},
                                   facts=health.WaitFacts(activities=[failed, dict(failed)]))
    assert state == health.FAIL
    assert detail == f"demo-green cannot launch its capacity (1/3 instances): {message}"
    # A launch still in progress (a retry in another zone, A15): keep waiting, and say what failed meanwhile.
    going = {"StatusCode": "InProgress", "Description": "Launching a new EC2 instance"}
    state, detail = health.HEALTHY(group, {"i-g00000": {KEY: "healthy"}},
                                   facts=health.WaitFacts(activities=[failed, going]))
    assert state == health.WAIT and message in detail
    ok = {"StatusCode": "Successful", "Description": "Launching a new EC2 instance"}
    assert health.HEALTHY(group, {}, facts=health.WaitFacts(activities=[ok, failed]))[0] == health.WAIT


def test_reason_codes_fail_fast_on_misconfiguration_and_unhealthy_draining_counts_as_unhealthy():
    group = green(ids("g", 3))
    states = {"i-g00000": {KEY: "unused"}, "i-g00001": {KEY: "healthy"}, "i-g00002": {KEY: "healthy"}}
    facts = health.WaitFacts(reasons={"i-g00000": {KEY: "Target.NotInUse"}})
    state, detail = health.HEALTHY(group, states, facts=facts)
    assert state == health.FAIL and detail.startswith(
        "instance i-g00000 of demo-green is unused (Target.NotInUse) in target group demo-tg: the target group is "
        "used by no listener")
    states["i-g00000"] = {KEY: "unavailable"}
    assert health.HEALTHY(group, states)[0] == health.FAIL
    states["i-g00000"] = {KEY: "unhealthy.draining"}
    strict = health.WaitFacts(budget=health.ReplacementBudget(count=0), hooked=True)
    assert "unhealthy.draining" in health.HEALTHY(group, states, facts=strict)[1]


# -- verified version (finding 7) ------------------------------------------------------------------------


def test_only_instances_reporting_the_deployed_version_count_and_those_without_the_tag_count_on_health():
    group = green(ids("g", 3))
    states = {f"i-g0000{k}": {KEY: "healthy"} for k in range(3)}
    stale = health.WaitFacts(version="2.0", running={"i-g00000": "2.0", "i-g00001": "1.0", "i-g00002": "2.0"})
    state, detail = health.HEALTHY(group, states, facts=stale)
    assert state == health.WAIT and detail.startswith("2/3 of demo-green healthy on 2.0 (i-g00001 runs 1.0")
    unread = health.WaitFacts(version="2.0", running={"i-g00000": "2.0", "i-g00002": "2.0"})
    assert health.HEALTHY(group, states, facts=unread)[0] == health.WAIT
    old_ami = health.WaitFacts(version="2.0", running={"i-g00000": None, "i-g00001": "2.0", "i-g00002": "2.0"})
    assert health.HEALTHY(group, states, facts=old_ami)[0] == health.OK
    assert health.unverified(group, old_ami) == ["i-g00000"]


# -- the per-zone gate (finding 6, E6, A19) --------------------------------------------------------------


def zoned(color, sizes, placed, version="1.0"):
    """A group record whose instances sit in the given zones: placed = [(id, state, zone), ...]."""
    record = group_record(color, sizes, [(i, s) for i, s, _ in placed], tags={"bluegreen:version": version})
    for inst, (_, _, zone) in zip(record["Instances"], placed):
        inst["AvailabilityZone"] = zone
    return record


def test_the_gate_refuses_to_leave_a_zone_the_old_fleet_serves_without_new_healthy_instances():
    blue = zoned("blue", (4, 4, 8), [("i-b1", "InService", "us-east-1a"), ("i-b2", "InService", "us-east-1a"),
                                     ("i-b3", "InService", "us-east-1b"), ("i-b4", "InService", "us-east-1b")])
    green_ = zoned("green", (4, 4, 8), [(f"i-g{k}", "InService", "us-east-1a") for k in range(4)], "2.0")
    snap = snapshot(blue, green_)
    states = {f"i-g{k}": {KEY: "healthy"} for k in range(4)}
    facts = health.WaitFacts(old=snap.groups["blue"])
    state, detail = health.GATE(snap.groups["green"], states, facts=facts)
    assert state == health.WAIT
    assert detail == "zone us-east-1b would be left with 0 healthy new instances of demo-green, it needs 1 (4 of " \
                     "demo-blue serve 2 zones)"
    assert health.HEALTHY(snap.groups["green"], states)[0] == health.OK  # the launch wait alone would pass


def test_with_cross_zone_off_each_zone_needs_its_fair_share():
    blue = snapshot(zoned("blue", (4, 4, 8), [(f"i-b{k}", "InService", "us-east-1" + "ab"[k % 2]) for k in range(4)]),
                    group_record("green", (0, 0, 0))).groups["blue"]
    assert health.zone_needs(blue, 4, cross_zone_off=False) == {"us-east-1a": 1, "us-east-1b": 1}
    assert health.zone_needs(blue, 4, cross_zone_off=True) == {"us-east-1a": 2, "us-east-1b": 2}
    assert health.zone_needs(blue, 5, cross_zone_off=True) == {"us-east-1a": 2, "us-east-1b": 2}
    green_ = zoned("green", (4, 4, 8), [("i-g0", "InService", "us-east-1a"), ("i-g1", "InService", "us-east-1a"),
                                        ("i-g2", "InService", "us-east-1a"), ("i-g3", "InService", "us-east-1b")])
    snap = snapshot(zoned("blue", (4, 4, 8), [(f"i-b{k}", "InService", "us-east-1" + "ab"[k % 2])
                                              for k in range(4)]), green_)
    states = {f"i-g{k}": {KEY: "healthy"} for k in range(4)}
    on = health.WaitFacts(old=snap.groups["blue"], cross_zone_off=False)
    off = health.WaitFacts(old=snap.groups["blue"], cross_zone_off=True)
    assert health.GATE(snap.groups["green"], states, facts=on)[0] == health.OK
    state, detail = health.GATE(snap.groups["green"], states, facts=off)
    assert state == health.WAIT and "zone us-east-1b would be left with 1" in detail and "needs 2" in detail


def test_cross_zone_settings_of_target_groups_and_classic_elbs():
    off = {"load_balancing.cross_zone.enabled": "false"}
    lb_default = {"load_balancing.cross_zone.enabled": "use_load_balancer_configuration"}
    assert health.cross_zone_off([(off, "HTTP", None)], []) is True
    assert health.cross_zone_off([(lb_default, "HTTP", None)], []) is False  # an ALB's is always on
    assert health.cross_zone_off([(lb_default, "TCP", {})], []) is True  # an NLB's is off by default (E6)
    assert health.cross_zone_off([(lb_default, "TCP", {"load_balancing.cross_zone.enabled": "true"})], []) is False
    assert health.cross_zone_off([], [{"CrossZoneLoadBalancing": {"Enabled": False}}]) is True
    assert health.cross_zone_off([], [{"CrossZoneLoadBalancing": {"Enabled": True}}]) is False


def test_a_whole_small_fleet_failing_is_a_broken_version_whatever_the_budget():
    group = green(ids("g", 2), sizes=(2, 2, 4))
    states = {"i-g00000": {KEY: "unhealthy"}, "i-g00001": {KEY: "unhealthy"}}
    late = health.WaitFacts(hooked=True)  # budget: the default, 2 at this size
    state, detail = health.HEALTHY(group, states, facts=late)
    assert state == health.FAIL and "2 new instances of demo-green failed or were replaced, as many as its " \
                                     "capacity 2 (at least 2), none healthy" in detail
    states["i-g00001"] = {KEY: "healthy"}
    assert health.HEALTHY(group, states, facts=late)[0] == health.WAIT


def test_a_one_instance_fleet_gets_one_replacement_and_an_instance_marked_unhealthy_never_counts():
    one = green(ids("g", 1), sizes=(1, 1, 1))
    late = health.WaitFacts(hooked=True)
    state, _ = health.HEALTHY(one, {"i-g00000": {KEY: "unhealthy"}}, facts=late)
    assert state == health.WAIT  # the group replaces it; a canary of 1 is not aborted at its first failure
    replaced = green(ids("g", 1, "InService"), sizes=(1, 1, 1))
    gone = frozenset({"i-old"})
    assert health.HEALTHY(replaced, {"i-g00000": {KEY: "unhealthy"}}, gone, facts=late)[0] == health.FAIL
    # A20: healthy in the target group but marked Unhealthy by the group: about to be terminated, not capacity.
    marked = dataclasses.replace(one, instances=(dataclasses.replace(one.instances[0], health_status="Unhealthy"),))
    patient = health.WaitFacts(hooked=True, budget=health.ReplacementBudget(count=5))
    assert health.HEALTHY(marked, {"i-g00000": {KEY: "healthy"}}, facts=patient)[0] == health.WAIT
    assert health.healthy_count(marked, {"i-g00000": {KEY: "healthy"}}) == 0
