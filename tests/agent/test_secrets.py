"""compose_env secret references (audit F15): the syntax (pure), resolution against SSM Parameter Store and
Secrets Manager in the emulated AWS (moto over HTTP), and the public command: `show` and `--dry-run` print the
reference, a reference that cannot be read is one line naming it before anything is fetched or switched, and
a value never reaches stdout, stderr or status.json. A container seeing the value: test_agent_secrets_docker.py."""

import json
import os

import boto3
import pytest
from botocore.stub import Stubber

from agent import secrets
from agent.errors import SettingsError
from agent.settings import SecretRef, resolve, tags_to_settings
from tests.agent.conftest import REGION, AgentRunner, Group, agent_error
from tests.helpers import expect_exit

TAGS = {"bluegreen:version": "1.0", "bluegreen:image": "127.0.0.1:5000/web",
        "bluegreen:bootstrap": "s3://bluegreen-bootstrap/web/"}
ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bluegreen/web/api-AbCdEf"


def settings(compose_env, **config):
    return resolve({}, tags_to_settings(TAGS), dict(config, compose_env=compose_env))


# -- the syntax (agent/settings.py, pure) ---------------------------------------------------------------------
def test_references_are_mappings_kept_apart_from_plain_values():
    s = settings({"APP_PORT": 8080, "DB_PASSWORD": {"ssm": "/bluegreen/web/db"},
                  "API_TOKEN": {"secretsmanager": ARN, "key": "token"},
                  "OLD": {"ssm": "arn:aws:ssm:eu-west-1:123456789012:parameter/bluegreen/web/old:3"},
                  "LOOKS_LIKE_ONE": "ssm:/not/a/reference"})
    assert s.compose_env == {"APP_PORT": "8080", "LOOKS_LIKE_ONE": "ssm:/not/a/reference"}
    assert s.compose_secrets["DB_PASSWORD"] == SecretRef("ssm", "/bluegreen/web/db")
    assert s.compose_secrets["API_TOKEN"] == SecretRef("secretsmanager", ARN, "token")
    assert (s.compose_secrets["API_TOKEN"].region, s.compose_secrets["DB_PASSWORD"].region) == ("eu-west-1", None)
    assert s.compose_secrets["OLD"].region == "eu-west-1"
    # `show` and `--dry-run` print the reference as written.
    shown = s.as_dict()["compose_env"]
    assert shown["DB_PASSWORD"] == {"ssm": "/bluegreen/web/db"}
    assert shown["API_TOKEN"] == {"secretsmanager": ARN, "key": "token"}


@pytest.mark.parametrize("value,words", [
    ({"ssm": "/a", "secretsmanager": "b"}, "must be a plain value, {ssm: NAME} or"),
    ({}, "got the keys none"),
    ({"vault": "/a"}, "got the keys vault"),
    ({"ssm": "/a", "version": 3}, "got the keys ssm, version"),
    ({"ssm": "/a b"}, "'/a b' is not a valid ssm name or ARN"),
    ({"ssm": 5}, "5 is not a valid ssm name"),
    ({"secretsmanager": "arn:aws:s3:::bucket"}, "is not a valid secretsmanager name or ARN"),
    ({"ssm": "/a", "key": "k"}, "key (a field of a JSON secret) goes with secretsmanager only"),
    ({"secretsmanager": "a", "key": ""}, "goes with secretsmanager only, as a non-empty string"),
])
def test_bad_references_are_refused_with_one_line(value, words):
    with pytest.raises(SettingsError) as err:
        settings({"DB_PASSWORD": value})
    assert err.value.exit_code == 5 and "compose_env: DB_PASSWORD" in str(err.value) and words in str(err.value)


def test_a_health_url_may_not_name_a_secret():
    with pytest.raises(SettingsError, match="names TOKEN, a secret reference"):
        resolve({}, tags_to_settings(dict(TAGS, **{"bluegreen:health-url": "http://127.0.0.1/${TOKEN}"})),
                {"compose_env": {"TOKEN": {"ssm": "/t"}}})


