"""IMDSv2, both sides: the agent's client against the emulator over real HTTP (aws-rules.md I1-I3)."""

import json
import logging
import os
import subprocess

import pytest
import requests

from agent.errors import IdentityError
from agent.imds import IMDSClient
from localcloud.imds import IMDSServer
from tests.agent.conftest import AGENT, Group, app_port
from tests.helpers import FakeTime, expect_exit


@pytest.fixture
def server():
    with IMDSServer("i-0123456789abcdef0", region="eu-west-1") as imds:
        yield imds


def client(endpoint, deadline=30.0, fake=None):
    """The retry schedule runs instantly and is observable: sleep, clock and jitter are the fake's (rand 1.0:
    every backoff is its cap, base 0.2 s doubling up to 5 s)."""
    fake = fake or FakeTime()
    return IMDSClient(requests.Session(), endpoint=endpoint, deadline=deadline, sleep=fake.sleep, clock=fake.now,
                      rand=fake.rand)


def test_identity_through_a_token(server):
    identity = client(server.endpoint).identity()
    assert (identity.instance_id, identity.region, identity.account_id) == \
        ("i-0123456789abcdef0", "eu-west-1", "123456789012")


def test_server_enforces_the_token_and_its_ttl(server):
    base = server.endpoint
    assert requests.get(base + "/latest/meta-data/instance-id", timeout=5).status_code == 401
    assert requests.put(base + "/latest/api/token", timeout=5).status_code == 400
    assert requests.put(base + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21601"},
                        timeout=5).status_code == 400
    token = requests.put(base + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
                         timeout=5).text
    got = requests.get(base + "/latest/meta-data/placement/region", headers={"X-aws-ec2-metadata-token": token},
                       timeout=5)
    assert (got.status_code, got.text) == (200, "eu-west-1")
    assert requests.get(base + "/latest/meta-data/nothing", headers={"X-aws-ec2-metadata-token": token},
                        timeout=5).status_code == 404


def test_401_fetches_a_new_token_once(server):
    imds = client(server.endpoint)
    assert imds.get("/latest/meta-data/instance-id") == "i-0123456789abcdef0"
    server.expire_tokens()
    assert imds.get("/latest/meta-data/placement/region") == "eu-west-1"


def test_403_fails_fast_without_retrying(server):
    server.disabled = True
    fake = FakeTime()
    with pytest.raises(IdentityError, match="answered 403: the metadata endpoint is disabled"):
        client(server.endpoint, fake=fake).identity()
    assert server.requests == 1 and fake.sleeps == []


def test_5xx_early_in_boot_is_retried_with_jittered_backoff(server):
    server.fail_next(3, status=503)
    fake = FakeTime()
    assert client(server.endpoint, fake=fake).identity().instance_id == "i-0123456789abcdef0"
    assert fake.sleeps == pytest.approx([0.4, 0.8, 1.6])  # full jitter's upper bound doubles per attempt


def test_backoff_is_jittered_below_its_cap(server):
    server.fail_next(8, status=503)
    fake = FakeTime(rand=0.5)
    client(server.endpoint, fake=fake).identity()
    assert fake.sleeps == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.5, 2.5, 2.5, 2.5])  # half of min(5, 0.2 * 2**n)


def test_connection_refused_until_the_deadline_names_what_it_waited_for():
    fake = FakeTime()
    closed = f"http://127.0.0.1:{app_port()}"
    with pytest.raises(IdentityError, match=r"did not answer GET /latest/dynamic/instance-identity/document "
                                            r"within 20s \(last: ConnectionError"):
        client(closed, deadline=20.0, fake=fake).identity()
    assert sum(fake.sleeps) <= 20.0 and len(fake.sleeps) > 3


def test_the_token_never_reaches_a_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    imds = client(server.endpoint)
    imds.identity()
    server.expire_tokens()
    imds.identity()
    assert imds._token and imds._token not in caplog.text


