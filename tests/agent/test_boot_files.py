"""How an instance boots the agent (issue 11, boot): the user-data template and its strict renderer
(`bluegreen user-data`, Debian's real `cloud-init schema`), the baked units (`systemd-analyze verify` in a root
holding the host's real cloud-init units, so an ordering cycle shows), and the OnFailure= fallback script."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from agent.settings import LOCAL_DEFAULTS, load_config
from deployer import userdata
from deployer.errors import UsageError
from tests.helpers import expect_exit, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "cloud-init", "user-data.yaml.tmpl")
SYSTEMD = os.path.join(ROOT, "systemd")
UNIT = os.path.join(SYSTEMD, "bluegreen-agent.service")
ABANDON_UNIT = os.path.join(SYSTEMD, "bluegreen-agent-abandon.service")
BLUEGREEN = os.path.join(os.path.dirname(sys.executable), "bluegreen")
VALUES = {"COMPOSE_PROJECT": "web", "BOOTSTRAP_BUCKET": "bluegreen-bootstrap", "S3_UNSIGNED": "true"}


def read(path):
    with open(path) as f:
        return f.read()


def user_data(*args):
    return subprocess.run([BLUEGREEN, "user-data", *args], capture_output=True, text=True, check=False)


def unit_lines(path):
    return [line for line in read(path).splitlines() if line and not line.startswith("#")]


# -- user-data ---------------------------------------------------------------------------------------------
@pytest.mark.system_tools  # Debian's cloud-init: not in `make unit`
def test_rendered_user_data_passes_cloud_init_schema(tmp_path):
    result = user_data("--compose-project", "web", "--bucket", "bluegreen-bootstrap", "--s3-unsigned")
    expect_exit(result, 0)
    path = tmp_path / "user-data.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0 and "Valid cloud-config" in check.stdout, check.stdout + check.stderr


def test_user_data_only_writes_the_settings_root_only_and_starts_the_baked_unit(tmp_path):
    result = user_data("--compose-project", "web", "--bucket", "bluegreen-bootstrap")
    expect_exit(result, 0)
    doc = yaml.safe_load(result.stdout)
    # Nothing installed at boot (audit F2): no packages, no pip, no unit file; the unit is baked.
    assert set(doc) == {"write_files", "runcmd"}
    assert [f["path"] for f in doc["write_files"]] == ["/etc/bluegreen/agent.yml"]
    entry = doc["write_files"][0]
    assert entry["permissions"] == "0600" and entry["owner"] == "root:root"  # audit F15
    config = tmp_path / "agent.yml"
    config.write_text(entry["content"])
    assert load_config(str(config), required=True) == {  # the agent's own loader accepts it
        "workdir": "/opt/bluegreen", "compose_project": "web", "allowed_buckets": ["bluegreen-bootstrap"],
        "s3_unsigned": False}
    assert doc["runcmd"] == [["systemctl", "start", "--no-block", "bluegreen-agent.service"]]
    commands = "\n".join(line for line in result.stdout.splitlines() if not line.lstrip().startswith("#"))
    assert "pip" not in commands and "venv" not in commands and "packages" not in commands


@pytest.mark.parametrize("args, words", [
    (["--compose-project", "web", "--bucket", ""], "BOOTSTRAP_BUCKET='' is not valid (empty"),
    (["--compose-project", "Web!", "--bucket", "b-1"], "COMPOSE_PROJECT='Web!' is not valid"),
    (["--compose-project", "web", "--bucket", "Not_A_Bucket"], "BOOTSTRAP_BUCKET='Not_A_Bucket' is not valid"),
    (["--compose-project", "web", "--bucket", "b-1", "--template", "/nonexistent"], "cannot read the user-data"),
])
def test_user_data_refuses_bad_values_with_one_line_and_exit_2(args, words):
    result = user_data(*args)
    expect_exit(result, 2, words, prog="bluegreen")
    assert result.stdout == ""


def test_render_is_strict_about_missing_and_unknown_variables():
    template = read(TEMPLATE)
    with pytest.raises(UsageError, match="no value for BOOTSTRAP_BUCKET"):
        userdata.render(template, {"COMPOSE_PROJECT": "web", "S3_UNSIGNED": "false"})
    with pytest.raises(UsageError, match="has no variable PIP_INDEX_URL"):
        userdata.render(template, dict(VALUES, PIP_INDEX_URL="https://x"))
    with pytest.raises(UsageError, match=r"not a \$\{NAME\} placeholder"):
        userdata.render(template + "# costs $5\n", VALUES)
    # What envsubst does with an unset variable: the empty allow-list that means "any bucket" (audit F15).
    envsubst = re.sub(r"\$\{BOOTSTRAP_BUCKET\}", "", template)
    with pytest.raises(UsageError, match="empty allowed_buckets"):
        userdata.render(envsubst, {k: v for k, v in VALUES.items() if k != "BOOTSTRAP_BUCKET"})


def test_template_placeholders_are_the_documented_ones_and_fn_sub_compatible():
    template = read(TEMPLATE)
    names = userdata.placeholders(template)  # raises on any other dollar sign
    assert names == sorted(userdata.CHECKS)
    header = "\n".join(line for line in template.splitlines() if line.startswith("#"))
    for name in names:
        assert re.search(rf"^#   {name} ", header, re.MULTILINE), f"{name} is not documented in the template's header"
    # CloudFormation's Fn::Sub fills ${NAME} from a map; everything else must come through unchanged.
    fn_sub = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: VALUES[m.group(1)], template)
    assert fn_sub == userdata.render(template, VALUES)


def test_the_agent_refuses_an_explicitly_empty_allow_list(tmp_path):
    from agent.errors import ConfigError

    config = tmp_path / "agent.yml"
    config.write_text("compose_project: web\nallowed_buckets: []\n")
    with pytest.raises(ConfigError, match="allowed_buckets is empty"):
        load_config(str(config), required=True)


# -- the units ---------------------------------------------------------------------------------------------
def test_agent_unit_shape():
    lines = unit_lines(UNIT)
    for line in ("Type=oneshot", "RemainAfterExit=yes",
                 "ConditionPathExists=/etc/bluegreen/agent.yml",  # audit F17: only with user-data's settings
                 "ConditionPathExists=!/etc/bluegreen/agent.disabled",
                 "After=network-online.target docker.service cloud-final.service",
                 "StandardError=journal+console",  # audit F16
                 "Environment=BLUEGREEN_AGENT_LOG_STREAM=stdout",  # F16: only the failure line on the console
                 "EnvironmentFile=-/etc/bluegreen/agent.env",  # audit F25: proxy settings
                 "OnFailure=bluegreen-agent-abandon.service",
                 "ExecStart=/opt/bluegreen-agent/venv/bin/bluegreen-agent run",
                 "Environment=AWS_EC2_METADATA_V1_DISABLED=true",
                 "WantedBy=cloud-init.target"):
        assert line in lines, line
    assert not any(line.startswith("Restart=") for line in lines)  # audit F21: why, in the unit's comment
    assert "WantedBy=multi-user.target" not in lines  # the cycle with Debian's cloud-final


def test_unit_start_timeout_is_above_the_agents_own_deadline():
    (timeout,) = [line.split("=", 1)[1] for line in unit_lines(UNIT) if line.startswith("TimeoutStartSec=")]
    seconds = int(timeout[:-3]) * 60 if timeout.endswith("min") else int(timeout.rstrip("s"))
    # audit F13: the agent ends its own run first, with time left to ABANDON and write status.json.
    assert seconds >= LOCAL_DEFAULTS["run_deadline"] + 120


def _boot_root(tmp_path, unit_text=None):
    """A root folder as the baked image has it: the host's real systemd and cloud-init units, cloud-init's units
    enabled and its target linked into multi-user.target (what cloud-init's generator does at boot), and ours
    installed and enabled as the bake recipe does."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    os.symlink("usr/lib", root / "lib")
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name in ("bluegreen-agent.service", "bluegreen-agent-abandon.service"):
        text = read(os.path.join(SYSTEMD, name))
        (etc / name).write_text(unit_text if unit_text and name == "bluegreen-agent.service" else text)
    for path in ("opt/bluegreen-agent/venv/bin/bluegreen-agent", "usr/libexec/bluegreen-agent/abandon"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(SYSTEMD, "libexec", "abandon"), root / path)  # any executable will do
    (etc / "multi-user.target.wants").mkdir()
    os.symlink("/usr/lib/systemd/system/cloud-init.target", etc / "multi-user.target.wants/cloud-init.target")
    subprocess.run(["systemctl", "--root", str(root), "enable", "cloud-init-local.service", "cloud-init.service",
                    "cloud-config.service", "cloud-final.service", "bluegreen-agent.service"],
                   check=True, capture_output=True)
    return root


def _verify(root):
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", "multi-user.target", "cloud-init.target",
                           "bluegreen-agent.service", "bluegreen-agent-abandon.service"],
                          capture_output=True, text=True, check=False)


