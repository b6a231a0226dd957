"""The background process behind `bluegreen-localcloud up`: the whole fleet on loopback until SIGTERM.

    python -m localcloud.fleet.daemon --state .localcloud [--lb-port 0]

It starts (or reuses) the Docker engine and registry (localcloud.infra, recording what it started), the
emulated AWS, HAProxy and the fleet supervisor; pushes the sample app and creates the `demo` service; then
records its state in STATE/state.json (atomically, on every change) until it is told to stop, when it stops
and removes everything it made, in reverse order.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from agent.contract import atomic_write
from localcloud.fleet import FleetError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
ENV_FILE = "env"
PID_FILE = "serve.pid"
LOG_FILE = "serve.log"
INFRA_RECORD = "infra-started.json"

# One clock for the whole fleet (aws-rules.md E1/E2/A6 in AWS seconds, run 5x faster): the target group's
# 5 s x 2 health check becomes HAProxy's 1 s x 2, a 15 s deregistration delay drains in 3 s. The default;
# `--time-scale 1` runs AWS's own timings in real time (bench/rollback_time.py).
TIME_SCALE = 0.2
# The emulation's own timer would call a target healthy without a request; the fleet feeds real checks
# instead, so its timer is set out of reach (300 s x threshold).
OUT_OF_REACH_HEALTH_INTERVAL = 300.0
SERVICE = "demo"
CAPACITY = 3
VERSIONS = ("1.0", "2.0", "3.0", "2.0-bad")  # 2.0-bad: healthy, but 500 on `/` (sampleapp.failing)
UNHEALTHY_VERSIONS = ("3.0",)


def env_lines(aws_endpoint: str, region: str, lb_url: str, docker_host: str, registry: str) -> str:
    values = {
        "AWS_ENDPOINT_URL": aws_endpoint, "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
        # Dummy credentials: the emulation accepts any; real ones must never be sent to it.
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "BLUEGREEN_LB_URL": lb_url, "DOCKER_HOST": docker_host, "BLUEGREEN_REGISTRY": registry,
    }
    return "".join(f"export {k}={v}\n" for k, v in values.items()) + "unset AWS_PROFILE AWS_SESSION_TOKEN\n"


def read_env_lines(path: str) -> dict:
    """What env_lines wrote, as {name: value} (the tests and the benchmarks read a fleet's env file)."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                env[key] = value
    return env


class Daemon:
    def __init__(self, state_dir: str, lb_port: int = 0, region: str = "us-east-1", infra_dir: str = ".infra",
                 ready_deadline_s: float = 300.0, time_scale: float = TIME_SCALE, boot_seconds: float = 0.0,
                 instances: str = "machines", image_root: str | None = None, worker: bool = False) -> None:
        self.state_dir = os.path.abspath(state_dir)
        # "machines": every instance boots the baked image with systemd-nspawn (localcloud/machines.py);
        # "processes": the agent as a process on this host's engine (a host without root or nspawn).
        self.instances = instances
        self.image_root = image_root
        self.worker = worker  # issue 16: the demo bundle has a `worker` marked bluegreen.when: in-service
        self.queue = None
        self.time_scale = time_scale
        self.boot_seconds = boot_seconds
        self.lb_port = lb_port
        self.region = region
        self.infra_dir = infra_dir
        self.ready_deadline_s = ready_deadline_s
        self.stop_requested = threading.Event()
        self.state: dict = {"pid": os.getpid(), "phase": "starting", "error": None, "service": SERVICE,
                            "region": region, "started": time.time(), "time_scale": time_scale,
                            "boot_seconds": boot_seconds, "instances": instances}
        self._state_lock = threading.Lock()
        self.cloud = None
        self.lb = None
        self.supervisor = None
        self.metrics = None
        self._infra_started = False

    # -- state ------------------------------------------------------------------------------------------
    def record(self, **changes) -> None:
        with self._state_lock:
            self.state.update(changes)
            if self.supervisor is not None:
                self.state["fleet"] = self.supervisor.snapshot()
            atomic_write(os.path.join(self.state_dir, STATE_FILE), json.dumps(self.state, indent=2))

    # -- start ------------------------------------------------------------------------------------------
    def start(self) -> None:
        import boto3
        from botocore.config import Config

        from localcloud import infra, sampleapp
        from localcloud.aws import EmulatedAWS
        from localcloud.fleet.control import ControlClient
        from localcloud.fleet.haproxy import LoadBalancer
        from localcloud.fleet.instances import Instance
        from localcloud.fleet.metrics import PUBLISH_AWS_SECONDS, MetricsPublisher
        from localcloud.fleet.service import HEALTH_URL, MACHINE_HEALTH_URL, REPOSITORY, create_demo_service
        from localcloud.fleet.supervisor import FleetSupervisor

        os.makedirs(self.state_dir, exist_ok=True)
        env, started = infra.up(self.infra_dir, record=os.path.join(self.state_dir, INFRA_RECORD))
        self._infra_started = True
        docker_host, registry = env["DOCKER_HOST"], env["BLUEGREEN_REGISTRY"]
        os.environ["DOCKER_HOST"] = docker_host
        self.record(docker_host=docker_host, registry=registry, infra_started=sorted(started))

        self.cloud = EmulatedAWS(host="127.0.0.1", port=0, region=self.region, time_scale=self.time_scale,
                                 health_interval=OUT_OF_REACH_HEALTH_INTERVAL).start()
        self.lb = LoadBalancer(os.path.join(self.state_dir, "lb"), port=self.lb_port,
                               check_interval=5 * self.time_scale).start()
        self.record(aws_endpoint=self.cloud.endpoint, lb_url=self.lb.url, haproxy_pid=self.lb.pid)
        atomic_write(os.path.join(self.state_dir, ENV_FILE),
                         env_lines(self.cloud.endpoint, self.region, self.lb.url, docker_host, registry))

        # C1: everything this process and its children run (push-bootstrap, the scenario) finds the
        # emulation through the standard environment, as `bluegreen` does after `source .localcloud/env`.
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(key, None)
        os.environ.update(AWS_ENDPOINT_URL=self.cloud.endpoint, AWS_DEFAULT_REGION=self.region,
                          AWS_REGION=self.region, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        session = boto3.session.Session(region_name=self.region)
        config = Config(retries={"mode": "adaptive", "max_attempts": 10})  # A10
        autoscaling = session.client("autoscaling", endpoint_url=self.cloud.endpoint, config=config)
        elbv2 = session.client("elbv2", endpoint_url=self.cloud.endpoint, config=config)
        if self.worker:  # issue 16: the queue the demo's workers consume, shared by both colours
            from localcloud.fleet.queue import WorkQueue

            self.queue = WorkQueue().start()
            self.record(queue_url=f"http://127.0.0.1:{self.queue.port}")
        control = ControlClient(self.cloud.endpoint)
        factory = Instance
        health_url = HEALTH_URL
        if self.instances == "machines":
            factory = self._machine_factory(session, config, control, registry)
            health_url = MACHINE_HEALTH_URL
        self.supervisor = FleetSupervisor(
            control, autoscaling, elbv2, self.lb, self.state_dir, self.cloud.endpoint,
            self.region, docker_host, time_scale=self.time_scale, boot_seconds=self.boot_seconds,
            on_change=self.record, instance_factory=factory).start()
        # Issue 12: HAProxy's counters as AWS/ApplicationELB metrics, and 5xx per group (metrics.py).
        self.metrics = MetricsPublisher(self.lb, session.client("cloudwatch", endpoint_url=self.cloud.endpoint,
                                                                config=config),
                                        elbv2, self.supervisor.layout, PUBLISH_AWS_SECONDS * self.time_scale).start()

        self.record(phase="pushing images")
        sampleapp.build_and_push(registry, repository=REPOSITORY, versions=VERSIONS,
                                 unhealthy_versions=UNHEALTHY_VERSIONS)
        self.record(phase="creating the service")
        create_demo_service(session, self.state_dir, registry, SERVICE, CAPACITY, health_url=health_url,
                            worker=self.worker, queue_port=self.queue.port if self.queue else None)
        self.record(phase="waiting for the blue instances")
        self.supervisor.wait_for(lambda: self.supervisor.routed_count() >= CAPACITY,
                                 f"{CAPACITY} instances healthy and routed by the load balancer",
                                 self.ready_deadline_s)
        self.record(phase="ready")
        log.info("local fleet ready: load balancer %s, emulated AWS %s", self.lb.url, self.cloud.endpoint)

    def _machine_factory(self, session, config, control, registry: str):
        """Machines boot the baked image root (scripts/bake-debian-root.sh, cached in .cache/bake)."""
        from localcloud import machines
        from localcloud.fleet.machine_instance import MachineFactory

        reason = machines.available()
        if reason:
            raise FleetError(f"{reason}; or start the fleet with --instances processes")
        if self.image_root is None:
            self.record(phase="baking the image root")
            self.image_root = machines.baked_root()
        self.record(image_root=self.image_root)
        aws_port = int(self.cloud.endpoint.rsplit(":", 1)[1])
        registry_port = int(registry.rsplit(":", 1)[1]) if ":" in registry else None
        extra = (self.queue.port,) if self.queue else ()
        return MachineFactory(session.client("autoscaling", endpoint_url=self.cloud.endpoint, config=config),
                              session.client("ec2", endpoint_url=self.cloud.endpoint, config=config),
                              session.client("iam", endpoint_url=self.cloud.endpoint, config=config),
                              self.image_root, aws_port, registry_port, on_console=control.post_console,
                              extra_forwards=extra)

    # -- stop -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        from localcloud import infra

        self.record(phase="stopping")
        for name, part in (("metrics", self.metrics), ("fleet", self.supervisor), ("work queue", self.queue),
                           ("load balancer", self.lb),
                           ("emulated AWS", self.cloud)):
            if part is None:
                continue
            try:
                part.stop()
            except (FleetError, OSError) as exc:
                log.error("stopping the %s: %s", name, exc)
        if self.instances == "machines":
            from localcloud import machines

            swept = machines.sweep(os.path.join(self.state_dir, "instances"))
            if swept:
                log.warning("machines left running or mounted after the fleet stopped, removed: %s", swept)
        if self._infra_started:
            infra.down(self.infra_dir, record=os.path.join(self.state_dir, INFRA_RECORD))
        self.record(phase="stopped")


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived while the fleet was still starting: stop starting, tear down."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.fleet.daemon")
    parser.add_argument("--state", default=".localcloud")
    parser.add_argument("--lb-port", type=int, default=0)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--infra-dir", default=os.environ.get("BLUEGREEN_INFRA_DIR", ".infra"))
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE, help="real seconds per AWS second")
    parser.add_argument("--boot-seconds", type=float, default=0.0,
                        help="AWS seconds from an instance's launch to its agent's start (EC2 boot; default 0)")
    parser.add_argument("--instances", choices=("machines", "processes"), default="machines",
                        help="machines: each instance boots the baked image (systemd-nspawn, default); "
                             "processes: the agent runs as a process on this host's Docker engine")
    parser.add_argument("--image-root", default=None,
                        help="the image root machines boot (default: scripts/bake-debian-root.sh's, built or cached)")
    parser.add_argument("--worker", action="store_true",
                        help="the demo bundle gets a `worker` service marked bluegreen.when: in-service")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    daemon = Daemon(args.state, args.lb_port, args.region, args.infra_dir, time_scale=args.time_scale,
                    boot_seconds=args.boot_seconds, instances=args.instances, image_root=args.image_root,
                    worker=args.worker)
    os.makedirs(daemon.state_dir, exist_ok=True)
    atomic_write(os.path.join(daemon.state_dir, PID_FILE), str(os.getpid()))

    starting = [True]

    def request_stop(signum, frame):
        daemon.stop_requested.set()
        if starting[0]:
            starting[0] = False
            raise StopRequested(f"signal {signum} while starting")

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    code = 0
    try:
        daemon.start()
        starting[0] = False
        daemon.stop_requested.wait()
    except StopRequested:
        log.info("stop requested while starting: tearing down")
    except Exception as exc:  # the daemon's top level: record why it failed for `up`, then clean up
        log.exception("local fleet failed to start")
        daemon.record(phase="failed", error=f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        daemon.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
