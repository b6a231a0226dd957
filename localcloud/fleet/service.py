"""The demo service, created as a user would in a real account (issue 15, the newcomer's path): the stack from
infra/cloudformation/service.yaml (localcloud/stack.py), the bootstrap bundle pushed to the stack's bucket with the
real `bluegreen push-bootstrap`, then blue brought up at the first version with the real `bluegreen init`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from agent.contract import format_s3_url, parse_s3_url
from localcloud.fleet import FleetError

BUCKET = "bluegreen-bootstrap"
# The fleet's own image repository: the fixed tag (`<repository>:live`) is one tag per Docker engine, so the
# fleet does not share it with the agent's tests running on the same engine.
REPOSITORY = "demo-web"
# A6: an instance joins the load balancer only once its agent completes the launch hook; the agent's own
# health wait uses this URL, with the instance's APP_PORT filled in from its compose_env.
HEALTH_URL = "http://127.0.0.1:${APP_PORT}/health"
# On a machine (machine_instance.py) the app has the machine's network to itself: the template's AppPort.
MACHINE_HEALTH_URL = "http://127.0.0.1:8080/health"
# In AWS seconds (the fleet runs them at localcloud.fleet.daemon.TIME_SCALE): checks 5 s x 2, the
# deregistration delay 15 s, the launch hook's heartbeat timeout 300 s.
HEALTH_INTERVAL = 5
HEALTHY_THRESHOLD = 2
DEREGISTRATION_DELAY = 15
HOOK_TIMEOUT = 300
# `bluegreen init` returns once blue is healthy: boots, image pulls and health checks, in real seconds.
INIT_TIMEOUT_S = 600


class ServiceError(FleetError):
    pass


def bluegreen_command() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "bluegreen")
    return [beside] if os.access(beside, os.X_OK) else ["bluegreen"]


def push_bundle(session, folder: str, registry: str, url: str, environ: dict, worker: bool = False,
                queue_port: int | None = None) -> str:
    """Push the demo bundle under `url` (a base); returns the content-addressed bundle's URL push-bootstrap
    printed, what the groups' bluegreen:bootstrap names (issue 11)."""
    from localcloud import sampleapp

    s3, bucket = session.client("s3"), parse_s3_url(url)[0]
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:  # the stack made it, normally
        s3.create_bucket(Bucket=bucket)
    # The compose file alone: push-bootstrap writes the manifest the agent verifies, as a CI step would.
    sampleapp.write_bundle(folder, registry, repository=REPOSITORY, manifest=False, worker=worker,
                           queue_port=queue_port)
    out = subprocess.run(bluegreen_command() + ["push-bootstrap", folder, url], env=environ, check=False,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ServiceError(f"bluegreen push-bootstrap {url} failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def create_demo_service(session, state_dir: str, registry: str, name: str = "demo", capacity: int = 3,
                        version: str = "1.0", environ: dict | None = None, health_url: str = HEALTH_URL,
                        worker: bool = False, queue_port: int | None = None) -> dict:
    """The stack, the bundle, then `bluegreen init NAME VERSION --capacity N`, which returns once blue's
    instances are healthy (their agents run meanwhile, in the fleet's supervisor); returns localcloud.stack's
    dict of the pair."""
    from localcloud.stack import create_stack_service

    svc = create_stack_service(session, name=name, image=f"{registry}/{REPOSITORY}", bucket=BUCKET, capacity=capacity,
                               version=version, health_interval=HEALTH_INTERVAL, healthy_threshold=HEALTHY_THRESHOLD,
                               deregistration_delay=DEREGISTRATION_DELAY, hook_timeout=HOOK_TIMEOUT,
                               health_url=health_url)
    if svc["bootstrap_url"] != format_s3_url(BUCKET, name + "/"):
        raise ServiceError(f"the stack's BootstrapUrl {svc['bootstrap_url']} is not the fleet's bucket {BUCKET}")
    environ = dict(environ or os.environ)
    url = push_bundle(session, os.path.join(state_dir, "bundle"), registry, svc["bootstrap_url"], environ, worker,
                      queue_port)
    # The fleet checks health every second (TIME_SCALE): poll at that pace, not the default 5 s.
    out = subprocess.run(bluegreen_command() + ["init", name, version, "--capacity", str(capacity), "--bootstrap",
                                                url, "--poll-interval", "1"],
                         env=environ, check=False, capture_output=True, text=True, timeout=INIT_TIMEOUT_S)
    if out.returncode != 0:
        raise ServiceError(f"bluegreen init {name} {version} failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-300:]}")
    return svc
