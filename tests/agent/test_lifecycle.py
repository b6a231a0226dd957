"""The run's lifecycle without Docker (issue 11, boot): the overall deadline (audit F13), SIGHUP (F11), the
launch hook found with DescribeLifecycleHooks and the heartbeat interval from its timeout (F14), warm-pool
states (A17), and a run killed with SIGKILL (F25). Through the real `bluegreen-agent` against the emulated AWS
and an IMDS emulator where the behaviour lives there; the pure decisions directly."""

import json
import os
import signal
import time

import pytest

from agent import asg
from agent.deadline import MIN_WAIT, Clipped, Deadline
from agent.errors import DeadlineError, HealthError, LifecycleError
from tests.agent.conftest import AgentRunner, Group, agent_error, upload_bundle
from tests.helpers import FakeTime, expect_exit, wait_until

TAGS = {"bluegreen:version": "1.0", "bluegreen:image": "127.0.0.1:5000/web",
        "bluegreen:bootstrap": "s3://bluegreen-bootstrap/web/"}
ABANDONED = (None, "Terminating", "Terminated", "Terminating:Wait", "Terminating:Proceed")
# AWS time 10x fast here: the hook's 30 s HeartbeatTimeout lapses after 3 s real, far beyond these runs.
HOOK_TIME_SCALE = 0.1


@pytest.fixture
def runner(aws, imds_for, tmp_path):
    group = Group(aws.endpoint, "web-blue", TAGS)
    r = AgentRunner(tmp_path, imds_for(group.instance_ids[0], aws.endpoint), config={"compose_project": "site"})
    r.group = group
    return r


# -- the overall deadline (audit F13) -------------------------------------------------------------------------
def test_deadline_clips_every_wait_to_what_remains():
    clock = FakeTime()
    deadline = Deadline(100, clock.now)
    settings = Clipped(type("S", (), {"compose_timeout": 600.0, "imds_deadline": 20.0, "run_deadline": 100.0,
                                      "heartbeat_interval": 60.0, "version": "1.0"})(), deadline)
    assert settings.compose_timeout == 100 and settings.imds_deadline == 20
    assert settings.heartbeat_interval == 60 and settings.run_deadline == 100 and settings.version == "1.0"
    clock.advance(90)
    assert settings.compose_timeout == 10 and settings.imds_deadline == 10
    clock.advance(50)
    assert settings.compose_timeout == MIN_WAIT  # the last step still gets one try
    explained = deadline.explain(HealthError("containers not healthy within 1s"), {"bundle": 120.0})
    assert isinstance(explained, DeadlineError) and explained.step == "health" and explained.exit_code == 12
    assert str(explained) == ("the run's deadline (run_deadline 100s) ran out in step health (steps done: "
                              "bundle 120s): containers not healthy within 1s")
    fresh = Deadline(100, clock.now)
    error = HealthError("unhealthy")
    assert fresh.explain(error) is error  # a failure with time left is its own
    clock.advance(97)
    assert fresh.explain(error) is error  # near the end, but no step was cut short: its own too
    assert fresh.clip(10) == 3 and fresh.explain(error) is not error  # a wait cut short, given up near the end


def test_the_restore_after_a_run_out_of_time_gets_the_whole_compose_timeout(monkeypatch):
    # F11 with F13: the restore must finish even when the run's time is gone; cut to the 1 s floor, its compose up
    # would be killed half way (a real recreate waits out the old container's stop grace period).
    from agent import restore, run

    clock = FakeTime()
    deadline = Deadline(100, clock.now)
    settings = Clipped(type("S", (), {"compose_timeout": 600.0, "run_deadline": 100.0})(), deadline)
    clock.advance(150)
    assert settings.compose_timeout == MIN_WAIT  # premise: the run's time is gone
    seen = {}

    def fake_restore(exc, docker_client, given, before, command, compose_env, status):
        seen["compose_timeout"] = given.compose_timeout
        return exc

    monkeypatch.setattr(restore, "restore", fake_restore)
    with pytest.raises(HealthError):
        run._restore_and_raise(HealthError("unhealthy"), None, settings, None, (), {}, None)
    assert seen == {"compose_timeout": 600.0}


