"""Issue 11, "Digests" (audit F8), against the real registry and engine: the digest `deploy` resolves for
IMAGE:VERSION (the manifest HEAD of the image check, registry.probe) is the one `docker push` recorded, so the
agent's pull by digest gets exactly that image; `deploy` sets it as the idle group's bluegreen:digest.

Docker-marked: it builds and pushes the sample app (localcloud.sampleapp) to BLUEGREEN_REGISTRY.
"""

import os
import uuid

import docker
import pytest

from agent.contract import TAG_DIGEST, TAG_VERSION
from deployer import registry
from localcloud.sampleapp import build_and_push
from tests.deployer.preflight_support import name_image
from tests.helpers import expect_exit

pytestmark = pytest.mark.docker

REGISTRY = os.environ.get("BLUEGREEN_REGISTRY", "127.0.0.1:5000")


@pytest.fixture(scope="module")
def pushed():
    repository = "bgdigest-" + uuid.uuid4().hex[:8]
    digests = build_and_push(REGISTRY, repository=repository, versions=("1.0", "2.0"))
    image = f"{REGISTRY}/{repository}"
    yield image, digests
    engine = docker.from_env()
    for tagged in engine.images.list(name=image):
        for tag in tagged.tags:
            engine.images.remove(tag, force=True)
    engine.close()


def test_the_registry_answers_the_digest_docker_recorded(pushed):
    image, digests = pushed
    for version, digest in digests.items():
        state, detail, found = registry.probe(image, version)
        assert (state, found) == (registry.FOUND, digest), detail
    assert registry.probe(image, "9.9")[::2] == (registry.MISSING, None)


def test_deploy_sets_the_digest_of_the_version(make_harness, pushed):
    image, digests = pushed
    fleet = make_harness(capacity=1)
    name_image(fleet, image)
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert f"bluegreen:digest to {digests['2.0']}" in out.stderr  # the set-version step's line
    tags = fleet.tags("green")
    assert (tags[TAG_VERSION], tags[TAG_DIGEST]) == ("2.0", digests["2.0"])
    assert TAG_DIGEST not in fleet.tags("blue")  # the live group keeps what it had (none: created without)
