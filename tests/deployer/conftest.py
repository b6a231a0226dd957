"""The deployer's fixtures: a service in the emulated AWS, driven through the console script in a subprocess
(`make_fleet`, real time) or in process on a fake clock (`make_harness`, tests/deployer/harness.py)."""

import boto3
import pytest

from localcloud.scenario import create_service, wait_until_serving
from tests.deployer.fleet import Fleet
from tests.deployer.harness import Harness
from tests.helpers import FakeTime

# No agent runs on these instances, so the pair names no image (bluegreen:image): pre-flight then warns that it
# cannot check IMAGE:VERSION instead of asking whatever registry happens to listen on 127.0.0.1:5000. The
# image check has its own tests (test_deployer_preflight.py), against moto's ECR and a local registry.
NO_AGENT = {"image": None}


@pytest.fixture
def make_fleet(aws):
    """Create a service as an operator would (localcloud.scenario) and wait until it serves."""

    def make(capacity=3, **kwargs):
        session = boto3.session.Session()
        svc = create_service(session, capacity=capacity, **dict(NO_AGENT, **kwargs))
        fleet = Fleet(session, svc)
        if svc["lifecycle_hook"]:
            fleet.wait_for(lambda: fleet.complete_hooks("blue") == capacity, "blue's launch hooks to complete")
        wait_until_serving(session, svc, timeout=30)
        return fleet

    return make


@pytest.fixture
def make_harness(aws):
    """The same service on the fake clock (AWS seconds = fake seconds), serving, for in-process commands."""
    clock = FakeTime()

    def make(capacity=3, **kwargs):
        aws.configure_time(time_scale=1.0)
        aws.use_clock(clock.now)
        session = boto3.session.Session()
        harness = Harness(aws, session, create_service(session, capacity=capacity, **dict(NO_AGENT, **kwargs)), clock)
        if harness.svc["lifecycle_hook"]:
            harness.wait_for(lambda: harness.complete_hooks("blue") == capacity, "blue's launch hooks to complete")
        harness.wait_for(lambda: len(harness.healthy()) >= capacity, "the service to serve")
        return harness

    return make