def test_the_run_deadline_ends_a_run_whose_step_would_wait_longer(runner):
    # IMDS answers 503 for ever; its own deadline (10 s here) is longer than the whole run's (2 s).
    runner.imds.fail_next(10_000, status=503)
    runner.config["run_deadline"] = 2
    started = time.monotonic()
    line = agent_error(runner("run"), 12)
    assert time.monotonic() - started < 8
    assert line.startswith("bluegreen-agent: identity failed: the run's deadline (run_deadline 2s) ran out in "
                           "step identity"), line
    status = runner.status()
    assert status["result"] == "failed" and status["error"]["exit_code"] == 12


# -- SIGHUP like SIGTERM (audit F11) ------------------------------------------------------------------------------
def test_sighup_mid_run_is_recorded_like_sigterm(runner, aws, imds_for, tmp_path):
    runner.imds.fail_next(10_000, status=503)  # the run waits in its identity step
    proc = runner.start("run")
    wait_until(lambda: os.path.exists(os.path.join(runner.workdir, "status.json")) and
               runner.status()["in_progress"] == ["identity"], "the run to be in its identity step", deadline_s=30)
    # Meanwhile `show` (which never takes the lock) reports the live run as running, not killed.
    show = AgentRunner(tmp_path, imds_for(runner.group.instance_ids[0], aws.endpoint), name="show")
    show.workdir = runner.workdir
    shown = show("show", "--output", "json")
    expect_exit(shown, 0)
    assert json.loads(shown.stdout)["last_run"]["result"] == "running"
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert err.strip().splitlines()[-1] == ("bluegreen-agent: interrupted (SIGINT, SIGTERM or SIGHUP); "
                                            "status.json records it")
    status = runner.status()
    assert status["result"] == "failed" and "KeyboardInterrupt" in status["error"]["message"]


# -- a run killed with SIGKILL (audit F25) --------------------------------------------------------------------
def test_a_killed_run_is_reported_by_show_and_by_the_next_run(runner, aws, imds_for):
    runner.imds.fail_next(10_000, status=503)
    proc = runner.start("run")
    wait_until(lambda: os.path.exists(os.path.join(runner.workdir, "status.json")) and
               runner.status()["in_progress"] == ["identity"], "the run to be in its identity step", deadline_s=30)
    proc.kill()
    proc.communicate(timeout=30)
    assert runner.status()["result"] == "running"  # what SIGKILL leaves
    runner.imds = imds_for(runner.group.instance_ids[0], aws.endpoint)  # a metadata service that answers
    shown = runner("show", "--output", "json")
    expect_exit(shown, 0)
    last = json.loads(shown.stdout)["last_run"]
    assert last["result"] == "killed" and last["in_progress"] == ["identity"] and last["pid"] == proc.pid
    assert f"last_run           killed (started {last['started_at']}, pid {proc.pid}, step identity)" in \
        runner("show").stdout
    # The next run says so and keeps it in its own status.json; it then fails on the missing bundle (exit 6).
    result = runner("run")
    assert result.returncode == 6, result.stderr
    assert f"the previous run (pid {proc.pid}, started {last['started_at']}) was killed in step(s) identity" in \
        result.stderr
    assert runner.status()["previous_run"]["result"] == "killed"


# -- the launch hook: discovery and heartbeats (audit F14) --------------------------------------------------------
def test_launch_hooks_are_read_from_the_group(aws):
    group = Group(aws.endpoint, "web-hooks", TAGS, launch_hook="launch")
    group.asg.put_lifecycle_hook(AutoScalingGroupName=group.name, LifecycleHookName="drain",
                                 LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=60)
    hooks = asg.launch_hooks(group.asg, group.name)
    assert hooks == [asg.LaunchHook("launch", 30, "ABANDON")]  # the terminating hook is not ours