@pytest.mark.system_tools  # systemd-analyze and Debian's cloud-init units: not in `make unit`
def test_units_verify_without_an_ordering_cycle_against_the_real_cloud_init_units(tmp_path):
    root = _boot_root(tmp_path)
    assert (root / "etc/systemd/system/cloud-init.target.wants/bluegreen-agent.service").is_symlink()
    result = _verify(root)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.system_tools
def test_the_verify_catches_the_cycle_that_wantedby_multi_user_would_make(tmp_path):
    # The control: the same check on the unit as it would be with WantedBy=multi-user.target must fail, or the
    # test above proves nothing.
    cyclic = read(UNIT).replace("WantedBy=cloud-init.target", "WantedBy=multi-user.target")
    result = _verify(_boot_root(tmp_path, cyclic))
    assert "ordering cycle" in result.stderr, result.stderr


@pytest.mark.system_tools
def test_hardening_lowers_the_exposure_score(tmp_path):
    root = _boot_root(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                             "bluegreen-agent.service"], capture_output=True, text=True, check=False)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))
    assert score < 7.0, result.stdout  # 9.6 UNSAFE before (audit F21)


# -- the OnFailure= fallback: systemd/libexec/abandon with the real AWS CLI ----------------------------------------
ABANDON = os.path.join(SYSTEMD, "libexec", "abandon")
# systemd's PATH for services: the image's AWS CLI and curl, never the agent's venv (audit F2).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_abandon(aws, imds, **extra):
    env = {"PATH": SERVICE_PATH, "AWS_ENDPOINT_URL": aws.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
           "MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_CODE": "exited", "MONITOR_EXIT_STATUS": "203",
           "HOME": "/nonexistent"}
    env.update(extra)
    return subprocess.run([ABANDON], env=env, capture_output=True, text=True, timeout=120, check=False)


