"""The fleet's load balancer metrics (localcloud/fleet/metrics.py): HAProxy's counters, differenced per
interval, under AWS/ApplicationELB's names and dimensions and per Auto Scaling group; and, with a real
HAProxy and the emulated AWS, an alarm written for AWS goes to ALARM when the served version answers 5xx."""

import functools

import boto3
import pytest
from botocore.config import Config

from localcloud.fleet.control import ControlClient
from localcloud.fleet.haproxy import LoadBalancer
from localcloud.fleet.load import LoadGenerator
from localcloud.fleet.metrics import (
    APP_NAMESPACE,
    ELB_NAMESPACE,
    Counters,
    MetricsPublisher,
    ServerCounters,
    deltas,
    dimension_of,
    metric_data,
    read_counters,
)
from localcloud.fleet.supervisor import FleetSupervisor
from localcloud.scenario import create_service
from tests.helpers import wait_until

LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/demo-alb/6af54c13682ecbdf"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo-tg/cc7062d5d11fa98f"


def row(pxname, svname, **counters):
    return {"# pxname": pxname, "svname": svname, **{k: str(v) for k, v in counters.items()}}


STATS = [row("lb", "FRONTEND", req_tot=12, hrsp_2xx=7, hrsp_5xx=5),
         row("app", "i-1", hrsp_2xx=7, hrsp_5xx=1, rtime=20),
         row("app", "i-2", hrsp_5xx=3, hrsp_4xx=1, rtime=40),
         row("app", "BACKEND", hrsp_2xx=7, hrsp_5xx=5),
         row("lb_us-east-1a", "FRONTEND", req_tot=3, hrsp_5xx=1),  # a zone node (E6)
         row("app_us-east-1a", "i-2", hrsp_5xx=1, rtime=50)]


def test_counters_sum_frontends_and_each_servers_copies():
    counters = read_counters(STATS)
    assert (counters.requests, counters.errors) == (15, 6)
    assert counters.servers == {"i-1": ServerCounters(8, 7, 1, 20.0), "i-2": ServerCounters(5, 0, 4, 50.0)}


def test_deltas_start_from_a_baseline_count_new_servers_whole_and_survive_a_reset():
    first = read_counters(STATS)
    assert deltas(None, first) == Counters(0, 0, {"i-1": ServerCounters(0, 0, 0, 0.0),
                                                 "i-2": ServerCounters(0, 0, 0, 0.0)})
    later = Counters(20, 8, {"i-1": ServerCounters(10, 9, 1, 25.0), "i-3": ServerCounters(2, 1, 1, 5.0)})
    assert deltas(first, later) == Counters(5, 2, {"i-1": ServerCounters(2, 2, 0, 25.0),
                                                   "i-3": ServerCounters(2, 1, 1, 5.0)})
    restarted = Counters(1, 0, {})
    assert deltas(later, restarted) == Counters(1, 0, {})  # counters went down: all of it is new


def by_name(data):
    return {(d["MetricName"], tuple(sorted((x["Name"], x["Value"]) for x in d["Dimensions"]))): d
            for d in data}


def test_metric_data_uses_albs_names_and_dimensions_and_a_per_group_5xx_count():
    delta = Counters(15, 6, {"i-1": ServerCounters(8, 7, 1, 20.0), "i-2": ServerCounters(5, 0, 4, 50.0),
                             "i-9": ServerCounters(0, 0, 0, 0.0)})
    data = metric_data(delta, dimension_of(LB_ARN), {dimension_of(TG_ARN): {"i-1"}},
                       {"i-1": "demo-blue", "i-2": "demo-green"})
    elb, app = by_name(data[ELB_NAMESPACE]), by_name(data[APP_NAMESPACE])
    lb = (("LoadBalancer", "app/demo-alb/6af54c13682ecbdf"),)
    tg = (*lb, ("TargetGroup", "targetgroup/demo-tg/cc7062d5d11fa98f"))
    assert elb[("RequestCount", lb)]["StatisticValues"] == {"SampleCount": 15, "Sum": 15, "Minimum": 1,
                                                           "Maximum": 1}
    assert elb[("HTTPCode_Target_5XX_Count", lb)]["StatisticValues"]["Sum"] == 5
    assert elb[("HTTPCode_ELB_5XX_Count", lb)]["StatisticValues"]["Sum"] == 1  # 6 answered, 5 by servers
    assert elb[("HTTPCode_Target_2XX_Count", lb)]["StatisticValues"]["Sum"] == 7
    assert elb[("HTTPCode_Target_5XX_Count", tg)]["StatisticValues"]["Sum"] == 1  # only i-1 is in it
    assert elb[("RequestCount", tg)]["StatisticValues"]["Sum"] == 8
    response = elb[("TargetResponseTime", lb)]
    assert response["Unit"] == "Seconds"
    assert response["StatisticValues"]["SampleCount"] == 13
    assert response["StatisticValues"]["Sum"] / 13 == pytest.approx((8 * 0.020 + 5 * 0.050) / 13)
    assert {dims[0][1]: d["StatisticValues"]["Sum"] for (name, dims), d in app.items()} == {
        "demo-blue": 1, "demo-green": 4}  # i-9 sent nothing: no 5xx, no datum
    assert {name for name, _ in app} == {"HTTPCode_Target_5XX_Count"}