def test_endpoint_comes_from_the_sdk_variable():
    assert IMDSClient.from_environ(None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1/"}).endpoint \
        == "http://127.0.0.1:1"
    assert IMDSClient.from_environ(None, {}).endpoint == "http://169.254.169.254"


LIFECYCLE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"


def test_target_lifecycle_state_follows_the_emulated_group(aws):
    group = Group(aws.endpoint, "lc-group", {"bluegreen:version": "1"})
    instance_id = group.instance_ids[0]
    with IMDSServer(instance_id, aws_endpoint=aws.endpoint) as imds:
        assert client(imds.endpoint).get(LIFECYCLE_PATH) == "InService"
        doc = json.loads(client(imds.endpoint).get("/latest/dynamic/instance-identity/document"))
        assert doc["instanceId"] == instance_id
    with IMDSServer("i-00000000000000000", aws_endpoint=aws.endpoint) as imds:
        assert client(imds.endpoint).get(LIFECYCLE_PATH, missing_ok=True) is None  # in no group: 404


def test_many_servers_at_once_answer_for_their_own_instance():
    servers = [IMDSServer(f"i-{n:017x}").start() for n in range(5)]
    try:
        assert [client(s.endpoint).identity().instance_id for s in servers] == [f"i-{n:017x}" for n in range(5)]
        assert len({s.endpoint for s in servers}) == 5
    finally:
        for s in servers:
            s.stop()


def test_an_instance_held_by_a_launch_hook_targets_in_service(aws):
    # A6/I2: in Pending:Wait the instance's target lifecycle state is InService.
    group = Group(aws.endpoint, "hooked", {"bluegreen:version": "1"}, launch_hook="launch")
    instance_id = group.instance_ids[0]
    assert group.lifecycle_state(instance_id) == "Pending:Wait"
    with IMDSServer(instance_id, aws_endpoint=aws.endpoint) as imds:
        assert client(imds.endpoint).get(LIFECYCLE_PATH) == "InService"


def test_endpoint_mode_ipv6_is_honoured_like_botocore():
    # F19: IPv6-only subnets reach IMDS at fd00:ec2::254 (HttpProtocolIpv6 enabled on the instance).
    mode = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
    assert IMDSClient.from_environ(None, {mode: "IPv6"}).endpoint == "http://[fd00:ec2::254]"
    assert IMDSClient.from_environ(None, {mode: "ipv4"}).endpoint == "http://169.254.169.254"
    assert IMDSClient.from_environ(None, {mode: "IPv6", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://[::1]:9/"}) \
        .endpoint == "http://[::1]:9"  # the explicit endpoint wins, as in botocore
    with pytest.raises(IdentityError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE='IPv5' is not IPv4 or IPv6"):
        IMDSClient.from_environ(None, {mode: "IPv6".replace("6", "5")})


def test_identity_over_an_ipv6_endpoint(aws, tmp_path):
    group = Group(aws.endpoint, "v6-group", {"bluegreen:version": "1", "bluegreen:image": "web",
                                             "bluegreen:bootstrap": "s3://bluegreen-bootstrap/web/"})
    with IMDSServer(group.instance_ids[0], aws_endpoint=aws.endpoint, host="::1") as imds:
        assert imds.endpoint.startswith("http://[::1]:")
        env = dict(os.environ, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
        result = subprocess.run([AGENT, "show", "--output", "json", "--workdir", str(tmp_path)], env=env,
                                capture_output=True, text=True, check=False)
        expect_exit(result, 0)
        assert json.loads(result.stdout)["instance_id"] == group.instance_ids[0]


def test_an_outage_answers_every_request_until_it_ends(server):
    """The fleet's `imds-fault --fail-for` (an outage, I3): every request, tokens included, until it ends."""
    import time

    server.fail_for(30.0, status=500)
    assert requests.put(server.endpoint + "/latest/api/token", timeout=5,
                        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).status_code == 500
    assert requests.get(server.endpoint + "/latest/meta-data/instance-id", timeout=5).status_code == 500
    server.fail_for(0)
    time.sleep(0.01)
    assert client(server.endpoint).identity().instance_id == "i-0123456789abcdef0"