# -- resolution (agent/secrets.py) against the emulated AWS --------------------------------------------------
@pytest.fixture
def store(aws):
    ssm = boto3.client("ssm", region_name=REGION)
    sm = boto3.client("secretsmanager", region_name=REGION)
    ssm.put_parameter(Name="/bluegreen/web/db", Value="s3cr3t-db", Type="SecureString")
    ssm.put_parameter(Name="/bluegreen/web/plain", Value="not-secret", Type="String")
    sm.create_secret(Name="bluegreen/web/api", SecretString=json.dumps({"token": "s3cr3t-token", "n": 7}))
    sm.create_secret(Name="bluegreen/web/raw", SecretString="s3cr3t-raw")
    sm.create_secret(Name="bluegreen/web/bin", SecretBinary=b"\x00\x01")

    def client(service):
        return lambda region: boto3.client(service, region_name=region)

    return {"ssm": client("ssm"), "secretsmanager": client("secretsmanager")}


def _resolve(store, refs):
    return secrets.resolve(refs, REGION, store["ssm"], store["secretsmanager"])


def test_values_come_from_parameter_store_and_secrets_manager(store, caplog):
    caplog.set_level("DEBUG", logger="agent")  # botocore stays at INFO in the agent, even with --debug (cli.py)
    values = _resolve(store, {
        "DB": SecretRef("ssm", "/bluegreen/web/db"), "PLAIN": SecretRef("ssm", "/bluegreen/web/plain"),
        "TOKEN": SecretRef("secretsmanager", "bluegreen/web/api", "token"),
        "N": SecretRef("secretsmanager", "bluegreen/web/api", "n"),
        "RAW": SecretRef("secretsmanager", "bluegreen/web/raw")})
    assert values == {"DB": "s3cr3t-db", "PLAIN": "not-secret", "TOKEN": "s3cr3t-token", "N": "7",
                      "RAW": "s3cr3t-raw"}
    assert "s3cr3t" not in caplog.text and "DB from ssm:/bluegreen/web/db" in caplog.text


@pytest.mark.parametrize("ref,words", [
    (SecretRef("ssm", "/bluegreen/web/missing"),
     "ssm:/bluegreen/web/missing (compose_env X): no such parameter (ParameterNotFound"),
    (SecretRef("secretsmanager", "bluegreen/web/missing"),
     "secretsmanager:bluegreen/web/missing (compose_env X): no such secret (ResourceNotFoundException"),
    (SecretRef("secretsmanager", "bluegreen/web/api", "nope"),
     "secretsmanager:bluegreen/web/api key nope (compose_env X): the secret is not a JSON object with the key nope"),
    (SecretRef("secretsmanager", "bluegreen/web/raw", "token"), "is not a JSON object with the key token"),
    (SecretRef("secretsmanager", "bluegreen/web/bin"), "the secret holds binary data"),
])
def test_a_reference_that_cannot_be_read_is_one_line_naming_it(store, ref, words):
    with pytest.raises(SettingsError) as err:
        _resolve(store, {"X": ref})
    message = str(err.value)
    assert words in message and "\n" not in message and "s3cr3t" not in message
    assert err.value.exit_code == 5 and err.value.step == "settings"


