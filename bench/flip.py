"""Benchmark: `bluegreen` deploy, rollback and finalize at N emulated instances (issue 4).

    .venv/bin/python bench/flip.py [--sizes 10,100,1000] [--poll-interval 0.5] [--json out.json]

Runs the real console script against the emulated AWS (localcloud.aws) with target-group health checks at
1 s x 2 in real time, so a new target cannot turn `healthy` sooner than the health-check floor of 2 s (E1).
Launches and the rest of the AWS clock run 100x faster, so the figures show the deployer's own cost above
that floor. For each N it prints each command's wall time, as a ratio of the floor, and the AWS calls made.

Goals (issue 4): rollback within 1.2 x floor + 1 s; deploy leaving its health wait within one poll interval
of the last new instance turning healthy; calls growing as N/20. "batch calls" are the per-batch calls;
"other calls" are describes (polls, one per observation) and the single calls of each step.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import subprocess
import sys
import time

import boto3

from localcloud.aws import EmulatedAWS
from localcloud.scenario import create_service, wait_until_serving

BLUEGREEN = os.path.join(os.path.dirname(sys.executable), "bluegreen")
# The calls made once per batch of instance ids (20 a call, A1-A3; 100 for TerminateInstances).
BATCH_OPS = ("EnterStandby", "ExitStandby", "DetachInstances", "CreateTags", "TerminateInstances")
# The reads issue 10 added: pre-flight's (refreshes, warm pool, hooks, target groups and their attributes, the live
# group's policies), the launch wait's (DescribeTags for `bluegreen:running`, scaling activities when short of
# capacity, hooks) and the zone gate's (cross-zone settings). DescribePolicies is also the policy copy's own read.
NEW_READS = ("DescribeInstanceRefreshes", "DescribeWarmPool", "DescribeLifecycleHooks", "DescribeTargetGroups",
             "DescribeTargetGroupAttributes", "DescribeLoadBalancerAttributes", "DescribeScalingActivities",
             "DescribeTags", "DescribePolicies")


def run(args, poll):
    start = time.time()
    proc = subprocess.run([BLUEGREEN, *args, "--output", "json", "--poll-interval", str(poll), "--timeout", "900"],
                          capture_output=True, text=True, check=False)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"bluegreen {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return {"start": start, "end": end, "wall_s": end - start, "calls": summary["aws_calls"],
            "by_op": summary["aws_calls_by_op"],
            "attempts": summary["aws_attempts"], "in_command_s": summary["elapsed_s"], "stderr": proc.stderr}


def logged_at(stderr, marker):
    """Wall-clock time of the first progress line containing `marker` (lines start with an ISO UTC stamp)."""
    for line in stderr.splitlines():
        if marker in line:
            stamp = line.split(" ", 1)[0].rstrip("Z")
            return calendar.timegm(time.strptime(stamp.split(".")[0], "%Y-%m-%dT%H:%M:%S")) + \
                float("0." + stamp.split(".")[1])
    return None


def all_events(cloud, after):
    """Every event after `after` (EmulatedAWS.events answers at most 1000 at a time)."""
    out = []
    for _ in range(10000):
        page = cloud.events(after)
        if not page:
            break
        out += page
        after = page[-1]["seq"]
    return out


def deploy_lag(cloud, svc, after, floor):
    """When the last new target turned healthy (registration + floor, E1), and when the first EnterStandby was."""
    events = all_events(cloud, after)
    new, old = svc["groups"]["green"], svc["groups"]["blue"]
    registered = [e["time"] for e in events if e["type"] == "target_registered" and e["group"] == new]
    standby = [e["time"] for e in events if e["type"] == "instance_lifecycle_changed" and e["group"] == old
               and e.get("state") in ("EnteringStandby", "Standby")]
    return {"t": max(registered) + floor, "first_standby": min(standby)}


def last_seq(cloud):
    events = all_events(cloud, 0)
    return events[-1]["seq"] if events else 0


def bench(n, poll, floor, cloud, session):
    cloud.reset()
    # image=None: the pair names no image, so pre-flight's image check only warns (a registry listening on the
    # default port would not have bench:2.0, and the deployer's cost is what is measured here).
    svc = create_service(session, name="bench", capacity=n, subnet_cidr="10.0.0.0/18", deregistration_delay=2,
                         healthy_threshold=2, image=None)
    wait_until_serving(session, svc, timeout=120 + n)
    seq = last_seq(cloud)
    deploy = run(["deploy", "bench", "2.0"], poll)
    last_healthy = deploy_lag(cloud, svc, seq, floor)
    deploy["flip_lag_s"] = last_healthy["first_standby"] - last_healthy["t"]
    seen = logged_at(deploy["stderr"], f"{n}/{n} of {svc['groups']['green']} healthy")
    deploy["wait_lag_s"] = seen - last_healthy["t"]
    rollback = run(["rollback", "bench"], poll)
    run(["deploy", "bench", "2.0"], poll)
    finalize = run(["finalize", "bench"], poll)
    return {"n": n, "deploy": deploy, "rollback": rollback, "finalize": finalize}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--health-interval", type=float, default=1.0, help="real seconds between checks")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--logs", help="write each command's progress lines (stderr) into this folder")
    args = parser.parse_args()
    floor = args.health_interval * 2  # HealthyThresholdCount 2
    # As the tests do (tests/conftest.py): moto's ~3,500 default AMIs make each launched instance scan them all
    # (moto's Instance looks its image up by filter), 12 ms an instance; launches need no real AMI here.
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    cloud = EmulatedAWS(port=0, time_scale=0.01, health_interval=args.health_interval).start()
    os.environ.update(AWS_ENDPOINT_URL=cloud.endpoint, AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
                      AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ.pop("AWS_PROFILE", None)
    session = boto3.session.Session()
    results = []
    print(f"health-check floor {floor:g} s (1 s x 2), poll interval {args.poll_interval:g} s")
    print(f"{'N':>5} {'command':9} {'wall s':>7} {'x floor':>8} {'AWS calls':>9} {'batch calls':>11} "
          f"{'other calls':>11}  note")
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            res = bench(n, args.poll_interval, floor, cloud, session)
            results.append(res)
            if args.logs:
                os.makedirs(args.logs, exist_ok=True)
                for name in ("deploy", "rollback", "finalize"):
                    with open(os.path.join(args.logs, f"{n}-{name}.log"), "w") as f:
                        f.write(res[name]["stderr"])
            for name in ("deploy", "rollback", "finalize"):
                r = res[name]
                note = ""
                if name == "deploy":
                    note = (f"wait saw it {r['wait_lag_s']:+.2f} s and flip began {r['flip_lag_s']:+.2f} s after "
                            "the last new target turned healthy")
                if name == "rollback":
                    goal = 1.2 * floor + 1
                    note = f"goal <= {goal:.1f} s: {'met' if r['wall_s'] <= goal else 'MISSED'}"
                batched = sum(r["by_op"].get(op, 0) for op in BATCH_OPS)
                print(f"{n:>5} {name:9} {r['wall_s']:7.2f} {r['wall_s'] / floor:8.2f} {r['calls']:9d} "
                      f"{batched:11d} {r['calls'] - batched:11d}  {note}", flush=True)
                reads = {op: r["by_op"][op] for op in NEW_READS if r["by_op"].get(op)}
                if reads:
                    print(f"{'':>5} {'':9} issue-10 reads: {sum(reads.values())} "
                          f"({', '.join(f'{op} {k}' for op, k in reads.items())})", flush=True)
    finally:
        cloud.stop()
    if args.json:
        for res in results:
            for name in ("deploy", "rollback", "finalize"):
                res[name].pop("stderr", None)
        with open(args.json, "w") as f:
            json.dump({"floor_s": floor, "poll_interval_s": args.poll_interval, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
