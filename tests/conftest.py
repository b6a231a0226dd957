"""Fixtures shared by every test group.

Markers (setup.cfg): `docker` needs the real engine/registry/compose that scripts/run-tests.sh provides
(DOCKER_HOST, BLUEGREEN_REGISTRY); `e2e` needs the whole local fleet; `haproxy` runs a real HAProxy;
`system_tools` runs cloud-init or systemd-analyze. Unmarked tests need only the virtualenv: they are what
`make unit` runs.
"""

import os

import pytest

# AWS time runs 100x faster in tests: a 30 s x 5 health check turns `healthy` after 1.5 s, the default 300 s
# deregistration delay drains in 3 s, a launch (30 s) reaches InService in 0.3 s. Tests that need other
# timings call cloud.configure_time(...); reset() restores these.
TEST_TIME_SCALE = 0.01
TEST_REGION = "us-east-1"


@pytest.fixture(scope="session")
def cloud():
    """One emulated AWS (moto over HTTP on 127.0.0.1, ephemeral port) for the whole test session.

    moto loads ~3,500 public AMIs into every fresh EC2 backend, 0.5 s per reset; the tests launch from
    arbitrary AMI ids (moto does not check them), so they go without.
    """
    from localcloud.aws import EmulatedAWS  # here, not at the top: a test without AWS never imports moto

    saved = os.environ.get("MOTO_EC2_LOAD_DEFAULT_AMIS")
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    emulated = EmulatedAWS(host="127.0.0.1", port=0, region=TEST_REGION, time_scale=TEST_TIME_SCALE).start()
    yield emulated
    emulated.stop()
    if saved is None:
        os.environ.pop("MOTO_EC2_LOAD_DEFAULT_AMIS", None)
    else:
        os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = saved


@pytest.fixture
def aws(cloud, monkeypatch):
    """A clean emulated AWS, and the standard SDK environment (C1) pointing at it.

    Subprocesses started by the test inherit os.environ, so `bluegreen` and `bluegreen-agent` runs reach it too.
    """
    cloud.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", cloud.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    yield cloud