def test_access_denied_names_the_reference_and_the_grant_it_needs():
    # The emulation does not enforce IAM: AWS's own AccessDeniedException answer, fed to a real client.
    client = boto3.client("ssm", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("get_parameter", service_error_code="AccessDeniedException", http_status_code=400,
                              service_message="User: arn:aws:sts::123456789012:assumed-role/web/i-1 is not "
                                              "authorized to perform: ssm:GetParameter on resource: "
                                              "arn:aws:ssm:us-east-1:123456789012:parameter/bluegreen/web/db",
                              expected_params={"Name": "/bluegreen/web/db", "WithDecryption": True})
        with pytest.raises(SettingsError) as err:
            secrets.resolve({"DB": SecretRef("ssm", "/bluegreen/web/db")}, REGION, lambda region: client, None)
    assert str(err.value).startswith("ssm:/bluegreen/web/db (compose_env DB): access denied: the instance role "
                                     "needs ssm:GetParameter")
    assert "iam/agent-secrets-policy.json" in str(err.value) and "not authorized" in str(err.value)


def test_an_arn_is_read_in_its_own_region(store):
    # The same name in two Regions: a plain name is read in the instance's Region, an ARN in the one it names.
    boto3.client("ssm", region_name="eu-west-1").put_parameter(Name="/bluegreen/web/db", Value="s3cr3t-eu",
                                                                Type="SecureString")
    arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/bluegreen/web/db"
    assert _resolve(store, {"EU": SecretRef("ssm", arn), "US": SecretRef("ssm", "/bluegreen/web/db")}) == {
        "EU": "s3cr3t-eu", "US": "s3cr3t-db"}


# -- the public command, no Docker: everything here fails or stops before the bundle --------------------------
SECRET_ENV = {"APP_PORT": "18001", "DB_PASSWORD": {"ssm": "/bluegreen/web/db"},
              "API_TOKEN": {"secretsmanager": "bluegreen/web/api", "key": "token"}}


def test_show_and_dry_run_print_references_never_values(aws, store, imds_for, tmp_path):
    group = Group(aws.endpoint, "web-blue", TAGS)
    runner = AgentRunner(tmp_path, imds_for(group.instance_ids[0], aws.endpoint),
                         config={"compose_project": "site", "compose_env": SECRET_ENV})
    shown = runner("show", "--output", "json")
    expect_exit(shown, 0)
    env = json.loads(shown.stdout)["settings"]["compose_env"]
    assert env["DB_PASSWORD"] == {"ssm": "/bluegreen/web/db"} and env["APP_PORT"] == "18001"
    text = runner("show")
    planned = runner("run", "--dry-run", "--debug")
    expect_exit(planned, 0)
    steps = {s["step"]: s for s in json.loads(planned.stdout)["plan"]["steps"]}
    assert steps["settings"]["resolve_secrets"] == {"API_TOKEN": "secretsmanager:bluegreen/web/api key token",
                                                    "DB_PASSWORD": "ssm:/bluegreen/web/db"}
    for result in (shown, text, planned):
        assert "s3cr3t" not in result.stdout + result.stderr
    assert not os.path.exists(runner.workdir)


def test_an_unreadable_reference_fails_before_anything_and_abandons_the_launch(aws, store, imds_for, tmp_path):
    aws.configure_time(time_scale=0.05)  # the hook's 30 s timeout: 1.5 s real, more than this run needs
    group = Group(aws.endpoint, "web-blue", dict(TAGS, **{"bluegreen:lifecycle-hook": "launch"}),
                  launch_hook="launch")
    instance_id = group.instance_ids[0]
    assert group.lifecycle_state(instance_id) == "Pending:Wait"
    env = dict(SECRET_ENV, MISSING={"ssm": "/bluegreen/web/missing"})
    runner = AgentRunner(tmp_path, imds_for(instance_id, aws.endpoint),
                         config={"compose_project": "site", "compose_env": env, "heartbeat_interval": 0.05})
    result = runner("run")
    line = agent_error(result, 5)
    assert line.startswith("bluegreen-agent: settings failed: ssm:/bluegreen/web/missing (compose_env MISSING): "
                           "no such parameter (ParameterNotFound")
    assert "lifecycle hook launch completed with ABANDON" in result.stderr
    assert group.lifecycle_state(instance_id) in (None, "Terminating", "Terminated", "Terminating:Wait",
                                                  "Terminating:Proceed")
    status = runner.status()
    assert status["error"]["step"] == "settings" and "bundle" not in status["steps"]
    assert not os.path.exists(os.path.join(runner.workdir, "releases"))
    with open(os.path.join(runner.workdir, "status.json")) as f:
        assert "s3cr3t" not in f.read()
    assert "s3cr3t" not in result.stdout + result.stderr  # the two readable ones were read first, and not shown
