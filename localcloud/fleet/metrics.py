"""HAProxy's counters as CloudWatch metrics, under the names and dimensions an ALB publishes them by.

An alarm written for AWS then works unchanged against the local fleet (issue 12). Every publishing interval
the fleet reads HAProxy's `show stat`, takes the difference with the previous read, and sends it with
PutMetricData:
- namespace `AWS/ApplicationELB`, dimensions `LoadBalancer` (`app/NAME/ID`, from the emulated load balancer's
  ARN) and `LoadBalancer` + `TargetGroup` (`targetgroup/NAME/ID`): `RequestCount`, `HTTPCode_Target_2XX_Count`,
  `HTTPCode_Target_5XX_Count`, `HTTPCode_ELB_5XX_Count` (5xx HAProxy answered itself: the frontends' 5xx minus
  the servers'), `TargetResponseTime` (seconds; HAProxy's per-server average `rtime` weighted by each
  server's requests in the interval, an approximation);
- namespace `BlueGreen/App` (APP_NAMESPACE), dimension `AutoScalingGroupName`: `HTTPCode_Target_5XX_Count`
  per group, from each server's counters (a server is an instance, and the fleet knows its group). AWS has no
  per-group load balancer metric, and a canary shares the target group with the live fleet: `canary --alarm`
  needs such a metric, which on AWS the app or the agent must publish (docs/deployer.md).
As the ALB documentation says of these metrics ("Reporting criteria: There is a nonzero value"; no requests,
no data), a count of zero is not sent: alarms on them want TreatMissingData notBreaching. Counts go as
statistic sets of ones (Minimum = Maximum = 1, Sum = SampleCount = the count), as ELB's do.
The pure functions (read_counters, deltas, metric_data) are tested without HAProxy.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from localcloud.fleet import FleetError

log = logging.getLogger(__name__)

ELB_NAMESPACE = "AWS/ApplicationELB"
APP_NAMESPACE = "BlueGreen/App"
GROUP_DIMENSION = "AutoScalingGroupName"
# AWS seconds between two publications (ELB sends every 60 s; smaller batches give the same period sums and
# let a short test see them sooner). Scaled by the fleet's time scale.
PUBLISH_AWS_SECONDS = 10.0
_STATUS_COLUMNS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
_MAX_DATA_PER_CALL = 20  # PutMetricData's historical limit per request; the current one is higher


class ServerCounters(NamedTuple):
    requests: int  # every response the server gave (the sum of its hrsp_* columns)
    ok: int  # hrsp_2xx
    errors: int  # hrsp_5xx
    rtime_ms: float  # HAProxy's average response time over the server's last 1024 requests


class Counters(NamedTuple):
    requests: int  # every frontend's req_tot
    errors: int  # every frontend's hrsp_5xx (the servers' and HAProxy's own)
    servers: dict  # name (an instance id) -> ServerCounters, over every backend (the zone nodes' copies too)


def _int(row: dict, column: str) -> int:
    try:
        return int(row.get(column) or 0)
    except ValueError:
        return 0


def read_counters(rows: list[dict]) -> Counters:
    """`show stat` rows (LoadBalancer.stats) -> the counters the metrics come from."""
    requests = errors = 0
    servers: dict[str, ServerCounters] = {}
    for row in rows:
        kind = row.get("svname")
        if kind == "FRONTEND":
            requests += _int(row, "req_tot")
            errors += _int(row, "hrsp_5xx")
        elif kind != "BACKEND":
            name = kind or ""
            before = servers.get(name, ServerCounters(0, 0, 0, 0.0))
            count = sum(_int(row, c) for c in _STATUS_COLUMNS)
            rtime = float(_int(row, "rtime")) if count else before.rtime_ms
            servers[name] = ServerCounters(before.requests + count, before.ok + _int(row, "hrsp_2xx"),
                                           before.errors + _int(row, "hrsp_5xx"), max(rtime, before.rtime_ms))
    return Counters(requests, errors, servers)


def _since(now: int, before: int) -> int:
    return now - before if now >= before else now  # a counter that went down was reset: all of it is new


def deltas(previous: Counters | None, current: Counters) -> Counters:
    """What happened between two reads. The first read is the baseline (nothing yet); a server that appeared
    since the previous read was added with zeroed counters, so all of its counts are new."""
    if previous is None:
        zero = ServerCounters(0, 0, 0, 0.0)
        return Counters(0, 0, {name: zero for name in current.servers})
    servers = {}
    for name, now in current.servers.items():
        before = previous.servers.get(name, ServerCounters(0, 0, 0, 0.0))
        servers[name] = ServerCounters(_since(now.requests, before.requests), _since(now.ok, before.ok),
                                       _since(now.errors, before.errors), now.rtime_ms)
    return Counters(_since(current.requests, previous.requests), _since(current.errors, previous.errors), servers)


def _count(name: str, dims: list[dict], value: int) -> dict:
    return {"MetricName": name, "Dimensions": dims, "Unit": "Count",
            "StatisticValues": {"SampleCount": value, "Sum": value, "Minimum": 1, "Maximum": 1}}


def _server_data(delta: Counters, members: set, dims: list[dict]) -> list[dict]:
    chosen = [s for name, s in delta.servers.items() if name in members]
    data = []
    for name, value in (("HTTPCode_Target_2XX_Count", sum(s.ok for s in chosen)),
                        ("HTTPCode_Target_5XX_Count", sum(s.errors for s in chosen))):
        if value > 0:
            data.append(_count(name, dims, value))
    answered = [s for s in chosen if s.requests > 0]
    total = sum(s.requests for s in answered)
    if total:
        seconds = [s.rtime_ms / 1000.0 for s in answered]
        data.append({"MetricName": "TargetResponseTime", "Dimensions": dims, "Unit": "Seconds",
                     "StatisticValues": {"SampleCount": total, "Minimum": min(seconds), "Maximum": max(seconds),
                                         "Sum": sum(s.rtime_ms / 1000.0 * s.requests for s in answered)}})
    return data


def metric_data(delta: Counters, load_balancer: str | None, target_groups: dict, group_of: dict) -> dict:
    """{namespace: [MetricDatum]} for one interval's deltas.

    load_balancer: the `app/NAME/ID` dimension value (None: no load balancer in front, no ELB metrics);
    target_groups: {`targetgroup/NAME/ID`: set of instance ids registered with it};
    group_of: {instance id: Auto Scaling group name}."""
    out: dict[str, list[dict]] = {ELB_NAMESPACE: [], APP_NAMESPACE: []}
    if load_balancer:
        lb_dims = [{"Name": "LoadBalancer", "Value": load_balancer}]
        if delta.requests > 0:
            out[ELB_NAMESPACE].append(_count("RequestCount", lb_dims, delta.requests))
        elb_errors = delta.errors - sum(s.errors for s in delta.servers.values())
        if elb_errors > 0:
            out[ELB_NAMESPACE].append(_count("HTTPCode_ELB_5XX_Count", lb_dims, elb_errors))
        out[ELB_NAMESPACE] += _server_data(delta, set(delta.servers), lb_dims)
        for target_group, members in sorted(target_groups.items()):
            dims = [{"Name": "LoadBalancer", "Value": load_balancer}, {"Name": "TargetGroup", "Value": target_group}]
            served = sum(s.requests for name, s in delta.servers.items() if name in members)
            if served > 0:
                out[ELB_NAMESPACE].append(_count("RequestCount", dims, served))
            out[ELB_NAMESPACE] += _server_data(delta, members, dims)
    per_group: dict[str, int] = {}
    for name, server in delta.servers.items():
        if server.errors > 0 and group_of.get(name):
            per_group[group_of[name]] = per_group.get(group_of[name], 0) + server.errors
    for group, errors in sorted(per_group.items()):
        out[APP_NAMESPACE].append(_count("HTTPCode_Target_5XX_Count",
                                         [{"Name": GROUP_DIMENSION, "Value": group}], errors))
    return {namespace: data for namespace, data in out.items() if data}


def dimension_of(arn: str) -> str:
    """`arn:...:loadbalancer/app/NAME/ID` -> `app/NAME/ID`; `arn:...:targetgroup/NAME/ID` -> `targetgroup/NAME/ID`
    (the forms AWS/ApplicationELB's dimensions take)."""
    resource = arn.split(":", 5)[-1]
    return resource.split("/", 1)[1] if resource.startswith("loadbalancer/") else resource


class MetricsPublisher:
    """Publishes the fleet's load balancer metrics every `interval` seconds until stop().

    lb: the fleet's haproxy.LoadBalancer; cloudwatch, elbv2: boto3 clients; layout: a callable returning
    ({target group ARN: set of instance ids}, {instance id: group name}) as the supervisor last saw them."""

    def __init__(self, lb: Any, cloudwatch: Any, elbv2: Any, layout: Callable[[], tuple[dict, dict]],
                 interval: float) -> None:
        self.lb = lb
        self.cloudwatch = cloudwatch
        self.elbv2 = elbv2
        self.layout = layout
        self.interval = interval
        self.published = 0  # PutMetricData calls that succeeded
        self.last_error: str | None = None
        self._previous: Counters | None = None
        self._load_balancers: dict[str, str | None] = {}  # target group ARN -> its load balancer's ARN
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsPublisher:
        self._thread = threading.Thread(target=self._loop, name="fleet-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self, deadline_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(deadline_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish_once()
                self.last_error = None
            except (FleetError, BotoCoreError, ClientError, OSError) as exc:
                if str(exc) != self.last_error:  # once per distinct error: a daemon outlives a failed read
                    log.warning("fleet metrics: publishing failed, retrying: %s", exc)
                self.last_error = str(exc)

    def _load_balancer_of(self, target_group_arn: str) -> str | None:
        if not self._load_balancers.get(target_group_arn):  # none yet: a listener may come later
            group = self.elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"][0]
            self._load_balancers[target_group_arn] = next(iter(group.get("LoadBalancerArns") or []), None)
        return self._load_balancers[target_group_arn]

    def publish_once(self) -> dict:
        """Read, difference, send; returns what was sent ({namespace: [MetricDatum]})."""
        current = read_counters(self.lb.stats())
        delta = deltas(self._previous, current)
        self._previous = current
        members, group_of = self.layout()
        # HAProxy stands for one load balancer in front of the followed target groups (E4).
        load_balancer = next((arn for arn in map(self._load_balancer_of, sorted(members)) if arn), None)
        data = metric_data(delta, dimension_of(load_balancer) if load_balancer else None,
                           {dimension_of(arn): ids for arn, ids in members.items()}, group_of)
        for namespace, items in data.items():
            for start in range(0, len(items), _MAX_DATA_PER_CALL):
                self.cloudwatch.put_metric_data(Namespace=namespace, MetricData=items[start:start + _MAX_DATA_PER_CALL])
                self.published += 1
        return data
