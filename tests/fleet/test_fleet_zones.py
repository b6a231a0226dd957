"""E6 in the local fleet's HAProxy view: one load-balancer node (port) per zone for that zone's clients. With
cross-zone off a zone whose targets are all unhealthy answers 503 to its own clients while the other zone's
clients are served. The plan is pure (no I/O); the node test runs a real HAProxy and tiny HTTP apps (no Docker).
"""

import pytest

from localcloud.fleet.haproxy import LoadBalancer, ServerState
from localcloud.fleet.load import get_once, sample_versions
from localcloud.fleet.plan import plan_zone_routing, routes_by_zone
from tests.helpers import wait_until

ZONES = ["us-east-1a", "us-east-1b"]


def _server(name, routed):
    return ServerState(name, "127.0.0.1", 40000, routed, True, True, False, 0)


def test_e6_plan_routes_a_zone_only_to_its_own_healthy_targets_when_cross_zone_is_off():
    targets = {"i-a": "healthy", "i-b": "unhealthy", "i-c": "initial"}
    zone_of = {"i-a": ZONES[0], "i-b": ZONES[1], "i-c": ZONES[1]}
    assert routes_by_zone(targets, zone_of, ZONES, cross_zone=False) == {ZONES[0]: ["i-a"], ZONES[1]: []}
    assert routes_by_zone(targets, zone_of, ZONES, cross_zone=True) == {ZONES[0]: ["i-a"], ZONES[1]: ["i-a"]}


def test_e6_a_zone_copy_is_routed_only_while_the_main_server_is():
    routes = {ZONES[0]: ["i-a"], ZONES[1]: ["i-a"]}
    copies = {zone: {"i-a": _server("i-a", False), "i-b": _server("i-b", True)} for zone in ZONES}
    main = {"i-a": _server("i-a", True), "i-b": _server("i-b", True)}
    assert plan_zone_routing(routes, copies, main) == [
        (ZONES[0], "i-a", True), (ZONES[0], "i-b", False), (ZONES[1], "i-a", True), (ZONES[1], "i-b", False)]
    main["i-a"] = _server("i-a", False)  # the main node stopped routing to it (its checks fail)
    assert (ZONES[0], "i-a", True) not in plan_zone_routing(routes, copies, main)


@pytest.fixture
def zoned_lb(tmp_path):
    balancer = LoadBalancer(str(tmp_path / "lb"), check_interval=0.2, rise=2, fall=2, zones=ZONES).start()
    yield balancer
    balancer.stop()


@pytest.mark.haproxy
def test_e6_each_zone_node_serves_only_what_it_is_told_and_a_zone_without_targets_answers_503(zoned_lb, backend):
    lb = zoned_lb
    app_a, app_b = backend("a"), backend("b")
    lb.add_server("i-a", "127.0.0.1", app_a.port)
    lb.add_server("i-b", "127.0.0.1", app_b.port)
    wait_until(lambda: all(s.up for s in lb.servers().values()), "both servers up in HAProxy")
    lb.route("i-a")
    lb.route("i-b")
    url = {zone: f"http://127.0.0.1:{port}" for zone, port in lb.zone_ports.items()}
    assert sorted(lb.zone_servers(ZONES[0])) == ["i-a", "i-b"]
    assert get_once(url[ZONES[0]]) == (None, "HTTP 503")  # copies start drained: nothing routed yet
    # Cross-zone off, zone b's only target unhealthy: zone a's node routes to i-a, zone b's to nothing.
    routes = routes_by_zone({"i-a": "healthy", "i-b": "unhealthy"}, {"i-a": ZONES[0], "i-b": ZONES[1]}, ZONES,
                            cross_zone=False)
    zone_servers = {zone: lb.zone_servers(zone) for zone in ZONES}
    for zone, name, routed in plan_zone_routing(routes, zone_servers, lb.servers()):
        lb.route_in_zone(zone, name, routed)
    assert sample_versions(url[ZONES[0]], 6) == ({"a": 6}, 0)
    assert get_once(url[ZONES[1]]) == (None, "HTTP 503")
    assert sample_versions(lb.url, 6) == ({"a": 3, "b": 3}, 0)  # the zone-less node is untouched
    lb.remove_server("i-b")
    assert sorted(lb.zone_servers(ZONES[1])) == ["i-a"]
    assert "i-b" not in lb.servers()
