"""Secret references (audit F15) end to end: `bluegreen-agent run` resolves them from SSM Parameter Store and
Secrets Manager in the emulated AWS, the container sees the values, and no output nor status.json holds them."""

import json
import os

import boto3
import pytest

from tests.agent import test_agent_docker as base
from tests.agent.conftest import REGION
from tests.agent.test_agent_health_docker import publish
from tests.helpers import expect_exit

pytestmark = pytest.mark.docker
engine, images, make_stack = base.engine, base.images, base.make_stack


def test_the_container_sees_resolved_secrets_and_no_output_holds_them(make_stack, aws):
    stack = make_stack()
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/bluegreen/web/db", Value="s3cr3t-db-9f1", Type="SecureString")
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="bluegreen/web/api", SecretString=json.dumps({"token": "s3cr3t-token-4c2"}))
    stack.runner.config["compose_env"].update(DB_PASSWORD={"ssm": "/bluegreen/web/db"},
                                              API_TOKEN={"secretsmanager": "bluegreen/web/api", "key": "token"})
    publish(stack, aws, "secrets/", web_extra={"environment": {
        "APP_PORT": "${APP_PORT:-8080}", "DB_PASSWORD": "${DB_PASSWORD:?}", "API_TOKEN": "${API_TOKEN:?}"}})

    result = stack.runner("run", "--debug")
    expect_exit(result, 0)
    assert stack.served() == "1.0"
    (web,) = [c for c in stack.engine.containers.list(filters={
        "label": "com.docker.compose.project=" + stack.runner.config["compose_project"]})]
    env = dict(item.split("=", 1) for item in web.attrs["Config"]["Env"])
    assert (env["DB_PASSWORD"], env["API_TOKEN"]) == ("s3cr3t-db-9f1", "s3cr3t-token-4c2")

    assert "resolved API_TOKEN from secretsmanager:bluegreen/web/api key token, DB_PASSWORD from ssm:" in result.stderr
    with open(os.path.join(stack.runner.workdir, "status.json")) as f:
        status = f.read()
    for shown in (result.stdout, result.stderr, status, stack.runner("show").stdout,
                  stack.runner("run", "--dry-run").stdout):
        assert "s3cr3t" not in shown