def test_zero_counts_are_not_sent_and_without_a_load_balancer_only_the_group_metric_is():
    quiet = Counters(0, 0, {"i-1": ServerCounters(0, 0, 0, 3.0)})
    assert metric_data(quiet, "app/x/1", {"targetgroup/t/1": {"i-1"}}, {"i-1": "g"}) == {}
    failing = Counters(2, 2, {"i-1": ServerCounters(2, 0, 2, 3.0)})
    assert list(metric_data(failing, None, {}, {"i-1": "g"})) == [APP_NAMESPACE]


def test_dimension_values_are_the_arn_resource_parts_aws_uses():
    assert dimension_of(LB_ARN) == "app/demo-alb/6af54c13682ecbdf"
    assert dimension_of(TG_ARN) == "targetgroup/demo-tg/cc7062d5d11fa98f"


# -- against a real HAProxy and the emulated AWS ------------------------------------------------------------

SCALE = 0.05  # Period 60 is 3 s; the fleet publishes every 10 AWS s (0.5 s)
RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
wait = functools.partial(wait_until, deadline_s=30.0, interval=0.2)


@pytest.fixture
def fleet(aws, tmp_path, fake_instance):
    aws.configure_time(time_scale=SCALE, health_interval=300)  # the emulation's own timer: out of reach
    session = boto3.session.Session()
    svc = create_service(session, name="svc", capacity=2, version="1.0", health_interval=5, healthy_threshold=2,
                         deregistration_delay=30, load_balancer=True)
    elbv2 = session.client("elbv2", config=RETRIES)
    lb = LoadBalancer(str(tmp_path / "lb")).start()
    supervisor = FleetSupervisor(ControlClient(aws.endpoint), session.client("autoscaling", config=RETRIES), elbv2,
                                 lb, str(tmp_path), aws.endpoint, "us-east-1", "unused", time_scale=SCALE,
                                 poll_interval=0.05, instance_factory=fake_instance).start()
    cloudwatch = session.client("cloudwatch", config=RETRIES)
    publisher = MetricsPublisher(lb, cloudwatch, elbv2, supervisor.layout, 10 * SCALE).start()
    yield svc, cloudwatch, lb, supervisor, publisher
    publisher.stop()
    supervisor.stop()
    lb.stop()


def state(cloudwatch, name):
    return cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


@pytest.mark.haproxy
def test_an_alarm_written_for_aws_fires_when_the_served_version_answers_5xx(fleet):
    svc, cloudwatch, lb, supervisor, publisher = fleet
    wait(lambda: supervisor.routed_count() == 2, "both instances healthy and routed")
    common = {"Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 5,
              "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching"}
    # What an operator writes for an ALB: the load balancer's own dimension, its ARN's resource part.
    cloudwatch.put_metric_alarm(AlarmName="lb-5xx", Namespace="AWS/ApplicationELB",
                                MetricName="HTTPCode_Target_5XX_Count", Dimensions=[
                                    {"Name": "LoadBalancer", "Value": dimension_of(svc["load_balancer_arn"])}],
                                **common)
    cloudwatch.put_metric_alarm(AlarmName="blue-5xx", Namespace="BlueGreen/App",
                                MetricName="HTTPCode_Target_5XX_Count", Dimensions=[
                                    {"Name": "AutoScalingGroupName", "Value": svc["groups"]["blue"]}], **common)
    load = LoadGenerator(lb.url, rate=40, max_seconds=60).start()
    try:
        wait(lambda: state(cloudwatch, "lb-5xx") == "OK" and publisher.published > 0, "requests, no 5xx: OK")
        served = cloudwatch.get_metric_statistics(
            Namespace="AWS/ApplicationELB", MetricName="RequestCount", Statistics=["Sum"], Period=60,
            Dimensions=[{"Name": "LoadBalancer", "Value": dimension_of(svc["load_balancer_arn"])}],
            StartTime="2000-01-01T00:00:00Z", EndTime="2100-01-01T00:00:00Z")["Datapoints"]
        assert sum(d["Sum"] for d in served) > 0
        for instance in list(supervisor.instances.values()):
            instance.backend.status = 500  # the bad release: health checks still pass
        wait(lambda: state(cloudwatch, "lb-5xx") == "ALARM", "the load balancer's 5xx alarm to fire")
        wait(lambda: state(cloudwatch, "blue-5xx") == "ALARM", "the group's 5xx alarm to fire")
        assert supervisor.routed_count() == 2  # nothing a health check would have caught
        for instance in list(supervisor.instances.values()):
            instance.backend.status = 200
        wait(lambda: state(cloudwatch, "lb-5xx") == "OK", "the alarm to clear once the 5xx stop")
    finally:
        load.stop()
