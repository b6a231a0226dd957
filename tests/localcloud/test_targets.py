"""E1/E2: target health moves with time; forced health; the control API over HTTP."""

import json
import urllib.request

import pytest

from tests.localcloud.support import aws_error


def test_e1_initial_then_healthy_after_threshold_times_interval(world, stopped_clock):
    arn = world.target_group(HealthCheckIntervalSeconds=5, HealthyThresholdCount=2)  # healthy after 2 x 5 s
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert world.health(arn) == {iid: "initial"}
    stopped_clock.advance(9)
    assert world.health(arn) == {iid: "initial"}
    stopped_clock.advance(1)
    assert world.health(arn) == {iid: "healthy"}


def test_e2_deregistration_drains_for_the_delay_then_target_is_gone(world, stopped_clock):
    world.cloud.configure_time(health_interval=0.0)
    arn = world.target_group(delay=30)
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert world.health(arn) == {iid: "healthy"}
    world.elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert world.health(arn) == {iid: "draining"}
    stopped_clock.advance(29)
    assert world.health(arn) == {iid: "draining"}
    stopped_clock.advance(1)
    assert world.health(arn) == {}
    types = [e["type"] for e in world.cloud.events() if e["instance_id"] == iid]
    assert types == ["target_registered", "target_deregistered", "target_removed"]


def test_forced_health_in_process_and_over_http(world, stopped_clock):
    arn = world.target_group()
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    world.cloud.set_target_health(iid, "healthy")
    assert world.health(arn) == {iid: "healthy"}
    body = json.dumps({"instance_id": iid, "state": "unhealthy", "target_group_arn": arn}).encode()
    req = urllib.request.Request(world.cloud.endpoint + "/_localcloud/target-health", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    assert world.health(arn) == {iid: "unhealthy"}
    world.cloud.set_target_health(iid, None, arn)
    world.cloud.set_target_health(iid, None)
    assert world.health(arn) == {iid: "initial"}  # back to the clock: 5 x 30 s from registration


def test_control_api_rejects_a_bad_state(aws):
    body = json.dumps({"instance_id": "i-1", "state": "sick"}).encode()
    req = urllib.request.Request(aws.endpoint + "/_localcloud/target-health", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    assert "state must be one of" in json.loads(err.value.read())["error"]


def test_events_endpoint_follows_by_sequence_number(world):
    arn = world.target_group()
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid, "Port": 8080}])
    with urllib.request.urlopen(world.cloud.endpoint + "/_localcloud/events?after=0", timeout=5) as resp:
        page = json.loads(resp.read())
    assert [(e["type"], e["instance_id"], e["target_group_arn"], e["port"]) for e in page["events"]] == [
        ("target_registered", iid, arn, 8080)]
    with urllib.request.urlopen(f"{world.cloud.endpoint}/_localcloud/events?after={page['last']}", timeout=5) as resp:
        assert json.loads(resp.read())["events"] == []


def _post(aws, path, payload):
    req = urllib.request.Request(aws.endpoint + path, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_time_control_over_http_and_its_validation(world):
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(world.cloud, "/_localcloud/time", {"time_scale": "fast"})
    assert err.value.code == 400
    assert "time_scale must be a number" in json.loads(err.value.read())["error"]
    assert _post(world.cloud, "/_localcloud/time", {"health_interval": 0}) == {"ok": True}
    arn = world.target_group()
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert world.health(arn) == {iid: "healthy"}
    assert _post(world.cloud, "/_localcloud/reset", {}) == {"ok": True}
    assert world.cloud.state.health_interval is None


def test_unsubscribed_callbacks_get_nothing_more(world):
    seen = []
    world.cloud.subscribe(seen.append)
    arn = world.target_group()
    first, second = world.instances(2)
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": first}])
    world.cloud.unsubscribe(seen.append)
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": second}])
    assert [(e["type"], e["instance_id"]) for e in seen] == [("target_registered", first)]


def test_e1_e2_health_check_and_delay_ranges(world):
    for bad in ({"HealthCheckIntervalSeconds": 301}, {"HealthyThresholdCount": 11}, {"UnhealthyThresholdCount": 11}):
        with pytest.raises(world.elbv2.exceptions.ClientError) as err:
            world.target_group(name="bad", delay=None, **bad)
        assert aws_error(err)[0] == "ValidationError"
    arn = world.target_group(delay=None)
    with pytest.raises(world.elbv2.exceptions.ClientError) as err:
        world.elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckIntervalSeconds=301)
    assert aws_error(err)[0] == "ValidationError"
    world.elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckIntervalSeconds=300, HealthyThresholdCount=10)
    world.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3600"}])  # the documented maximum
    attributes = world.elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    attrs = {a["Key"]: a["Value"] for a in attributes}
    assert attrs["deregistration_delay.timeout_seconds"] == "3600"
    with pytest.raises(world.elbv2.exceptions.ClientError) as err:
        world.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "3601"}])
    assert aws_error(err)[0] == "ValidationError"
