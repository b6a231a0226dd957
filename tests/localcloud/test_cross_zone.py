"""E6: cross-zone load balancing. Target groups and Classic ELBs carry the setting, with AWS's defaults (an ALB
always on, an NLB and a Classic ELB made through the API off), and the local fleet's routing plan keeps a
zone's clients to that zone's healthy targets when it is off.
"""

import pytest
from botocore.exceptions import ClientError

from localcloud.aws.cross_zone import KEY, resolve
from localcloud.fleet.plan import routes_by_zone
from tests.localcloud.support import aws_error


def _second_subnet(world):
    return world.ec2.create_subnet(VpcId=world.vpc, CidrBlock="10.0.16.0/20",
                                   AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]


def _tg_attributes(world, arn):
    return {a["Key"]: a["Value"]
            for a in world.elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}


def _lb_attributes(world, arn):
    return {a["Key"]: a["Value"]
            for a in world.elbv2.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]}


def _set_tg_cross_zone(world, arn, value):
    world.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[{"Key": KEY, "Value": value}])


def _fleet_view(world, tg_arn):
    """What a router reads through the API: the cross-zone answer for the target group (E6)."""
    tg = world.elbv2.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"][0]
    lb_arns = tg.get("LoadBalancerArns", [])
    lb_type = lb_value = None
    if lb_arns:
        lb_type = world.elbv2.describe_load_balancers(LoadBalancerArns=lb_arns[:1])["LoadBalancers"][0]["Type"]
        lb_value = _lb_attributes(world, lb_arns[0]).get(KEY)
    return resolve(_tg_attributes(world, tg_arn).get(KEY), lb_type, lb_value)


def _load_balancer(world, kind, tg_arn, subnets):
    lb = world.elbv2.create_load_balancer(Name=f"{kind}-lb", Subnets=subnets, Type=kind)["LoadBalancers"][0]
    protocol = "HTTP" if kind == "application" else "TCP"
    world.elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol=protocol, Port=80,
                                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    return lb["LoadBalancerArn"]


def test_e6_target_group_cross_zone_attribute_default_stored_returned_and_validated(world):
    arn = world.target_group()
    assert _tg_attributes(world, arn)[KEY] == "use_load_balancer_configuration"
    _set_tg_cross_zone(world, arn, "false")
    assert _tg_attributes(world, arn)[KEY] == "false"
    with pytest.raises(ClientError) as excinfo:
        _set_tg_cross_zone(world, arn, "sometimes")
    assert aws_error(excinfo)[0] == "ValidationError"
    assert _tg_attributes(world, arn)[KEY] == "false"


def test_e6_an_alb_is_always_cross_zone_its_target_group_may_turn_it_off(world):
    tg = world.target_group()
    alb = _load_balancer(world, "application", tg, [world.subnet, _second_subnet(world)])
    assert _lb_attributes(world, alb)[KEY] == "true"
    with pytest.raises(ClientError) as excinfo:
        world.elbv2.modify_load_balancer_attributes(LoadBalancerArn=alb, Attributes=[{"Key": KEY, "Value": "false"}])
    assert aws_error(excinfo)[0] == "ValidationError"
    assert _fleet_view(world, tg) is True
    _set_tg_cross_zone(world, tg, "false")
    assert _fleet_view(world, tg) is False


def test_e6_an_nlb_is_not_cross_zone_by_default_and_may_be_turned_on(world):
    tg = world.elbv2.create_target_group(Name="tcp", Protocol="TCP", Port=8080, VpcId=world.vpc)[
        "TargetGroups"][0]["TargetGroupArn"]
    nlb = _load_balancer(world, "network", tg, [world.subnet, _second_subnet(world)])
    assert _lb_attributes(world, nlb)[KEY] == "false"
    assert _fleet_view(world, tg) is False
    world.elbv2.modify_load_balancer_attributes(LoadBalancerArn=nlb, Attributes=[{"Key": KEY, "Value": "true"}])
    assert _fleet_view(world, tg) is True
    _set_tg_cross_zone(world, tg, "false")  # the target group's own setting wins
    assert _fleet_view(world, tg) is False


def test_e6_a_target_group_behind_no_load_balancer_follows_an_alb(world):
    tg = world.target_group()  # the local fleet's: its HAProxy stands for an ALB
    assert _fleet_view(world, tg) is True
    _set_tg_cross_zone(world, tg, "false")
    assert _fleet_view(world, tg) is False


def test_e6_a_classic_elb_made_through_the_api_is_not_cross_zone_until_turned_on(world):
    name = world.classic_lb()

    def cross_zone():
        attributes = world.elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"]
        return attributes["CrossZoneLoadBalancing"]["Enabled"]

    assert cross_zone() is False
    world.elb.modify_load_balancer_attributes(LoadBalancerName=name, LoadBalancerAttributes={
        "CrossZoneLoadBalancing": {"Enabled": True}})
    assert cross_zone() is True


def test_e6_with_cross_zone_off_a_zone_without_a_healthy_target_is_unreachable_for_its_clients(world, stopped_clock):
    tg = world.target_group(HealthCheckIntervalSeconds=10, HealthyThresholdCount=2, UnhealthyThresholdCount=2)
    (in_a,) = world.instances()
    in_b = world.ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=_second_subnet(world))[
        "Instances"][0]["InstanceId"]
    world.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": in_a}, {"Id": in_b}])
    world.cloud.set_app_up(in_b, False)  # E5: zone b's only target fails its checks
    stopped_clock.advance(20)
    assert world.health(tg) == {in_a: "healthy", in_b: "unhealthy"}
    reservations = world.ec2.describe_instances(InstanceIds=[in_a, in_b])["Reservations"]
    zone_of = {i["InstanceId"]: i["Placement"]["AvailabilityZone"] for r in reservations for i in r["Instances"]}
    zones = ["us-east-1a", "us-east-1b"]
    assert routes_by_zone(world.health(tg), zone_of, zones, _fleet_view(world, tg)) == {
        "us-east-1a": [in_a], "us-east-1b": [in_a]}  # cross-zone on: zone b's clients reach zone a
    _set_tg_cross_zone(world, tg, "false")
    assert routes_by_zone(world.health(tg), zone_of, zones, _fleet_view(world, tg)) == {
        "us-east-1a": [in_a], "us-east-1b": []}  # off: zone b answers 503
