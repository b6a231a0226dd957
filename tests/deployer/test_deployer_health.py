"""The wait verdicts: when a wait is done, keeps waiting, or fails, and what it says it saw."""

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


def test_an_unhealthy_or_terminating_new_instance_fails_at_once_but_rollback_keeps_waiting():
    group = green(ids("g", 3))
    states = {"i-g00000": {KEY: "healthy"}, "i-g00001": {KEY: "unhealthy"}, "i-g00002": {KEY: "healthy"}}
    state, detail = health.HEALTHY(group, states)
    assert state == health.FAIL and detail == "instance i-g00001 of demo-green is unhealthy in target group demo-tg"
    assert health.RESTORED(group, states)[0] == health.WAIT
    group = green(ids("g", 2) + ids("t", 1, "Terminating"))
    assert health.HEALTHY(group, {})[0] == health.FAIL


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
    assert state == health.REPLAN and detail == "1 instances of demo-green are in Standby again"


def test_a_new_instance_that_left_the_group_during_the_wait_is_a_failed_launch():
    # An ABANDONed launch (A6) may pass through Terminating between two polls: seen once, then gone.
    group = green(ids("g", 2, "Pending:Wait") + ids("n", 1, "Pending"))
    assert health.verdict_vanished({"i-g00000", "i-g00001"}, group) is None
    state, detail = health.verdict_vanished({"i-g00000", "i-x00000", "i-x00001"}, group)
    assert state == health.FAIL
    assert detail == ("instance i-x00000 left demo-green before turning healthy (failed launch: abandoned by its "
                      "lifecycle hook or terminated), and 1 more")
