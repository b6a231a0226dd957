"""The load-balancer plan: pure decisions over what the target group and HAProxy report (no I/O)."""

from localcloud.fleet.haproxy import ServerState
from localcloud.fleet.plan import Action, merge_target_health, plan_load_balancer


def server(name, routed=False, up=False, checked=False, failing=False, sessions=0):
    return ServerState(name, "127.0.0.1", 40000, routed, up, checked, failing, sessions)


def test_a_registered_target_is_added_checked_but_not_routed():
    assert plan_load_balancer({"i-1": "initial"}, {}, {"i-1": 41000}, {}) == [Action("add", "i-1", 41000)]


def test_a_target_without_a_running_instance_is_not_added():
    assert plan_load_balancer({"i-1": "initial"}, {}, {}, {}) == []


def test_no_verdict_yet_leaves_the_target_initial():
    assert plan_load_balancer({"i-1": "initial"}, {"i-1": server("i-1", checked=True)}, {"i-1": 1}, {}) == []


def test_passing_checks_are_fed_as_healthy_but_routing_waits_for_the_target_group():
    plan = plan_load_balancer({"i-1": "initial"}, {"i-1": server("i-1", up=True, checked=True)}, {"i-1": 1}, {})
    assert plan == [Action("feed", "i-1", "healthy")]


def test_routed_once_the_target_group_reports_healthy():
    plan = plan_load_balancer({"i-1": "healthy"}, {"i-1": server("i-1", up=True, checked=True)}, {"i-1": 1},
                              {"i-1": "healthy"})
    assert plan == [Action("route", "i-1")]


def test_failing_checks_are_fed_as_unhealthy_then_routing_stops_with_the_target_group():
    down = {"i-1": server("i-1", routed=True, checked=True, failing=True)}  # HAProxy itself skips a DOWN server
    assert plan_load_balancer({"i-1": "healthy"}, down, {"i-1": 1}, {"i-1": "healthy"}) == [
        Action("feed", "i-1", "unhealthy")]
    assert plan_load_balancer({"i-1": "unhealthy"}, down, {"i-1": 1}, {"i-1": "unhealthy"}) == [
        Action("drain", "i-1")]


def test_draining_target_is_drained_reset_and_handed_back():
    plan = plan_load_balancer({"i-1": "draining"}, {"i-1": server("i-1", routed=True, up=True, checked=True)},
                              {"i-1": 1}, {"i-1": "healthy"})
    assert plan == [Action("drain", "i-1"), Action("reset", "i-1"), Action("feed", "i-1", None)]
    # Next poll: nothing more until the target group forgets it.
    assert plan_load_balancer({"i-1": "draining"}, {"i-1": server("i-1", up=True, checked=True)}, {"i-1": 1},
                              {}) == []


def test_a_target_gone_from_the_group_is_removed():
    plan = plan_load_balancer({}, {"i-1": server("i-1")}, {"i-1": 1}, {"i-1": "healthy"})
    assert plan == [Action("remove", "i-1"), Action("feed", "i-1", None)]


def test_a_re_registered_target_must_pass_checks_again_before_it_is_fed_healthy():
    # ExitStandby (A2): the server was reset while draining; it is down until `rise` checks pass.
    assert plan_load_balancer({"i-1": "initial"}, {"i-1": server("i-1", checked=True)}, {"i-1": 1}, {}) == []


def test_merge_prefers_healthy_across_target_groups_and_ignores_unused():
    first = {"TargetHealthDescriptions": [
        {"Target": {"Id": "i-1"}, "TargetHealth": {"State": "draining"}},
        {"Target": {"Id": "i-2"}, "TargetHealth": {"State": "unused"}}]}
    second = {"TargetHealthDescriptions": [{"Target": {"Id": "i-1"}, "TargetHealth": {"State": "healthy"}}]}
    assert merge_target_health([first, second]) == {"i-1": "healthy"}