def one_line(result, code):
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and result.stdout == "", result.stdout + result.stderr
    return lines[0]


@pytest.mark.system_tools  # Debian's awscli and curl: not in `make unit`
def test_the_fallback_abandons_a_launch_the_agent_never_started_for(aws, imds_for):
    from tests.agent.conftest import Group

    aws.configure_time(time_scale=1.0)  # the hook's 30 s timeout runs in real time: it must not lapse first
    group = Group(aws.endpoint, "web-fallback", {"bluegreen:version": "1.0"}, launch_hook="launch")
    instance_id = group.instance_ids[0]
    assert group.lifecycle_state(instance_id) == "Pending:Wait"
    line = one_line(run_abandon(aws, imds_for(instance_id, aws.endpoint)), 0)
    assert line == (f"bluegreen-agent-abandon: ABANDONing the launch of {instance_id} in web-fallback (hook launch) "
                    "because bluegreen-agent.service exit-code (exited 203)")
    assert group.lifecycle_state(instance_id) in (None, "Terminating", "Terminating:Wait", "Terminating:Proceed",
                                                  "Terminated")


@pytest.mark.system_tools
@pytest.mark.parametrize("imds_host", ["127.0.0.1", "::1"])  # ::1: an IPv6 IMDS, as fd00:ec2::254 (F19)
def test_the_fallback_leaves_an_instance_no_hook_holds(aws, imds_host):
    from localcloud.imds import IMDSServer
    from tests.agent.conftest import Group

    group = Group(aws.endpoint, "web-serving", {"bluegreen:version": "1.0"})
    instance_id = group.instance_ids[0]
    wait_until(lambda: group.lifecycle_state(instance_id) == "InService", "the instance to be InService")
    with IMDSServer(instance_id, aws_endpoint=aws.endpoint, host=imds_host) as imds:
        line = one_line(run_abandon(aws, imds), 0)
    assert line == (f"bluegreen-agent-abandon: {instance_id} is InService in web-serving: no launch to abandon "
                    "(bluegreen-agent.service exit-code (exited 203))")
    assert group.lifecycle_state(instance_id) == "InService"


