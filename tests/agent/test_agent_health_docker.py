"""The health step against the real engine and compose v2 (audit F6, F12), through `bluegreen-agent run` as a
subprocess: a one-shot init service that exits 0 passes, one that exits 1 fails, a crash-looping service fails
naming itself, a leftover one-off container is ignored, and an engaged launch hook with nothing to verify is
refused before anything switched and ABANDONed."""

import os
import subprocess

import pytest
import yaml

from agent import contract
from tests.agent import test_agent_docker as base
from tests.agent.conftest import agent_error, upload_bundle
from tests.agent.test_agent_docker import ABANDONED, HOOK_TIME_SCALE
from tests.helpers import expect_exit

pytestmark = pytest.mark.docker
# The engine, the sample app's images and the emulated instance's stack, as test_agent_docker.py makes them.
engine, images, make_stack = base.engine, base.images, base.make_stack

BUSYBOX_SH = ["/bin/busybox", "sh", "-c"]


def compose_file(stack, extra=None, healthcheck=True, web_extra=None):
    """The sample app's service (the FROM-scratch busybox image, host network) plus `extra` services running the
    same image with their own command."""
    web = {"image": stack.fixed_ref, "network_mode": "host", "restart": "unless-stopped",
           "environment": {"APP_PORT": "${APP_PORT:-8080}"}}
    if healthcheck:
        web["healthcheck"] = {"test": ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null",
                                       "http://127.0.0.1:${APP_PORT:-8080}/health"],
                              "interval": "1s", "timeout": "2s", "retries": 3, "start_period": "5s"}
    web.update(web_extra or {})
    services = {"web": web}
    for name, service in (extra or {}).items():
        services[name] = dict({"image": stack.fixed_ref, "network_mode": "none"}, **service)
    return yaml.safe_dump({"services": services}, sort_keys=False).encode()


def publish(stack, aws, prefix, **kwargs):
    stack.group.set_tags(bootstrap=upload_bundle(aws.endpoint, {contract.COMPOSE_FILE: compose_file(stack, **kwargs)},
                                                 prefix=prefix))


def by_service(stack):
    found = stack.engine.containers.list(all=True, filters={
        "label": "com.docker.compose.project=" + stack.runner.config["compose_project"]})
    return {(c.labels["com.docker.compose.service"], c.labels.get("com.docker.compose.oneoff")): c for c in found}


INIT_OK = {"command": BUSYBOX_SH + ["exit 0"], "restart": "no"}


def test_a_one_shot_init_service_that_exits_0_is_complete(make_stack, aws):
    # compose's pattern for migrations: the app waits for the init job, which exits 0 and stays `exited (0)`.
    stack = make_stack()
    publish(stack, aws, "oneshot-ok/", extra={"init": INIT_OK},
            web_extra={"depends_on": {"init": {"condition": "service_completed_successfully"}}})
    result = stack.runner("run")
    expect_exit(result, 0)
    assert stack.served() == "1.0"
    init = by_service(stack)[("init", "False")]
    assert init.attrs["State"]["Status"] == "exited" and init.attrs["State"]["ExitCode"] == 0
    assert "init exited(0)" in result.stderr and "needs 3 over 2.0s" in result.stderr, result.stderr


def test_a_one_shot_service_that_exits_1_fails_the_run_naming_it(make_stack, aws):
    stack = make_stack()
    publish(stack, aws, "oneshot-bad/", extra={"check": {"command": BUSYBOX_SH + ["exit 1"], "restart": "no"}})
    line = agent_error(stack.runner("run"), 9)
    assert "health failed: project" in line and "service check exited with code 1" in line
    assert stack.runner.status()["error"]["step"] == "health"


@pytest.mark.parametrize("with_url", [False, True], ids=["containers", "health-url"])
def test_a_crash_looping_service_fails_naming_it(make_stack, aws, with_url):
    # F12: `running` for an instant is not healthy. The loop is seen by the container check, and also when a
    # health URL (served by another service) answers 2xx all along.
    stack = make_stack()
    if with_url:
        stack.group.set_tags(health_url="http://127.0.0.1:${APP_PORT}/health")
    publish(stack, aws, "loop/", extra={"worker": {"command": BUSYBOX_SH + ["sleep 1; exit 1"], "restart": "always"}})
    line = agent_error(stack.runner("run"), 9)
    assert "service worker is in a restart loop" in line, line
    assert line.startswith("bluegreen-agent: health failed: " + ("http://127.0.0.1:" if with_url else "project"))


def test_a_leftover_one_off_container_does_not_fail_the_run(make_stack, aws):
    # `up --remove-orphans` removes one-off containers that exist before it runs; one that an operator starts
    # while the agent waits for health (`docker compose run` without --rm) is still there to be ignored.
    stack = make_stack()
    stack.runner.config["health_stable_s"] = 6  # a wait long enough to start the one-off inside it
    publish(stack, aws, "oneoff/", extra={"init": INIT_OK})
    proc = base.start_until_health_wait(stack)
    try:
        current = os.path.realpath(os.path.join(stack.runner.workdir, "current"))
        run = subprocess.run(["docker", "compose", "-p", stack.runner.config["compose_project"], "--project-directory",
                              current, "-f", os.path.join(current, contract.COMPOSE_FILE), "run", "--no-deps", "init",
                              *BUSYBOX_SH, "exit 3"], env=dict(os.environ, APP_PORT=str(stack.port)),
                             capture_output=True, text=True, check=False, timeout=60)
        assert run.returncode == 3, run.stderr
        leftover = by_service(stack)[("init", "True")]
        assert leftover.attrs["State"]["ExitCode"] == 3, "premise: the one-off container exited non-zero"
        assert proc.poll() is None, "premise: the agent was still in its health wait when the one-off exited"
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert stack.served() == "1.0"
    assert by_service(stack)[("init", "True")].id == leftover.id


def test_an_engaged_hook_without_url_or_healthcheck_is_refused_and_abandoned(make_stack, aws):
    aws.configure_time(time_scale=HOOK_TIME_SCALE)
    stack = make_stack(launch_hook="launch")
    instance_id = stack.group.instance_ids[0]
    stack.runner.config["heartbeat_interval"] = 0.05
    publish(stack, aws, "no-check/", healthcheck=False)
    result = stack.runner("run")
    line = agent_error(result, 5)
    assert "settings failed: launch hook launch is engaged but there is no health URL" in line
    assert "lifecycle hook launch completed with ABANDON" in result.stderr
    assert stack.group.lifecycle_state(instance_id) in ABANDONED
    # Refused before the point of no return: no `current` bundle, no container, the fixed tag not made.
    assert not os.path.exists(os.path.join(stack.runner.workdir, "current"))
    assert by_service(stack) == {}
    assert stack.fixed_ref not in {t for i in stack.engine.images.list() for t in i.tags}
    assert "activate" not in stack.runner.status()["steps"]
