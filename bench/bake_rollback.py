"""Benchmark: a bake whose alarm fires, and the automatic rollback, at the local fleet (issue 12).

    scripts/with-infra.sh python bench/bake_rollback.py [--runs 3] [--bake 70] [--rate 50] [--json out.json]

Starts its own fleet through the public command (`bluegreen-localcloud up --state DIR`, `down` at the end), puts
the ALB 5xx alarm an operator writes for AWS (HTTPCode_Target_5XX_Count, Sum, by the stack's `LoadBalancer`
dimension), drives steady load through HAProxy, and runs `bluegreen deploy demo 2.0-bad --bake B --alarm A`:
2.0-bad passes /health, so the deploy flips, then answers 500 on `/`, so the alarm fires during the bake and the
deploy rolls itself back. Watched from this process, with every time on one clock (time.monotonic; the alarm's
StateUpdatedTimestamp and the deploy's log stamps are wall-clock times, moved onto it by one offset):
  flip      every server HAProxy routes to (the daemon's state.json) runs 2.0-bad;
  alarm     DescribeAlarms says ALARM (the figures use its StateUpdatedTimestamp; the observation lag is shown);
  restored  every routed server runs the old version again;
  exit      the deploy command returned (exit 1, naming the alarm).
Ratios, each against a floor computed from the fleet's own settings, in real seconds at its time scale:
  alarm floor    = Period x EvaluationPeriods + the metric publishing interval + the alarm's evaluation interval;
  rollback floor = the bake's poll interval + ExitStandby's Pending time + HealthyThresholdCount x the health
                   check interval + one poll.
Each run rolls back, so the fleet is where it started; --runs N prints each run, then the median and the max.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import boto3

from localcloud.aws.alarm_rules import evaluation_interval
from localcloud.aws.autoscaling import EXIT_STANDBY_SECONDS
from localcloud.fleet.daemon import CAPACITY, SERVICE, STATE_FILE, TIME_SCALE
from localcloud.fleet.load import LoadGenerator
from localcloud.fleet.metrics import PUBLISH_AWS_SECONDS
from localcloud.polling import wait_until

BIN = os.path.dirname(sys.executable)
BAD = "2.0-bad"  # healthy on /health, 500 on `/` (localcloud.sampleapp)
ALARM = "bench-bake-5xx"
# The alarm as the e2e test writes it: a 10 s high-resolution period, one period, at least 5 errors.
PERIOD_S, PERIODS, THRESHOLD = 10, 1, 5
# Wall clock minus monotonic clock, measured once: StateUpdatedTimestamp and log stamps onto time.monotonic.
WALL_OFFSET = time.time() - time.monotonic()


def mono(wall: float) -> float:
    return wall - WALL_OFFSET


def logged(stderr: str, marker: str) -> float | None:
    """Monotonic time of the first `bluegreen` progress line containing `marker` (`2026-...T...:SS.mmmZ text`)."""
    for line in stderr.splitlines():
        stamp, _, text = line.partition(" ")
        if marker in text:
            try:
                when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            return mono(when.timestamp())
    return None


class Fleet:
    """The local fleet behind `bluegreen-localcloud`, and the `bluegreen` CLI pointed at it."""

    def __init__(self, state_dir: str, poll_s: float) -> None:
        self.state_dir = state_dir
        self.poll_s = poll_s
        self.base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env: dict = {}
        self.lb_url = ""

    def localcloud(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "bluegreen-localcloud"), *args, "--state", self.state_dir],
                              env=self.base, capture_output=True, text=True, timeout=timeout, check=False)

    def up(self, *options: str) -> float:
        """`up` with `options` (e.g. --time-scale 1); returns its wall time."""
        started = time.monotonic()
        out = self.localcloud("up", "--lb-port", "0", "--timeout", "900", *options, timeout=960)
        if out.returncode != 0:
            raise SystemExit(f"bluegreen-localcloud up exited {out.returncode}: {out.stderr[-2000:]}")
        state = self.state()
        # What the fleet's env file exports (localcloud.fleet.daemon.env_lines), from its state file.
        self.env = dict(self.base, AWS_ENDPOINT_URL=state["aws_endpoint"], AWS_REGION=state["region"],
                        AWS_DEFAULT_REGION=state["region"], AWS_ACCESS_KEY_ID="testing",
                        AWS_SECRET_ACCESS_KEY="testing", BLUEGREEN_LB_URL=state["lb_url"])
        self.lb_url = state["lb_url"]
        return time.monotonic() - started

    def down(self) -> None:
        out = self.localcloud("down", timeout=180)
        if out.returncode != 0:
            print(f"bluegreen-localcloud down exited {out.returncode}: {out.stderr[-1000:]}", file=sys.stderr)

    def state(self) -> dict:
        try:
            with open(os.path.join(self.state_dir, STATE_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def routed(self) -> dict:
        """{version: servers} HAProxy routes to and finds up (the daemon rewrites state.json on every change)."""
        instances = (self.state().get("fleet") or {}).get("instances") or []
        return dict(collections.Counter(i["version"] for i in instances
                                        if i.get("state") == "running" and i.get("lb") == "routed, up"))

    def bluegreen(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "bluegreen"), *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def session(self):
        return boto3.session.Session(region_name=self.env["AWS_REGION"], aws_access_key_id="testing",
                                     aws_secret_access_key="testing")

    def client(self, name: str):
        return self.session().client(name, endpoint_url=self.env["AWS_ENDPOINT_URL"])


def put_alarm(cloudwatch, elbv2) -> dict:
    """The alarm as written for AWS: the stack's load balancer dimension (`app/NAME/ID`), unchanged."""
    (lb,) = elbv2.describe_load_balancers()["LoadBalancers"]
    cloudwatch.put_metric_alarm(
        AlarmName=ALARM, Namespace="AWS/ApplicationELB", MetricName="HTTPCode_Target_5XX_Count",
        Dimensions=[{"Name": "LoadBalancer", "Value": lb["LoadBalancerArn"].split(":loadbalancer/", 1)[1]}],
        Statistic="Sum", Period=PERIOD_S, EvaluationPeriods=PERIODS, Threshold=THRESHOLD,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching")
    return cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"][0]


def floors(alarm: dict, target_group: dict, poll_s: float) -> dict:
    """The two floors, in real seconds at the fleet's time scale, and their parts."""
    window = alarm["Period"] * alarm["EvaluationPeriods"] * TIME_SCALE
    publish = PUBLISH_AWS_SECONDS * TIME_SCALE
    evaluate = evaluation_interval(alarm["Period"]) * TIME_SCALE
    pending = EXIT_STANDBY_SECONDS * TIME_SCALE
    checks = target_group["HealthyThresholdCount"] * target_group["HealthCheckIntervalSeconds"] * TIME_SCALE
    return {"alarm": {"window_s": window, "publish_s": publish, "evaluate_s": evaluate,
                      "total_s": window + publish + evaluate},
            "rollback": {"bake_poll_s": poll_s, "exit_standby_s": pending, "health_checks_s": checks,
                         "poll_s": poll_s, "total_s": poll_s + pending + checks + poll_s}}


def at_rest(fleet: Fleet, cloudwatch, version: str) -> None:
    """No operation, HAProxy on the old version's CAPACITY servers only, the idle group empty, the alarm quiet
    (an alarm in ALARM refuses the next deploy, exit 3)."""
    def resting():
        out = fleet.bluegreen("status", SERVICE, "--output", "json")
        if out.returncode != 0:
            return None
        status = json.loads(out.stdout)
        idle = "green" if status["live"] == "blue" else "blue"
        state = cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"][0]["StateValue"]
        return (status["operation"] is None and not status["groups"][idle]["instances"] and state != "ALARM"
                and fleet.routed() == {version: CAPACITY})

    wait_until(resting, f"the fleet at rest on {version} with {ALARM} quiet", deadline_s=180.0, interval=0.5)


def one_run(fleet: Fleet, cloudwatch, version: str, args) -> dict:
    at_rest(fleet, cloudwatch, version)
    load = LoadGenerator(fleet.lb_url, rate=args.rate, max_seconds=600).start()
    marks: dict = {}
    try:
        time.sleep(2.0)  # a steady baseline of answers from the old version
        marks["start"] = time.monotonic()
        deploy = subprocess.Popen([os.path.join(BIN, "bluegreen"), "deploy", SERVICE, BAD, "--bake", str(args.bake),
                                   "--alarm", ALARM, "--poll-interval", str(args.poll_interval)],
                                  env=fleet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = marks["start"] + args.timeout
        while deploy.poll() is None and time.monotonic() < deadline:
            now, routed = time.monotonic(), fleet.routed()
            if "bad_routed" not in marks and routed.get(BAD):
                marks["bad_routed"] = now
            if "flip" not in marks and routed and set(routed) == {BAD}:
                marks["flip"] = now
            if "bad_routed" in marks and "alarm_seen" not in marks:
                alarm = cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"][0]
                if alarm["StateValue"] == "ALARM":
                    marks["alarm_seen"] = now
                    marks["alarm"] = mono(alarm["StateUpdatedTimestamp"].timestamp())
            if "alarm_seen" in marks and "restored" not in marks and routed and set(routed) == {version}:
                marks["restored"] = now
            time.sleep(0.05)
        if deploy.poll() is None:
            deploy.kill()
        _, stderr = deploy.communicate(timeout=60)
        marks["exit"] = time.monotonic()
        time.sleep(1.0)  # answers after the exit: the old version only
    finally:
        result = load.stop()
    missing = {"flip", "alarm", "restored"} - set(marks)
    if deploy.returncode != 1 or missing:
        raise SystemExit(f"deploy {BAD} exited {deploy.returncode}, not seen: {sorted(missing)}:\n{stderr[-3000:]}")
    # From the deploy's own progress lines: the bake poll that read ALARM, the ExitStandby call (after the old
    # instances finished EnteringStandby: ExitStandby takes Standby instances only), and the poll that found the
    # old fleet healthy (the next step scales the new group to 0).
    for mark, marker in (("rolling_back", "rolling back:"), ("exit_standby", "exit-standby:"),
                         ("old_healthy", "retire-new:")):
        marks[mark] = logged(stderr, marker)
    failed = [s.at for s in result.failures]
    return {"marks": marks, "exit_code": deploy.returncode, "last_line": stderr.strip().splitlines()[-1],
            "requests": result.total, "failed": len(failed),
            "failed_flip_to_restored": sum(1 for t in failed if marks["flip"] <= t < marks["restored"]),
            "first_failure": min(failed) if failed else None, "last_failure": max(failed) if failed else None,
            "stderr": stderr}


def between(marks: dict, first: str, then: str) -> float | None:
    return marks[then] - marks[first] if marks.get(first) is not None and marks.get(then) is not None else None


def figures(run: dict, floor: dict) -> dict:
    m = run["marks"]
    alarm_floor, rollback_floor = floor["alarm"]["total_s"], floor["rollback"]["total_s"]
    out = {
        "flip_to_alarm_s": m["alarm"] - m["flip"],
        "alarm_to_restored_s": m["restored"] - m["alarm"],
        "flip_to_restored_s": m["restored"] - m["flip"],
        "first_5xx_to_alarm_s": m["alarm"] - run["first_failure"] if run["first_failure"] else None,
        "bad_routed_to_flip_s": m["flip"] - m["bad_routed"],
        "alarm_observation_lag_s": m["alarm_seen"] - m["alarm"],
        "alarm_to_rolling_back_s": m["rolling_back"] - m["alarm"] if m.get("rolling_back") else None,
        "rolling_back_to_restored_s": m["restored"] - m["rolling_back"] if m.get("rolling_back") else None,
        "rolling_back_to_exit_standby_s": between(m, "rolling_back", "exit_standby"),
        "exit_standby_to_old_healthy_s": between(m, "exit_standby", "old_healthy"),
        "old_healthy_to_restored_s": between(m, "old_healthy", "restored"),
        "restored_to_exit_s": m["exit"] - m["restored"],
        "command_s": m["exit"] - m["start"],
        "requests": run["requests"], "failed": run["failed"], "failed_flip_to_restored": run["failed_flip_to_restored"],
        "failed_window_s": run["last_failure"] - run["first_failure"] if run["first_failure"] else None,
    }
    out["alarm_ratio"] = out["flip_to_alarm_s"] / alarm_floor
    out["rollback_ratio"] = out["alarm_to_restored_s"] / rollback_floor
    out["total_ratio"] = out["flip_to_restored_s"] / (alarm_floor + rollback_floor)
    return out


ROWS = (("flip -> alarm", "flip_to_alarm_s", "alarm_ratio"),
        ("alarm -> restored", "alarm_to_restored_s", "rollback_ratio"),
        ("flip -> restored", "flip_to_restored_s", "total_ratio"))
PARTS = (("first 5xx answered -> alarm", "first_5xx_to_alarm_s"),
         ("first 2.0-bad routed -> flip (all routed 2.0-bad)", "bad_routed_to_flip_s"),
         ("alarm -> deployer's bake poll read it ('rolling back')", "alarm_to_rolling_back_s"),
         ("'rolling back' -> restored", "rolling_back_to_restored_s"),
         ("  'rolling back' -> ExitStandby (old still EnteringStandby)", "rolling_back_to_exit_standby_s"),
         ("  ExitStandby -> the deployer saw the old fleet healthy", "exit_standby_to_old_healthy_s"),
         ("  old fleet healthy -> HAProxy routes the old only", "old_healthy_to_restored_s"),
         ("restored -> command exit", "restored_to_exit_s"),
         ("this script's ALARM observation after StateUpdatedTimestamp", "alarm_observation_lag_s"),
         ("failed requests (all)", "failed"), ("failed flip -> restored", "failed_flip_to_restored"),
         ("first -> last failed request", "failed_window_s"), ("requests", "requests"),
         ("deploy command wall time", "command_s"))


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:d}" if isinstance(value, int) else f"{value:.2f}"


def report(results: list, floor: dict, args) -> None:
    a, r = floor["alarm"], floor["rollback"]
    print(f"time scale {TIME_SCALE:g} (1 AWS s = {TIME_SCALE:g} real s); load {args.rate:g} req/s; "
          f"bake {args.bake:g} s, poll {args.poll_interval:g} s; {len(results)} run(s)")
    print(f"alarm floor    {a['total_s']:.2f} s = window {a['window_s']:.2f} (Period {PERIOD_S} x {PERIODS}) "
          f"+ publishing {a['publish_s']:.2f} + evaluation {a['evaluate_s']:.2f}")
    print(f"rollback floor {r['total_s']:.2f} s = bake poll {r['bake_poll_s']:.2f} + ExitStandby Pending "
          f"{r['exit_standby_s']:.2f} + health checks {r['health_checks_s']:.2f} + one poll {r['poll_s']:.2f}")
    runs = " ".join(f"{'run ' + str(i + 1):>8}" for i in range(len(results)))
    print(f"{'':62} {runs} {'median':>8} {'max':>8}")
    for name, key, ratio in ROWS:
        for label, field in ((f"{name} s", key), (f"{name} x floor", ratio)):
            values = [f[field] for f in results]
            print(f"{label:62} {' '.join(f'{fmt(v):>8}' for v in values)} "
                  f"{fmt(statistics.median(values)):>8} {fmt(max(values)):>8}")
    for label, field in PARTS:
        values = [f[field] for f in results]
        known = [v for v in values if v is not None]
        print(f"{label:62} {' '.join(f'{fmt(v):>8}' for v in values)} "
              f"{fmt(statistics.median(known) if known else None):>8} {fmt(max(known) if known else None):>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bake", type=float, default=70.0,
                        help="seconds; at least Period x EvaluationPeriods + 60 (the deployer refuses less)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second through HAProxy")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="the deploy's (and its bake's) poll")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds one deploy may take")
    parser.add_argument("--state", help="the fleet's state folder (default: a new temporary one)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--logs", help="write each deploy's progress lines (stderr) into this folder")
    args = parser.parse_args()
    logging.getLogger("localcloud.fleet.load").setLevel(logging.ERROR)  # one warning per failed request, else
    scratch = None if args.state else tempfile.mkdtemp(prefix="bench-bake-")
    fleet = Fleet(args.state or os.path.join(scratch, "state"), args.poll_interval)
    up_s = fleet.up()
    print(f"bluegreen-localcloud up: {up_s:.1f} s", flush=True)
    results, raw = [], []
    try:
        cloudwatch, elbv2 = fleet.client("cloudwatch"), fleet.client("elbv2")
        alarm = put_alarm(cloudwatch, elbv2)
        (target_group,) = elbv2.describe_target_groups()["TargetGroups"]
        floor = floors(alarm, target_group, args.poll_interval)
        status = json.loads(fleet.bluegreen("status", SERVICE, "--output", "json").stdout)
        version = status["groups"][status["live"]]["version"]
        for i in range(args.runs):
            run = one_run(fleet, cloudwatch, version, args)
            raw.append(run)
            results.append(figures(run, floor))
            f = results[-1]
            print(f"run {i + 1}: flip->alarm {f['flip_to_alarm_s']:.2f} s ({f['alarm_ratio']:.2f} x), "
                  f"alarm->restored {f['alarm_to_restored_s']:.2f} s ({f['rollback_ratio']:.2f} x), "
                  f"{f['failed']} of {f['requests']} requests failed; {run['last_line'][:160]}", flush=True)
            if args.logs:
                os.makedirs(args.logs, exist_ok=True)
                with open(os.path.join(args.logs, f"deploy-{i + 1}.log"), "w") as out:
                    out.write(run["stderr"])
        cloudwatch.delete_alarms(AlarmNames=[ALARM])
    finally:
        fleet.down()  # removes the state folder
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    report(results, floor, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"time_scale": TIME_SCALE, "floors": floor, "rate": args.rate, "bake_s": args.bake,
                       "poll_s": args.poll_interval, "runs": results}, out, indent=2)


if __name__ == "__main__":
    main()