def test_choose_hook_and_heartbeat_interval():
    hooks = [asg.LaunchHook("a", 300, "ABANDON")]
    assert asg.choose_hook(None, hooks, "g") == hooks[0]
    assert asg.choose_hook("a", hooks, "g") == hooks[0]
    assert asg.choose_hook("other", hooks, "g") == asg.LaunchHook("other", None, None)  # named wins
    assert asg.choose_hook(None, [], "g") is None
    with pytest.raises(LifecycleError, match="group g has 2 launch hooks .a, b.: name the agent's one"):
        asg.choose_hook(None, hooks + [asg.LaunchHook("b", 60, "CONTINUE")], "g")
    # A third of HeartbeatTimeout when shorter than the configured interval; never below MIN_HEARTBEAT_S.
    assert asg.heartbeat_interval(asg.LaunchHook("a", 30, "ABANDON"), 60) == 10
    assert asg.heartbeat_interval(asg.LaunchHook("a", 3600, "ABANDON"), 60) == 60
    assert asg.heartbeat_interval(asg.LaunchHook("a", 30, "ABANDON"), 0.05) == 0.05
    assert asg.heartbeat_interval(asg.LaunchHook("a", 6, "ABANDON"), 60) == asg.MIN_HEARTBEAT_S
    assert asg.heartbeat_interval(None, 60) == 60


def test_an_untagged_launch_hook_is_discovered_and_the_failed_launch_abandoned(aws, imds_for, tmp_path):
    # The group has a launch hook but no bluegreen:lifecycle-hook tag: before, the instance waited out the
    # hook's whole timeout (and entered service unverified with DefaultResult CONTINUE).
    aws.configure_time(time_scale=HOOK_TIME_SCALE)
    group = Group(aws.endpoint, "web-untagged", dict(TAGS, **{"bluegreen:bootstrap": "s3://bluegreen-bootstrap/none/"}),
                  launch_hook="launch")
    upload_bundle(aws.endpoint, {"docker-compose.yml": b"services: {}\n"}, prefix="other/")  # the bucket exists
    instance_id = group.instance_ids[0]
    r = AgentRunner(tmp_path, imds_for(instance_id, aws.endpoint), config={"heartbeat_interval": 0.05})
    planned = r("run", "--dry-run")
    expect_exit(planned, 0)
    (lifecycle,) = [s for s in json.loads(planned.stdout)["plan"]["steps"] if s["step"] == "lifecycle"]
    assert lifecycle["hook"] == "launch" and lifecycle["action"].startswith("CompleteLifecycleAction CONTINUE")
    result = r("run")
    assert result.returncode == 6, result.stderr
    assert "lifecycle hook launch found with DescribeLifecycleHooks (no bluegreen:lifecycle-hook tag)" in \
        result.stderr
    assert "lifecycle hook launch completed with ABANDON" in result.stderr
    assert group.lifecycle_state(instance_id) in ABANDONED
    assert r.status()["lifecycle_hook"] == "launch" and r.status()["lifecycle_state"] == "Pending:Wait"


# -- warm pools (A17) ----------------------------------------------------------------------------------------------
class ScriptedStates:
    """DescribeAutoScalingInstances answering a script of lifecycle states, one per call. The emulator does not
    hold warm-pool instances in Warmed:Pending:Wait (localcloud/aws/warm.py), so the agent's handling of the
    states is checked against this script; everything else runs against the emulator."""

    def __init__(self, *states):
        self.states = list(states)

    def get_paginator(self, name):
        assert name == "describe_auto_scaling_instances"
        outer = self

        class Pages:
            def paginate(self, InstanceIds):
                state = outer.states.pop(0) if len(outer.states) > 1 else outer.states[0]
                return [{"AutoScalingInstances": [{"InstanceId": InstanceIds[0], "AutoScalingGroupName": "g",
                                                   "LifecycleState": state}]}]

        return Pages()


@pytest.mark.parametrize("states, settled", [
    (["Warmed:Pending", "Warmed:Pending", "Warmed:Pending:Wait"], "Warmed:Pending:Wait"),
    (["Pending", "Pending:Wait"], "Pending:Wait"),
    (["Warmed:Pending", "Warmed:Stopped"], "Warmed:Stopped"),  # no hook held it
])
def test_settle_waits_through_warm_pool_pending_states(states, settled):
    clock = FakeTime()
    membership = asg.Membership("g", states[0])
    found = asg.settle_pending(ScriptedStates(*states[1:]), "i-1", membership, deadline=30, sleep=clock.sleep,
                               clock=clock.now)
    assert found.lifecycle_state == settled
    assert (found.lifecycle_state in asg.HOOK_WAIT_STATES) == settled.endswith(":Wait")


