"""Benchmark: a local instance's boot, from launch to healthy, on a booted machine and as a process (issue 14).

    scripts/with-infra.sh python bench/machine_boot.py [--rounds 2] [--json out.json]

Starts the local fleet twice in one run (`bluegreen-localcloud up --instances machines`, then `processes`), and
in each runs `bluegreen deploy demo 2.0` and `finalize`, `--rounds` times (each deploy launches 3 instances).
For machines it prints each instance's boot split from the fleet's state (seconds from the launch the fleet saw):
machine start (namespace, overlay, nspawn), cloud-init done, the agent unit's start and end (pull, compose up,
its own health wait, CONTINUE), and the target group's first `healthy` (HAProxy's checks at 1 s x 2, the fleet's
time scale 0.2). For both kinds it prints the deploy's wall time and the ratio machines / processes, measured in
the same run (this machine is shared and noisy: compare the ratio, not the seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from localcloud.fleet.daemon import read_env_lines as read_env

BIN = os.path.dirname(sys.executable)
SPLIT = ("machine_start", "cloud_init_done", "agent_start", "agent_done", "healthy")


def command(name, *args, env=None, timeout=900):
    out = subprocess.run([os.path.join(BIN, name), *args], env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out


def fleet_round(kind, rounds):
    state = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    started = time.monotonic()
    command("bluegreen-localcloud", "up", "--state", state, "--lb-port", "0", "--instances", kind, env=base)
    up_s = time.monotonic() - started
    env = dict(base, **read_env(os.path.join(state, "env")))
    deploys, timings = [], []
    try:
        for n in range(rounds):
            version = ("2.0", "1.0")[n % 2]
            started = time.monotonic()
            command("bluegreen", "deploy", "demo", version, "--poll-interval", "0.5", env=env)
            deploys.append(time.monotonic() - started)
            with open(os.path.join(state, "state.json")) as f:
                instances = json.load(f)["fleet"]["instances"]
            timings += [i["timings"] for i in instances if i.get("timings") and i["state"] == "running"
                        and i["version"] == version and "healthy" in i["timings"]]
            command("bluegreen", "finalize", "demo", "--poll-interval", "0.5", env=env)
    finally:
        command("bluegreen-localcloud", "down", "--state", state, env=base)
    return {"up_s": up_s, "deploy_s": deploys, "timings": timings}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = {kind: fleet_round(kind, args.rounds) for kind in ("machines", "processes")}
    machines, processes = results["machines"], results["processes"]
    print(f"{'kind':<10} {'up (s)':>8} {'deploy median (s)':>18}")
    for kind, r in results.items():
        print(f"{kind:<10} {r['up_s']:8.1f} {statistics.median(r['deploy_s']):18.1f}")
    ratio = statistics.median(machines["deploy_s"]) / statistics.median(processes["deploy_s"])
    print(f"deploy on machines / on processes: {ratio:.2f}")
    print(f"\nmachine boot split, seconds from launch (median of {len(machines['timings'])} instances):")
    for key in SPLIT:
        values = [t[key] for t in machines["timings"] if t.get(key) is not None]
        if values:
            print(f"  {key:<16} {statistics.median(values):6.2f}  (min {min(values):.2f}, max {max(values):.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
