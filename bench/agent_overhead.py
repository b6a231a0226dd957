"""How much time `bluegreen-agent run` adds on top of the Docker work it performs.

In one run, against the emulated AWS (in this process, over HTTP), an IMDSv2 emulator, the real Docker engine,
the local registry and compose v2, for a stack of the app and a sidecar from another repository:
  1. time `bluegreen-agent run` on a first boot (the pull of every image + compose up + health), from a clean
     engine;
  2. from the same clean state, time the same work done by hand: `docker pull` of the app and of the sidecar,
     `docker compose up -d --pull never`, and the wait for the app's health URL (polled every 0.05 s), held for
     the agent's stability window (`health_stable_s`), which the health rule requires by design;
  3. overhead = (1) - (2); and the command's start-up time (`bluegreen-agent --help`).
Repeated --runs times; medians are reported. Goals (issue 2): overhead < 1 s, --help < 0.3 s.

    set -a; . .infra/env; set +a
    .venv/bin/python bench/agent_overhead.py [--runs 5] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import boto3
import yaml

from agent import contract
from agent.settings import LOCAL_DEFAULTS
from localcloud.aws import EmulatedAWS
from localcloud.imds import IMDSServer
from localcloud.ports import free_port
from localcloud.sampleapp import build_and_push, write_bundle

REGION = "us-east-1"
BIN = os.path.dirname(sys.executable)
AGENT = os.path.join(BIN, "bluegreen-agent")


def docker(*args, env=None, timeout=300):
    subprocess.run(["docker", *args], check=True, capture_output=True, env=env, timeout=timeout)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wait_healthy(url, deadline_s=60.0, hold_s=0.0):
    """Until the URL answers 200 and keeps answering it for hold_s (the agent's stability window, docs/agent.md
    "Health": that wait is the health rule's, not the agent's overhead)."""
    until = time.monotonic() + deadline_s
    last, since = "no answer", None
    while time.monotonic() < until:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    since = time.monotonic() if since is None else since
                    if time.monotonic() - since >= hold_s:
                        return
                else:
                    since, last = None, f"HTTP {resp.status}"
        except OSError as exc:
            since, last = None, type(exc).__name__
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy within {deadline_s}s (last: {last})")


class Bench:
    def __init__(self, registry, folder):
        self.uid = uuid.uuid4().hex[:8]
        self.registry, self.folder = registry, folder
        self.repository = "bgbench-" + self.uid
        self.image = f"{registry}/{self.repository}"
        self.fixed = f"{self.image}:live"
        self.project = "bgbench-" + self.uid
        # The sidecar: the sample app again, from a repository of its own, on a port of its own.
        self.sidecar = f"{registry}/bgbench-side-{self.uid}:side"
        self.port = free_port()
        self.side_port = free_port()
        self.health_url = f"http://127.0.0.1:{self.port}/health"
        self.workdir = os.path.join(folder, "work")
        self.bundle = os.path.join(folder, "bundle")

    def setup(self, endpoint):
        build_and_push(self.registry, repository=self.repository, versions=("1.0",))
        build_and_push(self.registry, repository=self.sidecar.split("/", 1)[1].split(":")[0], versions=("side",))
        write_bundle(self.bundle, self.registry, repository=self.repository, manifest=False)
        compose_path = os.path.join(self.bundle, contract.COMPOSE_FILE)
        with open(compose_path, "a") as f:
            f.write(f"  side:\n    image: \"{self.sidecar}\"\n    network_mode: host\n"
                    "    environment:\n      APP_PORT: \"${SIDE_PORT}\"\n")
        with open(compose_path, "rb") as f:
            doc = contract.build_manifest([(contract.COMPOSE_FILE, contract.sha256_hex(f.read()))])
        with open(os.path.join(self.bundle, contract.MANIFEST), "wb") as f:
            f.write(contract.manifest_bytes(doc))
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench-bootstrap")
        for name in ("docker-compose.yml", "manifest.json"):
            with open(os.path.join(self.bundle, name), "rb") as f:
                s3.put_object(Bucket="bench-bootstrap", Key="web/" + name, Body=f.read())
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/20")["Subnet"]["SubnetId"]
        template = ec2.create_launch_template(LaunchTemplateName="bench", LaunchTemplateData={
            "ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateId"]
        asg = boto3.client("autoscaling", region_name=REGION, endpoint_url=endpoint)
        asg.create_auto_scaling_group(
            AutoScalingGroupName="bench", MinSize=0, MaxSize=2, DesiredCapacity=1, VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": template},
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": False, "ResourceId": "bench",
                   "ResourceType": "auto-scaling-group"} for k, v in {
                "bluegreen:version": "1.0", "bluegreen:image": self.image,
                "bluegreen:bootstrap": "s3://bench-bootstrap/web/",
                "bluegreen:health-url": "http://127.0.0.1:${APP_PORT}/health"}.items()])
        until = time.monotonic() + 30
        while time.monotonic() < until:
            instances = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["bench"])["AutoScalingGroups"][0][
                "Instances"]
            if instances:
                return instances[0]["InstanceId"]
            time.sleep(0.1)
        raise RuntimeError("the bench group launched no instance within 30 s")

    def clean(self):
        """Back to a clean first boot: no containers, no local copy of the image, no work folder."""
        out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=" + self.project],
                             check=True, capture_output=True, text=True).stdout.split()
        if out:
            docker("rm", "-f", *out)
        for ref in (self.fixed, self.image + ":1.0", self.sidecar):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def agent_run(self, env, config_path):
        result = subprocess.run([AGENT, "run", "--config", config_path, "--workdir", self.workdir], env=env,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"bluegreen-agent run failed ({result.returncode}): {result.stderr[-800:]}")
        return json.loads(result.stdout)

    def by_hand(self, env):
        pull = timed(lambda: docker("pull", "-q", self.image + ":1.0"))
        pull_side = timed(lambda: docker("pull", "-q", self.sidecar))
        docker("tag", self.image + ":1.0", self.fixed)
        up = timed(lambda: docker("compose", "-p", self.project, "-f", os.path.join(self.bundle, "docker-compose.yml"),
                                  "up", "-d", "--remove-orphans", "--pull", "never", env=env))
        health = timed(lambda: wait_healthy(self.health_url, hold_s=LOCAL_DEFAULTS["health_stable_s"]))
        return pull, pull_side, up, health


def median_of(samples, key):
    return statistics.median(s[key] for s in samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    registry = os.environ.get("BLUEGREEN_REGISTRY", "127.0.0.1:5000")
    # The emulated AWS takes any credentials; these keep boto3 (here and in the agent) from looking further.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                      AWS_DEFAULT_REGION=REGION)
    cloud = EmulatedAWS(port=0, region=REGION).start()
    folder = tempfile.mkdtemp(prefix="bgbench-")
    bench = Bench(registry, folder)
    imds = None
    try:
        instance_id = bench.setup(cloud.endpoint)
        imds = IMDSServer(instance_id, region=REGION, aws_endpoint=cloud.endpoint).start()
        env = dict(os.environ, AWS_ENDPOINT_URL=cloud.endpoint, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint,
                   APP_PORT=str(bench.port), SIDE_PORT=str(bench.side_port))
        config_path = os.path.join(folder, "agent.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump({"compose_project": bench.project, "compose_env": {
                "APP_PORT": str(bench.port), "SIDE_PORT": str(bench.side_port)}}, f)
        samples, steps = [], []
        for _ in range(args.runs):
            bench.clean()
            start = time.perf_counter()
            outcome = bench.agent_run(env, config_path)
            total = time.perf_counter() - start
            steps.append(outcome["steps"])
            bench.clean()
            pull, pull_side, up, health = bench.by_hand(env)
            samples.append({"agent_total_s": total, "docker_pull_s": pull, "docker_pull_sidecar_s": pull_side,
                            "compose_up_s": up, "health_wait_s": health,
                            "overhead_s": total - pull - pull_side - up - health})
        help_times = [timed(lambda: subprocess.run([AGENT, "--help"], check=True, capture_output=True))
                      for _ in range(7)]
    finally:
        bench.clean()
        subprocess.run(["docker", "rmi", "-f", bench.fixed, bench.sidecar], capture_output=True, check=False)
        if imds:
            imds.stop()
        cloud.stop()
        shutil.rmtree(folder, ignore_errors=True)
    result = {key: round(median_of(samples, key), 3) for key in samples[0]}
    result.update(runs=args.runs, help_s=round(statistics.median(help_times), 3),
                  load_average_1m=round(os.getloadavg()[0], 2), cpus=os.cpu_count(),
                  agent_steps_s={k: round(statistics.median(s[k] for s in steps), 3) for k in steps[0]},
                  overhead_max_s=round(max(s["overhead_s"] for s in samples), 3))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"bluegreen-agent run (first boot), median of {args.runs}: {result['agent_total_s']:.3f} s")
        print(f"  docker pull {result['docker_pull_s']:.3f} s + sidecar {result['docker_pull_sidecar_s']:.3f} s, "
              f"compose up {result['compose_up_s']:.3f} s, health wait {result['health_wait_s']:.3f} s (by hand)")
        print(f"  agent overhead: median {result['overhead_s']:.3f} s, max {result['overhead_max_s']:.3f} s "
              f"(goal < 1 s)")
        print("  the agent's own step timings (median): "
              + ", ".join(f"{k} {v:.3f} s" for k, v in result["agent_steps_s"].items()))
        print(f"bluegreen-agent --help: median {result['help_s']:.3f} s (goal < 0.3 s)")
        print(f"machine: {result['cpus']} CPUs, 1-minute load average {result['load_average_1m']} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
