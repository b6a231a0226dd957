"""The pure parts: image references, which compose services the agent re-tags; plus ECR
login and the group lookup against the emulated AWS."""

import logging
import subprocess

import boto3
import pytest

from agent import asg
from agent.compose import fixed_references
from agent.errors import ComposeError, GroupError
from agent.images import ecr_auth, ecr_registry, normalize_repository, split_reference
from tests.agent.conftest import Group
from tests.helpers import FakeTime


@pytest.mark.parametrize("ref,expected", [
    ("127.0.0.1:5000/web:live", ("127.0.0.1:5000/web", "live")),
    ("127.0.0.1:5000/web", ("127.0.0.1:5000/web", "latest")),
    ("web", ("web", "latest")),
    ("team/web:1.0", ("team/web", "1.0")),
    ("web@sha256:" + "a" * 64, ("web", None)),
])
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_docker_hub_names_compare_equal_to_their_long_form():
    assert normalize_repository("web") == normalize_repository("docker.io/library/web") == "docker.io/library/web"
    assert normalize_repository("team/web") == "docker.io/team/web"
    assert normalize_repository("127.0.0.1:5000/web") == "127.0.0.1:5000/web"
    assert normalize_repository("localhost/web") == "localhost/web"


def test_ecr_registries_are_recognised():
    assert ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/web") == ("123456789012", "eu-west-1")
    assert ecr_registry("127.0.0.1:5000/web") is None
    assert ecr_registry("web") is None


def test_ecr_login_through_get_authorization_token(aws):
    auth = ecr_auth(boto3.client("ecr", region_name="us-east-1"), "123456789012")
    assert auth["username"] == "AWS" and auth["password"]


def test_fixed_references_are_the_services_running_the_configured_image():
    model = {"services": {
        "web": {"image": "127.0.0.1:5000/web:live"},
        "worker": {"image": "127.0.0.1:5000/web:live"},
        "cache": {"image": "redis:7"},
        "built": {"build": {"context": "."}},
    }}
    assert fixed_references(model, "127.0.0.1:5000/web") == ["127.0.0.1:5000/web:live"]
    with pytest.raises(ComposeError, match="no service in docker-compose.yml uses the image other/web"):
        fixed_references(model, "other/web")
    with pytest.raises(ComposeError, match="pins .* by digest"):
        fixed_references({"services": {"web": {"image": "web@sha256:" + "a" * 64}}}, "web")


def test_find_group_and_its_tags(aws):
    group = Group(aws.endpoint, "web-blue", {"bluegreen:version": "1.0", "team": "x"})
    client = boto3.client("autoscaling", region_name="us-east-1")
    found = asg.find_group(client, group.instance_ids[0])
    assert found.group == "web-blue" and found.lifecycle_state in ("Pending", "InService")
    assert asg.group_tags(client, "web-blue") == {"bluegreen:version": "1.0", "team": "x"}


def test_an_instance_no_group_lists_fails_at_the_deadline(aws):
    fake = FakeTime(start=0.0)
    client = boto3.client("autoscaling", region_name="us-east-1")
    with pytest.raises(GroupError, match=r"i-00000000000000000 is not in any Auto Scaling group \(waited 10s"):
        asg.find_group(client, "i-00000000000000000", deadline=10, interval=2, sleep=fake.sleep, clock=fake.now)
    assert 8 <= fake.now() <= 10


def test_ecr_password_never_reaches_a_log(aws, caplog):
    caplog.set_level(logging.DEBUG)
    auth = ecr_auth(boto3.client("ecr", region_name="us-east-1"), "123456789012")
    assert auth["password"] not in caplog.text and "ECR login for account 123456789012" in caplog.text


class FailingRunner:
    def __call__(self, argv, **kwargs):
        self.argv = argv
        return subprocess.CompletedProcess(argv, 1)


def test_compose_detection_takes_the_v2_plugin_and_never_falls_back_to_v1(tmp_path, monkeypatch):
    from agent import compose

    assert compose.detect_command(["docker-compose", "--ansi", "never"]) == ("docker-compose", "--ansi", "never")
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    plugin = plugins / "docker-compose"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    monkeypatch.setattr(compose, "PLUGIN_DIRS", ())
    # A `docker` CLI of our own on PATH: the test must not depend on the machine having Docker (`make unit`).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    assert compose.detect_command(environ={"DOCKER_CONFIG": str(tmp_path)}) == ("docker", "compose")
    # No plugin and `docker compose version` fails: a `docker-compose` on PATH (v1 on most hosts) is NOT taken
    # (audit F23: v1 and v2 name containers differently, and mixing them recreates every container).
    standalone = bindir / "docker-compose"
    standalone.write_text("#!/bin/sh\n")
    standalone.chmod(0o755)
    runner = FailingRunner()
    with pytest.raises(ComposeError, match="`docker compose` .the compose v2 plugin. is not installed"):
        compose.detect_command(runner=runner, environ={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert runner.argv == ["docker", "compose", "version"]