"""E6 in the local fleet's HAProxy view: one load-balancer node (port) per zone for that zone's clients. With
cross-zone off a zone whose targets are all unhealthy answers 503 to its own clients while the other zone's
clients are served. The plan is pure (no I/O); the node test runs a real HAProxy and tiny HTTP apps (no Docker).
"""

import boto3
import pytest
from botocore.config import Config

from localcloud.aws.cross_zone import KEY
from localcloud.fleet.control import ControlClient
from localcloud.fleet.haproxy import LoadBalancer, ServerState
from localcloud.fleet.load import get_once, sample_versions
from localcloud.fleet.plan import plan_zone_routing, routes_by_zone
from localcloud.fleet.supervisor import FleetSupervisor
from localcloud.scenario import create_service
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


@pytest.mark.haproxy
def test_e6_the_supervisor_keeps_a_zone_without_healthy_targets_dark_when_cross_zone_is_off(aws, tmp_path,
                                                                                          fake_instance):
    scale = 0.05
    aws.configure_time(time_scale=scale, health_interval=300)  # HAProxy's checks decide health (fed in)
    session = boto3.session.Session()
    svc = create_service(session, name="svc", capacity=2, version="1.0", health_interval=5, healthy_threshold=2,
                         deregistration_delay=30, zones=2)  # A19: one instance in each zone
    retries = Config(retries={"mode": "standard", "max_attempts": 5})
    asg, elbv2 = session.client("autoscaling", config=retries), session.client("elbv2", config=retries)
    elbv2.modify_target_group_attributes(TargetGroupArn=svc["target_group_arn"],
                                         Attributes=[{"Key": KEY, "Value": "false"}])
    lb = LoadBalancer(str(tmp_path / "lb"), zones=ZONES).start()
    supervisor = FleetSupervisor(ControlClient(aws.endpoint), asg, elbv2, lb, str(tmp_path), aws.endpoint,
                                 "us-east-1", "unused", time_scale=scale, poll_interval=0.05,
                                 instance_factory=fake_instance).start()
    try:
        wait_until(lambda: supervisor.routed_count() == 2, "both instances healthy and routed", 20)
        zone_of = {i["InstanceId"]: i["AvailabilityZone"]
                   for i in asg.describe_auto_scaling_instances()["AutoScalingInstances"]}
        by_zone = {zone: i for i, zone in zone_of.items()}
        assert sorted(by_zone) == ZONES
        url = {zone: f"http://127.0.0.1:{port}" for zone, port in lb.zone_ports.items()}
        for zone in ZONES:  # cross-zone off: each zone's clients reach only their own zone's instance
            wait_until(lambda z=zone: sample_versions(url[z], 4) == ({by_zone[z]: 4}, 0), f"{zone} served", 20)
        supervisor.instances[by_zone[ZONES[1]]].backend.healthy = False
        wait_until(lambda: get_once(url[ZONES[1]]) == (None, "HTTP 503"), "zone b dark for its clients", 20)
        assert sample_versions(url[ZONES[0]], 4) == ({by_zone[ZONES[0]]: 4}, 0)
        assert sample_versions(lb.url, 4) == ({by_zone[ZONES[0]]: 4}, 0)
        elbv2.modify_target_group_attributes(TargetGroupArn=svc["target_group_arn"],
                                             Attributes=[{"Key": KEY, "Value": "true"}])
        wait_until(lambda: sample_versions(url[ZONES[1]], 4) == ({by_zone[ZONES[0]]: 4}, 0),
                   "zone b's clients served across zones", 20)
    finally:
        supervisor.stop()
        lb.stop()
