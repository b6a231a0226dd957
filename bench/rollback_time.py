"""Benchmark: rollback recovery time at AWS's own timings, beside the same rollback done as a relaunch (issue 13).

    scripts/with-infra.sh python bench/rollback_time.py [--part both|fleet|emulator] [--json out.json]
        [--sizes 10,100,1000] [--scale 0.1] [--big-mb 150] [--logs DIR]

Two parts, each reported in AWS seconds:

fleet     the local fleet (`bluegreen-localcloud up --time-scale 1 --boot-seconds 30 --instances processes`): real agents, real containers,
          HAProxy, at time scale 1 (1 AWS s = 1 real s), N = 3, ALB health checks 5 s x 2, deregistration delay 30 s.
          The old version is a sample image with a ~150 MB layer of random data, pushed to the local registry and
          removed from the engine before each deploy of it, so every launch of it pulls cold. In one run:
            deploy OLD (cold pull), finalize; deploy NEW; `rollback` at once (during the 30 s drain);
            deploy NEW, finalize, remove OLD's image; relaunch: `deploy demo OLD` (cold pull), finalize;
            delay 300 s: deploy NEW; `rollback` 1 s after the flip (the whole drain ahead of it).
          `restored` = the first moment every server HAProxy routes to runs the old version (the daemon's
          state.json, as bench/bake_rollback.py observes it); `settled` = the command's exit. For a deploy or a
          relaunch, the same column is its flip: every routed server runs the version it deployed.
emulator  the emulated AWS alone (localcloud.aws, as bench/flip.py uses it) at one uniform time scale (--scale,
          default 0.1: 1 AWS s = 0.1 real s), N = 10, 100, 1000; health checks 5 s x 2 and 30 s x 5 (ELB's
          defaults); deregistration delays 0, 30 and 300 s (`rollback` right after each deploy), then one relaunch.
          It routes no requests: `restored` is read from target states, the time every old target turned
          `healthy` (its registration + HealthyThresholdCount x interval, E1) and every new one left service
          (`draining`, E2), from the emulator's event log. The deployer's own cost (its calls to the emulator) is
          also divided by the scale, so at large N it is inflated 1/scale times: `deployer real s` shows it.

Floors, from the pair's own settings (AWS s):
  rollback  HealthyThresholdCount x interval (E1) + one poll, when the old instances still drain (they stay
            EnteringStandby until the deregistration delay ends, A1, and the rollback registers them directly,
            E8); + ExitStandby's Pending (5 s) when they are in Standby already (A2). Before issue 13 the
            rollback waited for the drain first: the drain left was part of the floor (rollback_floor);
  deploy and relaunch  boot (launch to the agent's start, BOOT_S below) + Pending:Proceed (2 s, fleet: the launch
            hook) + HealthyThresholdCount x interval + one poll; the agent's pull and start are above it.

Launch and boot times: AWS publishes none (aws-rules.md, localcloud/aws/autoscaling.py LAUNCH_SECONDS is
"(unverified) typical"). BOOT_S = 30 AWS s is an assumption taken from third-party measurements of launch to SSH:
  - Colin Percival, "EC2 boot time benchmarking" (2021-08-12,
    https://www.daemonology.net/blog/2021-08-12-EC2-boot-time-benchmarking.html): ec2-boot-bench's example run,
    RunInstances 1.5 s + pending -> running 4.9 s + running -> port 22 closed 17.2 s + closed -> open 5.6 s = 29.2 s;
  - brevdev/ec2-coldboot-research (https://github.com/brevdev/ec2-coldboot-research, `@fix_plan.md`): a cold
    launch to SSH of 25.8 s on average (pending -> running 16.4-16.6 s, whatever the instance family);
  - Marty Sweet, "EC2 Launch Times" (October 2023, https://www.martysweet.co.uk/ec2-launch-times/): Amazon Linux
    2023 the fastest general-purpose AMI; EBS encryption slows launches.
The emulator's launch (Pending -> InService, no hook: LAUNCH_SECONDS = 30) is the same 30 s; it pulls nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import boto3
from bake_rollback import BIN, Fleet, logged

from localcloud import sampleapp
from localcloud.aws import EmulatedAWS
from localcloud.aws.autoscaling import EXIT_STANDBY_SECONDS, LAUNCH_SECONDS, PROCEED_SECONDS
from localcloud.fleet.service import REPOSITORY
from localcloud.polling import wait_until
from localcloud.scenario import create_service, wait_until_serving

SERVICE = "demo"
NEW = "2.0"
BIG = "1.1-big"  # the fleet's old version: 1.0's app plus a large layer of random data
BOOT_S = 30.0  # launch -> the agent starts (cited in the docstring)
FLEET_DELAYS = (30, 300)
EMULATOR_HEALTH = ((5, 2), (30, 5))
EMULATOR_DELAYS = (0, 30, 300)


# -- the big image -----------------------------------------------------------------------------------------


def rollback_floor(drain_left, checks, poll):
    """A rollback's floor to `restored` (issue 13): old instances still draining are registered directly (E8), so
    only their health checks and a poll; once in Standby, ExitStandby's Pending comes first (A2). Before issue 13
    the drain left came first as well (the "before" figures in docs/benchmarks.md)."""
    return (0.0 if drain_left > 0 else EXIT_STANDBY_SECONDS) + checks + poll

def build_big_image(registry: str, megabytes: int) -> dict:
    """<registry>/demo-web:BIG, FROM scratch like the sample app, plus one layer of random data; pushed, then
    removed from the engine so that the first instance to run it pulls it cold."""
    ref = f"{registry}/{REPOSITORY}:{BIG}"
    with tempfile.TemporaryDirectory(prefix="bench-big-") as folder:
        sampleapp._context(folder, BIG, healthy=True)
        with open(os.path.join(folder, "blob"), "wb") as blob:
            # random: no registry or engine compresses it away
            blob.writelines(os.urandom(1 << 20) for _ in range(megabytes))
        with open(os.path.join(folder, "Dockerfile"), "a") as dockerfile:
            dockerfile.write("COPY blob /blob\n")
        started = time.monotonic()
        sampleapp._docker(["build", "-q", "-t", ref, folder], timeout=600, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    sampleapp._docker(["push", ref], timeout=600)
    size = int(sampleapp._docker(["image", "inspect", "--format", "{{.Size}}", ref]).strip())
    built = time.monotonic() - started
    remove_image(ref)
    return {"ref": ref, "bytes": size, "build_push_s": built}


def remove_image(ref: str) -> None:
    """Remove the image and every tag on it (the agent's retag to the fixed tag too), once no container uses it."""
    def removed():
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            return True
        subprocess.run(["docker", "image", "rm", "-f", out.stdout.strip()], capture_output=True, check=False)
        return False

    wait_until(removed, f"{ref} removed from the engine", deadline_s=120.0, interval=1.0)


# -- the local fleet ----------------------------------------------------------------------------------------

class TimedFleet(Fleet):
    def command(self, args: list, old: str, new: str, timeout: float, start_at: float | None = None) -> dict:
        """Run `bluegreen ARGS`, watching state.json: `restored` is the first moment every routed server runs
        `old`; `flip` the first moment they all run `new` (a deploy's)."""
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.monotonic()))
        marks = {"start": time.monotonic()}
        proc = subprocess.Popen([os.path.join(BIN, "bluegreen"), *args, "--poll-interval", str(self.poll_s),
                                 "--timeout", "3600"], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = marks["start"] + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            routed = self.routed()
            if routed and set(routed) == {old} and "restored" not in marks:
                marks["restored"] = time.monotonic()
            if routed and set(routed) == {new} and "flip" not in marks:
                marks["flip"] = time.monotonic()
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=60)
        marks["exit"] = time.monotonic()
        if proc.returncode != 0:
            raise SystemExit(f"bluegreen {' '.join(args)} exited {proc.returncode}:\n{stderr[-3000:]}")
        marks["enter_standby"] = logged(stderr, "enter-standby:")
        marks["exit_standby"] = logged(stderr, "exit-standby:")
        return {"marks": marks, "stderr": stderr, "args": args}

    def set_delay(self, seconds: int) -> None:
        elbv2 = self.client("elbv2")
        (group,) = elbv2.describe_target_groups()["TargetGroups"]
        elbv2.modify_target_group_attributes(TargetGroupArn=group["TargetGroupArn"], Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": str(seconds)}])

    def target_group(self) -> dict:
        (group,) = self.client("elbv2").describe_target_groups()["TargetGroups"]
        return group


def fleet_part(args, logs: list) -> dict:
    scratch = tempfile.mkdtemp(prefix="bench-rollback-")
    fleet = TimedFleet(os.path.join(scratch, "state"), args.fleet_poll)
    # Process instances: BOOT_S stands for EC2's whole launch and boot (a published measurement), which a
    # machine's own ~3 s boot would add to; the figures in docs/benchmarks.md were measured so.
    up_s = fleet.up("--time-scale", "1", "--boot-seconds", str(BOOT_S), "--instances", "processes")
    print(f"fleet: bluegreen-localcloud up (time scale 1, boot {BOOT_S:g} s): {up_s:.1f} s", flush=True)
    rows = []
    try:
        state = fleet.state()
        os.environ["DOCKER_HOST"] = state["docker_host"]
        image = build_big_image(state["registry"], args.big_mb)
        print(f"fleet: {image['ref']}: {image['bytes'] / 1e6:.0f} MB, built and pushed in "
              f"{image['build_push_s']:.1f} s, removed from the engine", flush=True)
        tg = fleet.target_group()
        checks = tg["HealthyThresholdCount"] * tg["HealthCheckIntervalSeconds"]
        launch_floor = BOOT_S + PROCEED_SECONDS + checks + args.fleet_poll
        status = json.loads(fleet.bluegreen("status", SERVICE, "--output", "json").stdout)
        first = status["groups"][status["live"]]["version"]

        def step(name, cmd, old, new, timeout=900.0, start_at=None):
            run = fleet.command(cmd, old, new, timeout, start_at)
            logs.append((f"fleet-{name}", run["stderr"]))
            print(f"fleet: {name}: {run['marks']['exit'] - run['marks']['start']:.1f} s", flush=True)
            return run["marks"]

        def rollback_row(case, delay, deploy, rollback):
            drain_left = max(0.0, deploy["flip"] + delay - rollback["start"])
            floor = rollback_floor(drain_left, checks, args.fleet_poll)
            return {"part": "fleet", "n": 3, "health": f"{tg['HealthCheckIntervalSeconds']}x{tg['HealthyThresholdCount']}",
                    "delay_s": delay, "case": case, "restored_s": rollback["restored"] - rollback["start"],
                    "settled_s": rollback["exit"] - rollback["start"], "floor_s": floor, "drain_left_s": drain_left,
                    "after_flip_s": rollback["start"] - deploy["flip"]}

        fleet.set_delay(FLEET_DELAYS[0])
        cold = step(f"deploy {BIG} (cold pull)", ["deploy", SERVICE, BIG], first, BIG)
        rows.append({"part": "fleet", "n": 3, "delay_s": FLEET_DELAYS[0], "case": f"deploy {BIG}, cold pull",
                     "restored_s": cold["flip"] - cold["start"], "settled_s": cold["exit"] - cold["start"],
                     "floor_s": launch_floor})
        step("finalize", ["finalize", SERVICE], BIG, BIG)
        deploy = step(f"deploy {NEW}", ["deploy", SERVICE, NEW], BIG, NEW)
        rows.append({"part": "fleet", "n": 3, "delay_s": FLEET_DELAYS[0], "case": f"deploy {NEW}, image warm",
                     "restored_s": deploy["flip"] - deploy["start"], "settled_s": deploy["exit"] - deploy["start"],
                     "floor_s": launch_floor})
        rollback = step("rollback at once", ["rollback", SERVICE], BIG, NEW)
        rows.append(rollback_row("rollback right after the deploy", FLEET_DELAYS[0], deploy, rollback))
        step(f"deploy {NEW} again", ["deploy", SERVICE, NEW], BIG, NEW)
        step("finalize", ["finalize", SERVICE], NEW, NEW)
        remove_image(image["ref"])
        relaunch = step(f"relaunch: deploy {BIG} (cold pull)", ["deploy", SERVICE, BIG], NEW, BIG)
        rows.append({"part": "fleet", "n": 3, "delay_s": FLEET_DELAYS[0], "case": f"relaunch: deploy {BIG}, cold pull",
                     "restored_s": relaunch["flip"] - relaunch["start"],
                     "settled_s": relaunch["exit"] - relaunch["start"], "floor_s": launch_floor})
        step("finalize", ["finalize", SERVICE], BIG, BIG)
        fleet.set_delay(FLEET_DELAYS[1])
        deploy = step(f"deploy {NEW} (delay {FLEET_DELAYS[1]} s)", ["deploy", SERVICE, NEW], BIG, NEW)
        late = step("rollback 1 s after the flip", ["rollback", SERVICE], BIG, NEW, timeout=1800.0,
                    start_at=deploy["flip"] + 1.0)
        rows.append(rollback_row("rollback 1 s after the flip", FLEET_DELAYS[1], deploy, late))
    finally:
        fleet.down()
        shutil.rmtree(scratch, ignore_errors=True)
    relaunched = rows[3]["restored_s"]
    for row in rows:
        row["ratio"] = row["restored_s"] / row["floor_s"]
        if row["case"].startswith("rollback"):
            row["relaunch_over_rollback"] = relaunched / row["restored_s"]
    return {"up_s": up_s, "image": image, "poll_s": args.fleet_poll, "boot_s": BOOT_S, "rows": rows}


# -- the emulator -------------------------------------------------------------------------------------------

def all_events(cloud, after: int) -> list:
    out = []
    while True:
        page = cloud.events(after)
        if not page:
            return out
        out += page
        after = page[-1]["seq"]


def emulator_command(cloud, args: list, poll: float) -> dict:
    after = all_events(cloud, 0)
    seq = after[-1]["seq"] if after else 0
    start = time.time()
    proc = subprocess.run([os.path.join(BIN, "bluegreen"), *args, "--output", "json", "--poll-interval", str(poll),
                           "--timeout", "7200"], capture_output=True, text=True, check=False)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"bluegreen {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"start": start, "end": end, "events": all_events(cloud, seq), "stderr": proc.stderr,
            "calls": json.loads(proc.stdout)["aws_calls"]}


