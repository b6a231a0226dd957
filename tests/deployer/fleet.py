"""What the deployer's tests look at a service with, and the real `bluegreen` console script as a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import boto3
from botocore.config import Config

from tests.helpers import wait_until

BLUEGREEN = os.path.join(os.path.dirname(sys.executable), "bluegreen")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Poll fast: the emulated clock runs 100x (tests/conftest.py), so a 5 s x 2 health check takes 0.1 s.
FAST = {"BLUEGREEN_POLL_INTERVAL": "0.05", "BLUEGREEN_TIMEOUT": "60"}


def run_bluegreen(*args, env=None, timeout=180, crash_at=None):
    """Run the real console script; return the CompletedProcess (stdout, stderr as text). With `crash_at`
    ("step[:n]"), run it through tests/deployer/crashing.py, which SIGKILLs it just before that step."""
    full_env = dict(os.environ, **FAST)
    full_env.update(env or {})
    argv = [sys.executable, "-m", "tests.deployer.crashing", crash_at, *args] if crash_at else [BLUEGREEN, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
                          cwd=REPO)


def last_error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bluegreen: error:")]
    assert len(lines) == 1, f"expected one error line on stderr, got:\n{proc.stderr}"
    return lines[0]


@contextlib.contextmanager
def unhealthy_launches(cloud, group):
    """Every instance `group` launches meanwhile fails its health check (E1), as a broken version would.

    EmulatedAWS keeps subscribers across reset(), so the callback is switched off on the way out.
    """
    active = threading.Event()
    active.set()

    def on_event(ev):
        if active.is_set() and ev["type"] == "instance_launched" and ev.get("group") == group:
            cloud.set_target_health(ev["instance_id"], "unhealthy")

    cloud.subscribe(on_event)
    try:
        yield
    finally:
        active.clear()


class HealthSampler:
    """A second client sampling DescribeTargetHealth while a command runs (the issue's safety property)."""

    def __init__(self, target_group_arn, interval=0.01):
        self.arn, self.interval = target_group_arn, interval
        self.client = boto3.client("elbv2", config=Config(retries={"mode": "standard", "max_attempts": 10}))
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            descs = self.client.describe_target_health(TargetGroupArn=self.arn)["TargetHealthDescriptions"]
            self.samples.append(sum(1 for d in descs if d["TargetHealth"]["State"] == "healthy"))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def minimum(self):
        assert len(self.samples) >= 5, f"only {len(self.samples)} health samples were taken"
        return min(self.samples)


class Fleet:
    """What a test needs to look at the service: a boto3 session and short helpers."""

    def __init__(self, session, svc):
        self.session, self.svc = session, svc
        self.asg = session.client("autoscaling")
        self.ec2 = session.client("ec2")
        self.elbv2 = session.client("elbv2")

    def group(self, color):
        name = self.svc["groups"][color]
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def tags(self, color):
        return {t["Key"]: t["Value"] for t in self.group(color)["Tags"]}

    def sizes(self, color):
        g = self.group(color)
        return (g["MinSize"], g["DesiredCapacity"], g["MaxSize"])

    def lifecycles(self, color):
        return {i["InstanceId"]: i["LifecycleState"] for i in self.group(color)["Instances"]}

    def target_states(self):
        descs = self.elbv2.describe_target_health(TargetGroupArn=self.svc["target_group_arn"])
        return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in descs["TargetHealthDescriptions"]}

    def healthy(self):
        return {i for i, s in self.target_states().items() if s == "healthy"}

    def ec2_states(self, ids):
        if not ids:
            return {}
        res = self.ec2.describe_instances(InstanceIds=list(ids))["Reservations"]
        return {i["InstanceId"]: i["State"]["Name"] for r in res for i in r["Instances"]}

    def complete_hooks(self, color, result="CONTINUE"):
        """Do what the agent does once its stack is up (A6); return how many instances passed the hook."""
        group = self.group(color)
        for inst in group["Instances"]:
            if inst["LifecycleState"] == "Pending:Wait":
                self.asg.complete_lifecycle_action(
                    LifecycleHookName=self.svc["lifecycle_hook"], AutoScalingGroupName=group["AutoScalingGroupName"],
                    LifecycleActionResult=result, InstanceId=inst["InstanceId"])
        return sum(1 for i in group["Instances"] if i["LifecycleState"] not in ("Pending", "Pending:Wait"))

    def wait_for(self, predicate, what, timeout=30.0):
        return wait_until(predicate, what, deadline_s=timeout)

    # -- end states ----------------------------------------------------------------------------------

    def assert_flipped(self, live, n, version):
        old = "green" if live == "blue" else "blue"
        new_ids = self.lifecycles(live)
        assert sorted(new_ids.values()) == ["InService"] * n
        assert set(new_ids) <= self.healthy()
        assert self.tags(live)["bluegreen:version"] == version
        assert sorted(self.lifecycles(old).values()) == ["Standby"] * n
        assert not set(self.lifecycles(old)) & self.healthy()
        assert self.sizes(old)[:2] == (0, 0)
        assert "action=deploy;phase=flipped;version=" + version in self.tags(live)["bluegreen:operation"]

    def assert_serving_only(self, live, n, version=None):
        idle = "green" if live == "blue" else "blue"
        ids = self.lifecycles(live)
        assert sorted(ids.values()) == ["InService"] * n
        assert set(ids) <= self.healthy()
        assert self.sizes(idle) == (0, 0, 0)
        for color in ("blue", "green"):
            tags = self.tags(color)
            assert not {"bluegreen:operation", "bluegreen:saved-sizes", "bluegreen:saved-suspended"} & set(tags)
        if version:
            assert self.tags(live)["bluegreen:version"] == version
        assert self.group(live)["SuspendedProcesses"] == []
