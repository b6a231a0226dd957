"""Benchmark: around each step, how long both colours' workers consumed, or neither did (issue 16).

    scripts/with-infra.sh python bench/worker_windows.py [--json out.json]

Starts the local fleet on machines with the demo's marked `worker` service (`bluegreen-localcloud up --worker`,
`--time-scale 1`: AWS's own 15 s deregistration delay and 5 s x 2 health checks, so that a rollback right after
a deploy finds the old instances still draining). Every worker takes one message from the fleet's shared queue
every 0.2 s (localcloud/fleet/queue.py), as its instance id; the queue's log says who consumed when. Then:

1. `deploy 2.0`, then `rollback` once the old instances are in Standby (the ordinary path: ExitStandby);
2. `deploy 2.0`, then `rollback` at once, while the old instances still drain (the fast path, E8: they are
   registered with the target group directly and serve again while their group still says EnteringStandby, so
   their workers resume only in the `settled` stage, after the drain and ExitStandby).

For each step it prints, from the queue log (seconds, one run; the machine is shared and noisy):
- both: from the new colour's first message to the old colour's last one (0 if they do not overlap);
- neither: from the last message of the colour that stops to the first of the one that starts (0 if overlapped);
- after return: the last message of the colour that should have stopped, relative to the command's return
  (negative: before it; the deployer waits for the workers' tags, so this must be negative).
For the fast rollback also: from the moment the old fleet serves HTTP again (the deployer's `restored` line) to
its workers' first message.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from datetime import datetime

from machine_boot import command  # bench/: run as `python bench/worker_windows.py`

from localcloud.fleet.daemon import read_env_lines as read_env


def colours(env):
    """{instance id: colour} of the pair now."""
    status = json.loads(command("bluegreen", "status", "demo", "--output", "json", env=env).stdout)
    return {i["id"]: color for color, g in status["groups"].items() for i in g["instances"]}


def queue_log(state):
    with open(os.path.join(state, "state.json")) as f:
        url = json.load(f)["queue_url"]
    with urllib.request.urlopen(url + "/log", timeout=10) as resp:
        return json.loads(resp.read())


def line_time(stderr, needle):
    """The wall time of the deployer's first log line containing `needle` (its lines start with an ISO stamp)."""
    for line in stderr.splitlines():
        if needle in line:
            stamp = line.split(" ", 1)[0]
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


def timed(env, *args):
    started = time.time()
    out = command("bluegreen", *args, "--poll-interval", "1", env=env)
    return started, time.time(), out.stderr


def windows(log, who, start, old, new, ended):
    """Seconds: both, neither, and the stopping colour's last message after the command returned."""
    old_takes = [r["at"] for r in log if who.get(r["who"]) == old and r["at"] >= start - 5]
    new_takes = [r["at"] for r in log if who.get(r["who"]) == new and r["at"] >= start]
    if not old_takes or not new_takes:
        raise SystemExit(f"no messages taken by {old if not old_takes else new} around the step: {len(log)} in all")
    # The colour that stops: deploy stops `old`; a rollback stops `new` (it names them the other way round).
    return {"both_s": max(0.0, old_takes[-1] - new_takes[0]), "neither_s": max(0.0, new_takes[0] - old_takes[-1]),
            "last_after_return_s": old_takes[-1] - ended}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    state = tempfile.mkdtemp(prefix="bench-workers-")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    command("bluegreen-localcloud", "up", "--state", state, "--lb-port", "0", "--worker", "--time-scale", "1",
            env=base)
    env = dict(base, **read_env(os.path.join(state, "env")))
    results = {}
    try:
        who = colours(env)
        for name, fast in (("ordinary", False), ("fast", True)):
            time.sleep(3)
            start, end, _ = timed(env, "deploy", "demo", "2.0")
            who.update(colours(env))
            log = queue_log(state)
            results[f"deploy ({name} round)"] = windows(log, who, start, "blue", "green", end)
            if not fast:
                time.sleep(20)  # the 15 s drain is over: the old instances are in Standby
            start, end, err = timed(env, "rollback", "demo")
            time.sleep(3)
            log = queue_log(state)
            # Rollback: green stops, blue starts again.
            res = windows(log, who, start, "green", "blue", end)
            restored = line_time(err, "rollback restored") or line_time(err, "retire-new")
            blue_first = min(r["at"] for r in log if who.get(r["who"]) == "blue" and r["at"] >= start)
            res["fast_path"] = "register-draining" in err
            if restored is not None:
                res["serving_without_workers_s"] = max(0.0, blue_first - restored)
            results[f"rollback ({name})"] = res
    finally:
        command("bluegreen-localcloud", "down", "--state", state, env=base)
    print(f"{'step':<26} {'both (s)':>9} {'neither (s)':>12} {'stopping colour last, after return (s)':>40}")
    for step, r in results.items():
        print(f"{step:<26} {r['both_s']:9.1f} {r['neither_s']:12.1f} {r['last_after_return_s']:40.1f}")
        if "serving_without_workers_s" in r:
            print(f"  {'fast path' if r['fast_path'] else 'ordinary path'}: the old fleet served HTTP "
                  f"{r['serving_without_workers_s']:.1f} s before its workers took a message")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