@pytest.mark.system_tools
def test_the_fallback_says_why_it_could_not_and_exits_1(aws, imds_for):
    imds = imds_for("i-0123456789abcdef0", aws.endpoint)
    imds.disabled = True  # I1: 403
    line = one_line(run_abandon(aws, imds), 1)
    assert line == (f"bluegreen-agent-abandon: no IMDSv2 token from {imds.endpoint} (curl exit 22) "
                    "(bluegreen-agent.service exit-code (exited 203)); the launch hook's own timeout applies")


def test_the_fallback_makes_only_calls_the_agent_policy_grants():
    from tests.iam import granted_operations

    script = read(ABANDON)
    used = {"".join(w.title() for w in op.split("-")) for op in re.findall(r"^\s*\S*asg (\S+)|\$\(asg (\S+)", script)
            for op in op if op}
    used = {op for op in used if op}
    assert used == {"DescribeAutoScalingInstances", "DescribeLifecycleHooks", "CompleteLifecycleAction"}
    assert used <= granted_operations(os.path.join(ROOT, "iam", "agent-policy.json"))


@pytest.mark.system_tools
def test_the_fallback_racing_the_agents_own_abandon_says_it_was_already_released(aws, imds_for, tmp_path):
    # The race: the agent's own ABANDON lands between the fallback's DescribeAutoScalingInstances and its
    # CompleteLifecycleAction, which then fails. A wrapper `aws` injects it: it lets the real CLI complete the
    # action (the agent's ABANDON), then fails the fallback's own call as AWS would.
    from tests.agent.conftest import Group

    aws.configure_time(time_scale=1.0)
    group = Group(aws.endpoint, "web-race", {"bluegreen:version": "1.0"}, launch_hook="launch")
    instance_id = group.instance_ids[0]
    wrapper = tmp_path / "bin" / "aws"
    wrapper.parent.mkdir()
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = complete-lifecycle-action ] && '
                       '{ /usr/bin/aws "$@" >/dev/null; echo "ValidationError: No active Lifecycle Action" >&2; '
                       'exit 254; }; done\nexec /usr/bin/aws "$@"\n')
    wrapper.chmod(0o755)
    result = run_abandon(aws, imds_for(instance_id, aws.endpoint), PATH=f"{wrapper.parent}:{SERVICE_PATH}")
    assert result.returncode == 0, result.stderr
    # The reason first (it must reach the console before a shutdown can stop the unit), then what happened.
    intent, outcome = result.stderr.strip().splitlines()
    state = group.lifecycle_state(instance_id)
    assert intent.startswith(f"bluegreen-agent-abandon: ABANDONing the launch of {instance_id} in web-race")
    assert outcome == (f"bluegreen-agent-abandon: {instance_id} is {state} in web-race: the launch was already "
                       "released (bluegreen-agent.service exit-code (exited 203))")
