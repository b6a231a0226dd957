"""The deployer's fixtures: a service in the emulated AWS, driven through the console script in a subprocess
(`make_fleet`, real time) or in process on a fake clock (`make_harness`, tests/deployer/harness.py)."""

import boto3
import pytest

from localcloud.scenario import create_service, ensure_bundle, wait_until_serving
from localcloud.stack import create_stack_service
from tests.deployer.fleet import Fleet
from tests.deployer.harness import Harness
from tests.deployer.preflight_support import ecr_image
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


@pytest.fixture
def make_stack_harness(aws):
    """make_harness's pair as a user makes it: infra/cloudformation/service.yaml created as a stack
    (localcloud/stack.py), a bundle under the stack's BootstrapUrl, then `bluegreen init demo 1.0 --capacity N`
    in process. The image is an ECR repository of the emulated account, so pre-flight checks IMAGE:VERSION there;
    the bundle is the one-file bundle of localcloud.scenario. The instances' agents are the harness's: they
    complete the launch hook of every new instance (A6)."""
    clock = FakeTime()

    def make(capacity=3, versions=("1.0", "2.0", "3.0"), **kwargs):
        aws.configure_time(time_scale=1.0)
        aws.use_clock(clock.now)
        session = boto3.session.Session()
        image = ecr_image(session, "web", versions)
        svc = create_stack_service(session, capacity=capacity, image=image, **kwargs)
        ensure_bundle(session, svc["bootstrap_url"], image)
        harness = Harness(aws, session, svc, clock)
        if svc["lifecycle_hook"]:
            harness.agents += [lambda: harness.complete_hooks("blue"), lambda: harness.complete_hooks("green")]
        harness.init = harness.bluegreen("init", svc["service"], versions[0], "--capacity", capacity,
                                         "--bootstrap", svc["bootstrap_url"])
        if harness.init.returncode == 0:  # a broken variant's init may be refused: the test reads harness.init
            svc.update(capacity=capacity, version=versions[0])
            harness.wait_for(lambda: len(harness.healthy()) >= capacity, "the service to serve")
        return harness

    return make
