"""E1/E2: target health moves with time; forced health; the control API over HTTP."""

import json
import time
import urllib.request

import boto3
import pytest


def _clients():
    return boto3.client("ec2"), boto3.client("elbv2")


def _tg(elbv2, ec2, name="tg", **kwargs):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc, **kwargs)[
        "TargetGroups"][0]["TargetGroupArn"]


def _instance(ec2):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def _health(elbv2, arn):
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def test_e1_initial_then_healthy_after_threshold_times_interval(aws):
    aws.configure_time(health_interval=0.2)
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2, HealthCheckIntervalSeconds=5, HealthyThresholdCount=2)
    iid = _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn) == {iid: "initial"}
    time.sleep(0.5)
    assert _health(elbv2, arn) == {iid: "healthy"}


def test_e2_deregistration_drains_for_the_delay_then_target_is_gone(aws):
    aws.configure_time(health_interval=0.0)
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2)
    elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"}])  # 0.3 s at the test time scale
    iid = _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn) == {iid: "healthy"}
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn) == {iid: "draining"}
    time.sleep(0.5)
    assert _health(elbv2, arn) == {}
    types = [e["type"] for e in aws.events() if e["instance_id"] == iid]
    assert types == ["target_registered", "target_deregistered", "target_removed"]


def test_forced_health_in_process_and_over_http(aws):
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2)
    iid = _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    aws.set_target_health(iid, "healthy")
    assert _health(elbv2, arn) == {iid: "healthy"}
    body = json.dumps({"instance_id": iid, "state": "unhealthy", "target_group_arn": arn}).encode()
    req = urllib.request.Request(aws.endpoint + "/_localcloud/target-health", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    assert _health(elbv2, arn) == {iid: "unhealthy"}
    aws.set_target_health(iid, None, arn)
    aws.set_target_health(iid, None)
    assert _health(elbv2, arn) == {iid: "initial"}


def test_control_api_rejects_a_bad_state(aws):
    body = json.dumps({"instance_id": "i-1", "state": "sick"}).encode()
    req = urllib.request.Request(aws.endpoint + "/_localcloud/target-health", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    assert "state must be one of" in json.loads(err.value.read())["error"]


def test_events_endpoint_follows_by_sequence_number(aws):
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2)
    iid = _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid, "Port": 8080}])
    with urllib.request.urlopen(aws.endpoint + "/_localcloud/events?after=0", timeout=5) as resp:
        page = json.loads(resp.read())
    assert [(e["type"], e["instance_id"], e["target_group_arn"], e["port"]) for e in page["events"]] == [
        ("target_registered", iid, arn, 8080)]
    with urllib.request.urlopen(f"{aws.endpoint}/_localcloud/events?after={page['last']}", timeout=5) as resp:
        assert json.loads(resp.read())["events"] == []


def _post(aws, path, payload):
    req = urllib.request.Request(aws.endpoint + path, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_time_control_over_http_and_its_validation(aws):
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(aws, "/_localcloud/time", {"time_scale": "fast"})
    assert err.value.code == 400
    assert "time_scale must be a number" in json.loads(err.value.read())["error"]
    assert _post(aws, "/_localcloud/time", {"health_interval": 0}) == {"ok": True}
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2)
    iid = _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn) == {iid: "healthy"}
    assert _post(aws, "/_localcloud/reset", {}) == {"ok": True}
    assert aws.state.health_interval is None


def test_unsubscribed_callbacks_get_nothing_more(aws):
    seen = []
    aws.subscribe(seen.append)
    ec2, elbv2 = _clients()
    arn = _tg(elbv2, ec2)
    first, second = _instance(ec2), _instance(ec2)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": first}])
    aws.unsubscribe(seen.append)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": second}])
    assert [(e["type"], e["instance_id"]) for e in seen] == [("target_registered", first)]


def test_e1_e2_health_check_and_delay_ranges(aws):
    ec2, elbv2 = _clients()
    for bad in ({"HealthCheckIntervalSeconds": 301}, {"HealthyThresholdCount": 11}, {"UnhealthyThresholdCount": 11}):
        with pytest.raises(elbv2.exceptions.ClientError) as err:
            _tg(elbv2, ec2, name="bad", **bad)
        assert err.value.response["Error"]["Code"] == "ValidationError"
    arn = _tg(elbv2, ec2)
    with pytest.raises(elbv2.exceptions.ClientError) as err:
        elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckIntervalSeconds=301)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckIntervalSeconds=300, HealthyThresholdCount=10)
    elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3600"}])  # the documented maximum
    attrs = {a["Key"]: a["Value"] for a in elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "3600"
    with pytest.raises(elbv2.exceptions.ClientError) as err:
        elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "3601"}])
    assert err.value.response["Error"]["Code"] == "ValidationError"