def test_a_warm_pool_instance_of_the_emulator_is_listed_in_a_warmed_state(aws, imds_for, tmp_path):
    # What the emulator does model (A17): pool instances are listed by DescribeAutoScalingInstances in Warmed:*
    # states. The agent on one sees a state no hook holds and completes nothing.
    group = Group(aws.endpoint, "web-warm", TAGS, capacity=1)
    group.asg.put_warm_pool(AutoScalingGroupName=group.name, PoolState="Stopped", MinSize=1)

    def pooled():
        found = group.asg.describe_auto_scaling_instances()["AutoScalingInstances"]
        return [i for i in found if i["InstanceId"] not in group.instance_ids] or None

    item = wait_until(pooled, "a warm pool instance", deadline_s=20, interval=0.1)[0]
    assert item["LifecycleState"].startswith("Warmed:")
    r = AgentRunner(tmp_path, imds_for(item["InstanceId"], aws.endpoint))
    result = r("show", "--output", "json")
    expect_exit(result, 0)
    assert json.loads(result.stdout)["lifecycle_state"].startswith("Warmed:")


class DeniedHooks:
    """An instance profile without autoscaling:DescribeLifecycleHooks (an older iam/agent-policy.json)."""

    def describe_lifecycle_hooks(self, **_):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "DescribeLifecycleHooks")


@pytest.mark.parametrize("state, named, outcome", [
    ("Pending", None, None),  # a group that may have no hook: go on without one
    ("Pending:Wait", None, LifecycleError),  # held by a hook it cannot name: fail (exit 11), OnFailure= follows
    ("Pending:Wait", "launch", asg.LaunchHook("launch", None, None)),  # named: used, configured heartbeat
    ("InService", None, None),  # an operator's re-run: the group is not even asked
])
def test_a_hook_description_that_cannot_be_read(state, named, outcome):
    from agent import run as runner

    found = runner.Discovery(identity=None, membership=asg.Membership("g", state), tags={})
    settings = type("S", (), {"lifecycle_hook": named})()
    if outcome is LifecycleError:
        with pytest.raises(LifecycleError, match="DescribeLifecycleHooks for group g failed"):
            runner.find_launch_hook(DeniedHooks(), found, settings)
    else:
        assert runner.find_launch_hook(DeniedHooks(), found, settings) == outcome


def test_a_hooked_run_whose_deadline_ran_out_prints_one_line_the_explained_one_before_it_abandons(
        aws, imds_for, tmp_path, capsys, monkeypatch):
    # F16: the reason reaches the console before the ABANDON (the instance's shutdown would stop the agent), once:
    # the deadline's explanation, not the bare step failure followed by it.
    from agent import run

    aws.configure_time(time_scale=0.05)  # the hook's 30 s timeout: 1.5 s real, more than this run needs
    group = Group(aws.endpoint, "web-deadline", dict(TAGS, **{"bluegreen:lifecycle-hook": "launch"}),
                  launch_hook="launch")
    instance_id = group.instance_ids[0]
    runner = AgentRunner(tmp_path, imds_for(instance_id, aws.endpoint),
                         config={"compose_project": "site", "heartbeat_interval": 0.05, "run_deadline": 1})
    order = []

    def deploy_past_the_deadline(*args, **kwargs):
        time.sleep(1.2)  # the run's 1 s is gone when the step fails
        raise HealthError("no healthy answer from http://127.0.0.1:8080/health")

    real_abandon = run._abandon
    monkeypatch.setattr(run, "_deploy", deploy_past_the_deadline)
    monkeypatch.setattr(run, "_abandon", lambda *a: (order.append(capsys.readouterr().err), real_abandon(*a)))
    outcome = runner.in_process(capsys, "run")
    assert outcome.returncode == DeadlineError.exit_code
    printed = order[0] + outcome.stderr
    lines = [line for line in printed.splitlines() if line.startswith("bluegreen-agent: ")]
    assert lines == [lines[0]] and "the run's deadline (run_deadline 1s) ran out in step health" in lines[0], printed
    assert lines[0] in order[0]  # printed before the ABANDON was sent
    assert group.lifecycle_state(instance_id) in (None, "Terminating", "Terminating:Wait", "Terminating:Proceed",
                                                  "Terminated")