def served_by(run: dict, group: str, checks_real: float, others: str) -> float:
    """Real time when every request reaches `group`: its last target registered during the run turned healthy
    (E1), and the last target of `others` was deregistered (draining, E2)."""
    events = run["events"]
    healthy = [e["time"] + checks_real for e in events if e["type"] == "target_registered" and e["group"] == group]
    gone = [e["time"] for e in events if e["type"] == "target_deregistered" and e["group"] == others]
    return max(healthy + gone)


def emulator_case(cloud, session, n: int, health: tuple, args, logs: list) -> list:
    interval, threshold = health
    scale, poll = args.scale, args.emulator_poll
    checks = interval * threshold
    cloud.reset()
    cloud.configure_time(time_scale=scale)
    svc = create_service(session, name="bench", capacity=n, subnet_cidr="10.0.0.0/17", deregistration_delay=0,
                         health_interval=interval, healthy_threshold=threshold, image=None)
    wait_until_serving(session, svc, timeout=(LAUNCH_SECONDS + checks) * scale + 120 + n, poll=0.5)
    elbv2 = session.client("elbv2")
    blue, green = svc["groups"]["blue"], svc["groups"]["green"]
    label = f"{interval}x{threshold}"
    launch_floor = LAUNCH_SECONDS + checks + poll / scale
    rows = []

    def aws(real: float) -> float:
        return real / scale

    def timed(name, cmd):
        run = emulator_command(cloud, cmd, poll)
        logs.append((f"emulator-{n}-{label}-{name}", run["stderr"]))
        return run

    for delay in EMULATOR_DELAYS:
        elbv2.modify_target_group_attributes(TargetGroupArn=svc["target_group_arn"], Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
        deploy = timed(f"deploy-{delay}", ["deploy", "bench", NEW])
        flipped = served_by(deploy, green, checks * scale, blue)
        standby = max(e["time"] for e in deploy["events"] if e["type"] == "target_deregistered" and e["group"] == blue)
        rows.append({"part": "emulator", "n": n, "health": label, "delay_s": delay, "case": f"deploy {NEW}",
                     "restored_s": aws(flipped - deploy["start"]), "settled_s": aws(deploy["end"] - deploy["start"]),
                     "floor_s": launch_floor, "deployer_real_s": deploy["end"] - deploy["start"],
                     "calls": deploy["calls"]})
        rollback = timed(f"rollback-{delay}", ["rollback", "bench"])
        drain_left = max(0.0, aws(standby - rollback["start"]) + delay)
        rows.append({"part": "emulator", "n": n, "health": label, "delay_s": delay,
                     "case": "rollback right after the deploy",
                     "restored_s": aws(served_by(rollback, blue, checks * scale, green) - rollback["start"]),
                     "settled_s": aws(rollback["end"] - rollback["start"]),
                     "floor_s": rollback_floor(drain_left, checks, poll / scale), "drain_left_s": drain_left,
                     "deployer_real_s": rollback["end"] - rollback["start"], "calls": rollback["calls"]})
        print(f"emulator: N={n} {label} delay {delay}: deploy {rows[-2]['restored_s']:.1f} s, rollback restored "
              f"{rows[-1]['restored_s']:.1f} s (floor {rows[-1]['floor_s']:.1f} s), settled "
              f"{rows[-1]['settled_s']:.1f} s", flush=True)
    # The relaunch: NEW everywhere and the old instances gone, then the old version deployed on new instances.
    elbv2.modify_target_group_attributes(TargetGroupArn=svc["target_group_arn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])
    timed("deploy-again", ["deploy", "bench", NEW])
    timed("finalize", ["finalize", "bench"])
    relaunch = timed("relaunch", ["deploy", "bench", "1.0"])
    restored = aws(served_by(relaunch, blue, checks * scale, green) - relaunch["start"])
    rows.append({"part": "emulator", "n": n, "health": label, "delay_s": 0, "case": "relaunch: deploy 1.0",
                 "restored_s": restored, "settled_s": aws(relaunch["end"] - relaunch["start"]),
                 "floor_s": launch_floor, "deployer_real_s": relaunch["end"] - relaunch["start"],
                 "calls": relaunch["calls"]})
    print(f"emulator: N={n} {label}: relaunch restored {restored:.1f} s", flush=True)
    for row in rows:
        row["ratio"] = row["restored_s"] / row["floor_s"]
        if row["case"].startswith("rollback"):
            row["relaunch_over_rollback"] = restored / row["restored_s"]
    return rows


def emulator_part(args, logs: list) -> dict:
    # As bench/flip.py: moto's ~3,500 default AMIs make every launch scan them all.
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    cloud = EmulatedAWS(port=0, time_scale=args.scale).start()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION",
                                              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    os.environ.update(AWS_ENDPOINT_URL=cloud.endpoint, AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
                      AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ.pop("AWS_PROFILE", None)
    rows = []
    try:
        session = boto3.session.Session()
        for n in (int(x) for x in args.sizes.split(",")):
            for health in EMULATOR_HEALTH:
                rows += emulator_case(cloud, session, n, health, args, logs)
    finally:
        cloud.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"scale": args.scale, "poll_real_s": args.emulator_poll, "poll_aws_s": args.emulator_poll / args.scale,
            "rows": rows}


# -- the report ---------------------------------------------------------------------------------------------

def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict) -> None:
    header = (f"{'part':8} {'N':>5} {'checks':>6} {'delay':>5}  {'case':42} {'restored':>8} {'settled':>8} "
              f"{'floor':>7} {'x floor':>7} {'relaunch/':>9} {'deployer':>8}")
    if "fleet" in results:
        f = results["fleet"]
        print(f"\nfleet: time scale 1 (AWS seconds in real time); boot {f['boot_s']:g} s (assumed, cited); poll "
              f"{f['poll_s']:g} s; old version {f['image']['ref'].rsplit(':', 1)[1]}, {f['image']['bytes'] / 1e6:.0f} MB, "
              "pulled cold")
    if "emulator" in results:
        e = results["emulator"]
        print(f"emulator: time scale {e['scale']:g} (1 AWS s = {e['scale']:g} real s), figures in AWS s; poll "
              f"{e['poll_real_s']:g} real s = {e['poll_aws_s']:g} AWS s; launch {LAUNCH_SECONDS:g} s, no pull")
    print(header)
    print(f"{'':8} {'':>5} {'':>6} {'(s)':>5}  {'':42} {'(s)':>8} {'(s)':>8} {'(s)':>7} {'':>7} {'rollback':>9} "
          f"{'real s':>8}")
    for part in ("fleet", "emulator"):
        for row in results.get(part, {}).get("rows", []):
            print(f"{part:8} {row['n']:>5} {row.get('health', '5x2'):>6} {row['delay_s']:>5}  {row['case']:42} "
                  f"{fmt(row['restored_s']):>8} {fmt(row['settled_s']):>8} {fmt(row['floor_s']):>7} "
                  f"{fmt(row['ratio'], 2):>7} {fmt(row.get('relaunch_over_rollback'), 2):>9} "
                  f"{fmt(row.get('deployer_real_s'), 2):>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("both", "fleet", "emulator"), default="both")
    parser.add_argument("--sizes", default="10,100,1000", help="the emulator's N")
    parser.add_argument("--scale", type=float, default=0.1, help="the emulator's time scale (real s per AWS s)")
    parser.add_argument("--emulator-poll", type=float, default=0.25, help="the deployer's poll on the emulator, real s")
    parser.add_argument("--fleet-poll", type=float, default=1.0, help="the deployer's poll on the fleet, s")
    parser.add_argument("--big-mb", type=int, default=150, help="MB of random data in the old version's image")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--logs", help="write each command's progress lines (stderr) into this folder")
    args = parser.parse_args()
    started, results, logs = time.monotonic(), {}, []
    try:
        if args.part in ("both", "fleet"):
            results["fleet"] = fleet_part(args, logs)
        if args.part in ("both", "emulator"):
            results["emulator"] = emulator_part(args, logs)
    finally:
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for i, (name, text) in enumerate(logs):
                with open(os.path.join(args.logs, f"{i:02d}-{name.replace(' ', '_')}.log"), "w") as out:
                    out.write(text)
    report(results)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
