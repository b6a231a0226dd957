"""`deployer.cli.main(argv, environ, seams)` in process: usage, validation, exit codes and the one error line.

Most of these fail before any AWS call; the rest talk to the emulated AWS through the `aws` fixture's standard
SDK environment (C1).
"""

import json
import os
import signal
import socket
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError

from deployer import cli, plan
from deployer.aws import translate
from deployer.steps import Call, CallStep
from localcloud.scenario import create_service
from tests.helpers import Outcome, expect_exit, wait_until


def run(capsys, *argv, environ=None, seams=None):
    code = cli.main([str(a) for a in argv], environ=environ or {}, seams=seams)
    out = capsys.readouterr()
    return Outcome(code, out.out, out.err)


def test_version_prints_the_tools_own_version(capsys):
    from agent import contract
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bluegreen {contract.__version__}"


@pytest.mark.parametrize("argv, message", [
    (("deploy", "demo", "not a tag"), "is not a valid Docker tag"),
    (("deploy", "demo", "x/y"), "is not a valid Docker tag"),
    (("canary", "demo", "x" * 129), "is not a valid Docker tag"),
    (("push-bootstrap", "/nonexistent", "s3://bucket/x/"), "'/nonexistent' is not a directory"),
])
def test_bad_input_is_one_line_exit_2_before_any_aws_call(capsys, argv, message):
    out = run(capsys, *argv, "--output", "json")
    expect_exit(out, 2, message, prog="bluegreen")
    summary = json.loads(out.stdout)
    assert (summary["result"], summary["exit_code"], summary["aws_calls"]) == ("error", 2, 0)
    assert summary["schema_version"] == 1


@pytest.mark.parametrize("environ, argv, message", [
    ({"BLUEGREEN_POLL_INTERVAL": "0"}, (), "BLUEGREEN_POLL_INTERVAL='0' is not a positive number of seconds"),
    ({"BLUEGREEN_POLL_INTERVAL": "nan"}, (), "is not a positive number of seconds"),
    ({"BLUEGREEN_TIMEOUT": "-1"}, (), "BLUEGREEN_TIMEOUT='-1' is not a positive number of seconds"),
    ({"BLUEGREEN_LEASE": "30"}, (), "BLUEGREEN_LEASE=30 is below 180 s"),
])
def test_unusable_poll_intervals_and_timeouts_are_bad_input(capsys, environ, argv, message):
    expect_exit(run(capsys, "deploy", "demo", "2.0", "--dry-run", *argv, environ=environ), 2, message)


@pytest.mark.parametrize("flag, value", [("--timeout", "nan"), ("--poll-interval", "0"), ("--timeout", "-3")])
def test_unusable_flags_are_usage_errors(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["deploy", "demo", "2.0", flag, value])
    assert exit_info.value.code == 2
    assert "positive, finite number of seconds" in capsys.readouterr().err


def test_missing_credentials_exit_4_with_what_to_set(capsys, aws, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    expect_exit(run(capsys, "status", "demo"), 4, "no AWS credentials found")
    expect_exit(run(capsys, "status", "demo", "--profile", "nosuch"), 4, "nosuch")


def test_an_unknown_service_is_exit_2_after_one_describe(capsys, aws):
    out = run(capsys, "deploy", "nosuch", "2.0", "--output", "json")
    expect_exit(out, 2, "no Auto Scaling group is tagged bluegreen:service=nosuch in this account and Region")
    assert json.loads(out.stdout)["aws_calls"] == 1


def test_access_denied_names_the_policy_to_check():
    exc = ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "EnterStandby")
    err = translate(exc, "enter_standby")
    assert err.exit_code == 4 and err.code == "AccessDenied"
    assert str(err) == ("enter_standby: AccessDenied: not allowed (check the credentials, profile and IAM policy: "
                        "iam/deployer-policy.json)")


def test_a_planner_bug_is_our_error_not_a_traceback(capsys, aws, monkeypatch):
    def typo(snap, ctx, version, launch=None):
        return [CallStep("oops", "typo", (Call("EnterStandy", {}),))]

    monkeypatch.setattr(plan, "plan_deploy", typo)
    create_service(boto3.session.Session(), capacity=0, image=None)  # no image: pre-flight only warns
    out = run(capsys, "deploy", "demo", "2.0")
    expect_exit(out, 1, "a plan names the AWS operation 'EnterStandy', which the deployer does not make")
    assert "Traceback" not in out.stderr


def test_debug_prints_the_traceback_too(capsys):
    out = run(capsys, "deploy", "demo", "bad tag", "--debug")
    expect_exit(out, 2, "is not a valid Docker tag")
    assert "Traceback" in out.stderr


def test_ctrl_c_exits_130_and_says_how_to_resume(capsys, aws):
    def interrupt(args):
        raise KeyboardInterrupt

    out = run(capsys, "status", "demo", seams=cli.Seams(make_clients=interrupt))
    assert out.returncode == 130
    assert "rerun the same command to resume, or `bluegreen rollback`" in out.stderr


# -- who holds the lock ----------------------------------------------------------------------------------


def test_holder_alive_on_this_host():
    host = socket.gethostname()
    assert cli.holder_alive(f"ci@{host}:{os.getpid()}")
    assert not cli.holder_alive(f"ci@{host}:notapid")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not cli.holder_alive(f"ci@{host}:{child.pid}")  # exited and reaped: gone


def test_a_killed_holder_not_yet_reaped_is_not_alive():
    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(child.pid, signal.SIGKILL)
        def zombie():  # killed, not yet reaped: /proc/PID/stat says Z
            with open(f"/proc/{child.pid}/stat") as f:
                return f.read().rsplit(")", 1)[-1].split()[0] == "Z"

        wait_until(zombie, "the killed child to be a zombie")
        assert not cli.holder_alive(f"ci@{host}:{child.pid}")
    finally:
        child.wait()


def test_a_holder_on_another_host_is_assumed_alive():
    assert cli.holder_alive("ci@some-other-builder:4242")
    assert not cli.holder_alive("ci@:4242")  # no host at all: an unreadable holder is not a live one
