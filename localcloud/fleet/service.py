"""The demo service, created as an operator would: images in the registry, the bootstrap bundle pushed to S3
with the real `bluegreen push-bootstrap`, then the groups, target group and launch hook (localcloud.scenario).
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
# In AWS seconds (the fleet runs them at localcloud.fleet.daemon.TIME_SCALE): checks 5 s x 2, the
# deregistration delay 15 s, the launch hook's heartbeat timeout 300 s.
HEALTH_INTERVAL = 5
HEALTHY_THRESHOLD = 2
DEREGISTRATION_DELAY = 15
HOOK_TIMEOUT = 300


class ServiceError(FleetError):
    pass


def bluegreen_command() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "bluegreen")
    return [beside] if os.access(beside, os.X_OK) else ["bluegreen"]


def push_bundle(session, folder: str, registry: str, url: str, environ: dict) -> str:
    """Push the demo bundle under `url` (a base); returns the content-addressed bundle's URL push-bootstrap
    printed, what the groups' bluegreen:bootstrap names (issue 11)."""
    from localcloud import sampleapp

    session.client("s3").create_bucket(Bucket=parse_s3_url(url)[0])
    # The compose file alone: push-bootstrap writes the manifest the agent verifies, as a CI step would.
    sampleapp.write_bundle(folder, registry, repository=REPOSITORY, manifest=False)
    out = subprocess.run(bluegreen_command() + ["push-bootstrap", folder, url], env=environ, check=False,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ServiceError(f"bluegreen push-bootstrap {url} failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def create_demo_service(session, state_dir: str, registry: str, name: str = "demo", capacity: int = 3,
                        version: str = "1.0", environ: dict | None = None) -> dict:
    from localcloud.scenario import create_service

    url = format_s3_url(BUCKET, name + "/")
    url = push_bundle(session, os.path.join(state_dir, "bundle"), registry, url, dict(environ or os.environ))
    return create_service(session, name=name, capacity=capacity, version=version, image=f"{registry}/{REPOSITORY}",
                          bootstrap=url, health_interval=HEALTH_INTERVAL, healthy_threshold=HEALTHY_THRESHOLD,
                          deregistration_delay=DEREGISTRATION_DELAY, launch_hook=True, hook_timeout=HOOK_TIMEOUT,
                          health_url=HEALTH_URL, load_balancer=True)  # its ARN: the metrics' LoadBalancer
