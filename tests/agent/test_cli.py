"""The command line without Docker: `show`, `--dry-run`, usage errors and early failures, each through the real
`bluegreen-agent` subprocess against the emulated AWS and an IMDS emulator."""

import json
import os
import subprocess
import sys

import pytest

from agent import contract
from tests.agent.conftest import AGENT, AgentRunner, Group, agent_error
from tests.helpers import expect_exit

TAGS = {"bluegreen:version": "1.0", "bluegreen:image": "127.0.0.1:5000/web",
        "bluegreen:bootstrap": "s3://bluegreen-bootstrap/web/"}


@pytest.fixture
def runner(aws, imds_for, tmp_path):
    group = Group(aws.endpoint, "web-blue", TAGS)
    # A12: the instance's own tag disagrees with the group's (stale, or propagated late); the group's must win.
    assert group.tag_instance(group.instance_ids[0], {"bluegreen:version": "6.6"})["bluegreen:version"] == "6.6"
    r = AgentRunner(tmp_path, imds_for(group.instance_ids[0], aws.endpoint), config={"compose_project": "site"})
    r.group = group
    return r


def test_help_documents_exit_codes_and_imports_nothing_heavy():
    out = subprocess.run([AGENT, "--help"], capture_output=True, text=True, check=True).stdout
    for line in ("0   success", "3   instance identity", "5   a setting", "7   image", "10  another agent"):
        assert line in out
    loaded = subprocess.run([sys.executable, "-c", ("import sys, agent.cli; agent.cli.build_parser(); "
                             "print([m for m in ('boto3', 'botocore', 'docker', 'requests', 'yaml') "
                             "if m in sys.modules])")], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", "--help must stay fast: heavy modules are imported lazily"


def test_version_prints_the_agents_own_version():
    result = subprocess.run([AGENT, "--version"], capture_output=True, text=True, check=False)
    expect_exit(result, 0)
    assert result.stdout == f"bluegreen-agent {contract.__version__}\n"


def test_show_prints_identity_group_tags_and_settings(runner):
    result = runner("show", "--output", "json")
    expect_exit(result, 0)
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == contract.SCHEMA_VERSION
    assert doc["instance_id"] == runner.group.instance_ids[0] and doc["group"] == "web-blue"
    assert doc["tags"] == TAGS
    # A12: the instance's own tag says 6.6; the group's wins.
    assert doc["settings"]["version"] == "1.0" and doc["settings"]["sources"]["version"] == "tag"
    assert doc["settings"]["compose_project"] == "site"
    text = runner("show").stdout
    assert "group              web-blue" in text and "bluegreen:version = 1.0" in text


def test_show_reports_an_invalid_tag_and_exits_with_its_code(runner):
    runner.group.set_tags(version="not valid!")
    result = runner("show", "--output", "json")
    assert "not a valid Docker tag" in json.loads(result.stdout)["settings_error"]
    assert "settings failed: version 'not valid!' (from tag)" in agent_error(result, 5)


def test_dry_run_prints_the_plan_and_changes_nothing(runner):
    result = runner("run", "--dry-run", "--app-version", "2.0", "--s3-unsigned")
    expect_exit(result, 0)
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == contract.SCHEMA_VERSION
    steps = {s["step"]: s for s in doc["plan"]["steps"]}
    assert steps["image"]["pull"] == "127.0.0.1:5000/web:2.0"
    assert steps["bundle"]["reader"].startswith("unsigned GET " + os.environ["AWS_ENDPOINT_URL"])
    assert doc["plan"]["version_source"] == "flag" and "version override" in result.stderr
    assert not os.path.exists(runner.workdir)


def test_the_old_app_version_spelling_is_accepted_and_says_so(runner, capsys, caplog):
    result = runner.in_process(capsys, "run", "--dry-run", "--version", "2.0")
    expect_exit(result, 0)
    assert json.loads(result.stdout)["plan"]["version"] == "2.0"
    assert "`run --version VERSION` is deprecated: use `run --app-version VERSION`" in caplog.text
    # Both spellings at once: a usage error, not a guess.
    with pytest.raises(SystemExit) as exited:
        runner.in_process(capsys, "run", "--dry-run", "--version", "2.0", "--app-version", "3.0")
    assert exited.value.code == 2 and "give the app version once" in capsys.readouterr().err


def test_usage_and_config_errors_exit_2(runner, tmp_path):
    assert subprocess.run([AGENT, "run", "--bogus"], capture_output=True, check=False).returncode == 2
    result = subprocess.run([AGENT, "run", "--config", str(tmp_path / "absent.yml")], capture_output=True,
                            text=True, check=False)
    assert "config failed: config file" in agent_error(result, 2)
    runner.config["compose_projekt"] = "typo"
    assert "unknown setting(s) compose_projekt" in agent_error(runner("run"), 2)


def test_imds_disabled_exits_3_and_records_the_failure(runner):
    runner.imds.disabled = True
    assert "identity failed: IMDS at" in agent_error(runner("run"), 3)
    status = runner.status()
    assert status["result"] == "failed" and status["error"]["exit_code"] == 3


def test_an_instance_in_no_group_exits_4(aws, imds_for, tmp_path):
    r = AgentRunner(tmp_path, imds_for("i-0000000000000dead", aws.endpoint), config={"group_deadline": 1})
    assert "group failed: instance i-0000000000000dead is not in any Auto Scaling group" in \
        agent_error(r("run"), 4)


def test_throttled_auto_scaling_calls_are_retried_by_botocore(runner, aws):
    # A10: every second Auto Scaling call answers `Throttling`; the agent's adaptive retry mode rides it out.
    aws.configure_faults(throttle_fraction=0.5)
    result = runner("show", "--output", "json")
    expect_exit(result, 0)
    assert json.loads(result.stdout)["group"] == "web-blue"


def test_imds_failing_early_in_boot_is_retried(runner):
    # I3: IMDS answers 503 three times, then recovers; the agent waits it out within its deadline.
    runner.imds.fail_next(3, status=503)
    result = runner("show", "--output", "json")
    expect_exit(result, 0)
    assert json.loads(result.stdout)["instance_id"] == runner.group.instance_ids[0]
    assert runner.imds.requests >= 3 + 2  # the failures, then the token and the document


def test_under_the_unit_progress_goes_to_stdout_and_stderr_holds_only_the_failure_line(runner):
    # audit F16: the unit sends stderr to the EC2 console (journal+console) and sets this variable, so the console
    # gets the one line that says why, not the progress (the console output is capped and outlives the instance).
    env = dict(runner.env(), BLUEGREEN_AGENT_LOG_STREAM="stdout")
    result = subprocess.run(runner.command("run"), env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 6, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bluegreen-agent: bundle failed: "), result.stderr
    assert "INFO " in result.stdout  # the progress is still there, in the journal
    default = runner("run")  # without the variable (an operator's shell): progress on stderr, as before
    assert "INFO " in default.stderr and default.stderr.rstrip().splitlines()[-1].startswith(
        "bluegreen-agent: bundle failed: ")


@pytest.mark.parametrize("interval", ["0", "-5", "0.1", "soon", "inf", "nan"])
def test_watch_refuses_an_interval_that_would_busy_loop_in_one_line(interval):
    out = subprocess.run([AGENT, "watch", "--interval", interval, "--once"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 2 and "argument --interval" in out.stderr.strip().splitlines()[-1], out.stderr
