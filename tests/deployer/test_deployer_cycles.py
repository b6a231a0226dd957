"""Whole commands through the real `bluegreen` console script, against the emulated AWS over HTTP."""

import json
import threading
import time

from tests.deployer.conftest import HealthSampler, last_error_line, run_bluegreen, unhealthy_launches


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_full_cycle_at_45_instances_never_drops_below_live_capacity(make_fleet):
    n = 45  # so every batch loop runs three times (20 + 20 + 5)
    fleet = make_fleet(capacity=n)
    blue_ids = set(fleet.lifecycles("blue"))

    with HealthSampler(fleet.svc["target_group_arn"]) as deploy_sampler:
        out = ok(run_bluegreen("deploy", "demo", "2.0", "--output", "json"))
    fleet.assert_flipped("green", n, "2.0")
    assert deploy_sampler.minimum >= n
    summary = json.loads(out.stdout)
    assert summary["result"] == "done" and summary["status"]["live"] == "green"
    assert summary["steps"].count("enter-standby") == 3
    assert 0 < summary["aws_calls"] <= summary["aws_attempts"]
    by_op = summary["aws_calls_by_op"]
    assert by_op["EnterStandby"] == 3 and sum(by_op.values()) == summary["aws_calls"]
    # one group describe per observation and one health call per poll, never one per instance
    assert by_op["DescribeTargetHealth"] <= by_op["DescribeAutoScalingGroups"] < 40
    assert "enter-standby: move 5 instances of demo-blue to Standby, batch 3 of 3 (A1)" in out.stderr
    assert fleet.tags("blue")["bluegreen:saved-sizes"] == f"{n}/{n}/{2 * n}"

    with HealthSampler(fleet.svc["target_group_arn"]) as rollback_sampler:
        ok(run_bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", n, "1.0")
    assert set(fleet.lifecycles("blue")) == blue_ids  # the same instances came back: nothing relaunched
    assert fleet.sizes("blue") == (n, n, 2 * n)
    assert rollback_sampler.minimum >= n

    with HealthSampler(fleet.svc["target_group_arn"]) as second:
        ok(run_bluegreen("deploy", "demo", "2.0"))
    assert second.minimum >= n
    fleet.assert_flipped("green", n, "2.0")

    with HealthSampler(fleet.svc["target_group_arn"]) as finalize_sampler:
        out = ok(run_bluegreen("finalize", "demo"))
    assert finalize_sampler.minimum >= n
    fleet.assert_serving_only("green", n, "2.0")
    assert fleet.lifecycles("blue") == {}
    # A4: detached first, then terminated; none left running outside the group
    states = fleet.ec2_states(blue_ids)
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    assert out.stdout.strip() == "finalize demo: done; demo-green is live"

    status = json.loads(ok(run_bluegreen("status", "demo", "--output", "json")).stdout)
    assert status["live"] == "green" and status["operation"] is None
    assert (status["groups"]["blue"]["min"], status["groups"]["blue"]["desired"], status["groups"]["blue"]["max"]) \
        == (0, 0, 0)
    assert {i["health"] for i in status["groups"]["green"]["instances"]} == {"healthy"}


def test_canary_then_deploy_keeps_the_canary_and_canary_then_rollback_removes_it(make_fleet):
    fleet = make_fleet(capacity=3)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        out = ok(run_bluegreen("canary", "demo", "2.0", "--count", "1"))
    assert sampler.minimum >= 3
    assert "1 canary instance(s) in demo-green serve beside demo-blue" in out.stdout
    canary = set(fleet.lifecycles("green"))
    assert len(canary) == 1 and canary <= fleet.healthy()
    assert len(fleet.healthy()) == 4  # serves beside the live fleet

    blocked = run_bluegreen("deploy", "demo", "3.0")
    assert blocked.returncode == 3
    assert "held by canary 2.0" in last_error_line(blocked)

    ok(run_bluegreen("deploy", "demo", "2.0"))
    fleet.assert_flipped("green", 3, "2.0")
    assert canary <= set(fleet.lifecycles("green"))  # kept, not replaced

    ok(run_bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3)
    ok(run_bluegreen("canary", "demo", "2.1", "--count", "2"))
    assert len(fleet.lifecycles("green")) == 2
    ok(run_bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3, "1.0")
    fleet.wait_for(lambda: not fleet.lifecycles("green"), "the canary instances to be gone")


def test_deploy_aborts_on_its_own_when_a_new_instance_turns_unhealthy(make_fleet, aws):
    fleet = make_fleet(capacity=3)
    with unhealthy_launches(aws, "demo-green"), HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        proc = run_bluegreen("deploy", "demo", "3.0")
    assert proc.returncode == 1
    line = last_error_line(proc)
    assert "deploy demo 3.0 aborted: instance i-" in line and "is unhealthy in target group demo-tg" in line
    assert "demo-green is back to 0 and demo-blue was not touched" in line
    assert sampler.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


def test_deploy_that_times_out_aborts_and_says_what_it_saw(make_fleet):
    # A6: with a launch hook and no agent to complete it, new instances wait in Pending:Wait, outside the LB.
    fleet = make_fleet(capacity=2, launch_hook=True)
    proc = run_bluegreen("deploy", "demo", "2.0", "--timeout", "0.5")
    assert proc.returncode == 1
    line = last_error_line(proc)
    assert "timed out after 0.5s" in line and "last seen: 0/2 of demo-green healthy" in line
    assert "Pending:Wait" in line
    fleet.assert_serving_only("blue", 2, "1.0")


def test_deploy_with_a_launch_hook_waits_for_the_agents(make_fleet):
    fleet = make_fleet(capacity=2, launch_hook=True)
    stop = threading.Event()

    def agents():  # what each new instance's agent does once its stack answers
        while not stop.is_set():
            fleet.complete_hooks("green")
            stop.wait(0.05)

    thread = threading.Thread(target=agents, daemon=True)
    thread.start()
    try:
        ok(run_bluegreen("deploy", "demo", "2.0"))
    finally:
        stop.set()
        thread.join(timeout=10)
    fleet.assert_flipped("green", 2, "2.0")


def test_deploy_aborts_at_once_when_the_agents_abandon_their_launches(make_fleet):
    # What an agent does when its stack never turns healthy (A6: ABANDON terminates the instance, and the group
    # launches another). The deploy must abort on the failed launch, not sit out its timeout.
    fleet = make_fleet(capacity=2, launch_hook=True)
    stop = threading.Event()

    def failing_agents():
        while not stop.is_set():
            fleet.complete_hooks("green", result="ABANDON")
            stop.wait(0.3)

    thread = threading.Thread(target=failing_agents, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        proc = run_bluegreen("deploy", "demo", "2.0", "--timeout", "60")
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=10)
    assert proc.returncode == 1
    line = last_error_line(proc)
    assert "aborted" in line and "timed out" not in line, line
    assert "left demo-green before turning healthy" in line or "Terminating" in line, line
    assert took < 30, f"the deploy took {took:.1f}s to notice the failed launches"
    fleet.assert_serving_only("blue", 2, "1.0")


def test_rollback_mid_deploy_empties_the_new_group_and_leaves_the_live_one(make_fleet):
    fleet = make_fleet(capacity=3)
    crashed = run_bluegreen("deploy", "demo", "2.0", env={"BLUEGREEN_CRASH_AT": "suspend"})
    assert crashed.returncode == -9
    assert "action=deploy;phase=policies" in fleet.tags("blue")["bluegreen:operation"]
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok(run_bluegreen("rollback", "demo"))
    assert sampler.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


def test_dry_run_prints_the_plan_and_changes_nothing(make_fleet):
    fleet = make_fleet(capacity=3)
    before = (fleet.sizes("blue"), fleet.sizes("green"), fleet.tags("blue"), fleet.tags("green"))
    out = ok(run_bluegreen("deploy", "demo", "2.0", "--dry-run", "--output", "json"))
    plan = json.loads(out.stdout)
    assert plan["dry_run"] is True and plan["aws_calls"] >= 1
    assert [s["name"] for s in plan["plan"]][:4] == ["lock", "set-version", "size-new", "wait-new-healthy"]
    ops = [c["op"] for s in plan["plan"] for c in s["calls"]]
    assert "EnterStandby" in ops and "SuspendProcesses" in ops
    assert (fleet.sizes("blue"), fleet.sizes("green"), fleet.tags("blue"), fleet.tags("green")) == before
    text = ok(run_bluegreen("deploy", "demo", "2.0", "--dry-run")).stdout
    assert text.startswith("deploy demo 2.0 (dry run: nothing changed):")
    assert "EnterStandby(AutoScalingGroupName=demo-blue" in text
    ok(run_bluegreen("deploy", "demo", "2.0"))
    flipped = (fleet.sizes("blue"), fleet.sizes("green"), fleet.lifecycles("blue"), fleet.tags("green"))
    text = ok(run_bluegreen("rollback", "demo", "--dry-run")).stdout
    assert "ExitStandby(AutoScalingGroupName=demo-blue" in text and "retire-new: scale demo-green to 0" in text
    text = ok(run_bluegreen("finalize", "demo", "--dry-run")).stdout
    assert "DetachInstances(AutoScalingGroupName=demo-blue" in text and "ShouldDecrementDesiredCapacity=False" in text
    assert (fleet.sizes("blue"), fleet.sizes("green"), fleet.lifecycles("blue"), fleet.tags("green")) == flipped


def test_bad_input_gives_one_line_and_exit_2(make_fleet):
    make_fleet(capacity=1)
    proc = run_bluegreen("deploy", "nosuch", "2.0")
    assert proc.returncode == 2
    assert last_error_line(proc) == ("bluegreen: error: no Auto Scaling group is tagged bluegreen:service=nosuch "
                                     "in this account and Region")
    proc = run_bluegreen("deploy", "demo", "not a tag", "--output", "json")
    assert proc.returncode == 2 and "is not a valid Docker tag" in last_error_line(proc)
    assert json.loads(proc.stdout)["exit_code"] == 2
    proc = run_bluegreen("deploy", "nosuch", "2.0", "--output", "json")
    summary = json.loads(proc.stdout)
    assert (proc.returncode, summary["result"], summary["aws_calls"]) == (2, "error", 1)
    proc = run_bluegreen("push-bootstrap", "/nonexistent", "s3://bucket/x/")
    assert proc.returncode == 2 and last_error_line(proc) == "bluegreen: error: '/nonexistent' is not a directory"
    proc = run_bluegreen("rollback", "demo")
    assert proc.returncode == 3 and "nothing to roll back" in last_error_line(proc)


def test_missing_credentials_exit_4(make_fleet, tmp_path):
    make_fleet(capacity=1)
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no"),
           "AWS_CONFIG_FILE": str(tmp_path / "no"), "AWS_EC2_METADATA_DISABLED": "true"}
    proc = run_bluegreen("status", "demo", env=env)
    assert proc.returncode == 4
    assert "no AWS credentials found" in last_error_line(proc)
    proc = run_bluegreen("status", "demo", "--profile", "nosuch")
    assert proc.returncode == 4 and "nosuch" in last_error_line(proc)


def test_the_health_sampler_catches_a_naive_flip(make_fleet):
    # The safety assertions above are only worth something if the sampler sees a drop when there is one:
    # scaling the live group in before the new one is healthy is exactly the mistake they guard against.
    fleet = make_fleet(capacity=3)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-green", MinSize=3, MaxSize=6,
                                            DesiredCapacity=3)
        fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-blue", MinSize=0, MaxSize=6,
                                            DesiredCapacity=0)
        fleet.wait_for(lambda: len(fleet.healthy()) == 3 and not set(fleet.lifecycles("blue")),
                       "green to serve alone")
    assert sampler.minimum < 3


def test_colors_alternate_across_finalized_deploys(make_fleet):
    fleet = make_fleet(capacity=3)
    ok(run_bluegreen("deploy", "demo", "2.0"))
    ok(run_bluegreen("finalize", "demo"))
    fleet.assert_serving_only("green", 3, "2.0")
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok(run_bluegreen("deploy", "demo", "3.0"))
    assert sampler.minimum >= 3
    fleet.assert_flipped("blue", 3, "3.0")
    again = ok(run_bluegreen("deploy", "demo", "3.0"))  # a pipeline retrying a finished deploy changes nothing
    assert "already done: nothing to change" in again.stdout
    ok(run_bluegreen("finalize", "demo"))
    fleet.assert_serving_only("blue", 3, "3.0")
    assert ok(run_bluegreen("finalize", "demo")).stdout.strip() == "finalize demo: done (already done: nothing " \
        "to change); demo-blue is live"


def test_finalize_right_after_deploy_waits_for_draining_and_keeps_the_operators_suspensions(make_fleet):
    # 300 s deregistration delay (E2): 3 s at the test time scale, so the Standby instances still drain when
    # a pipeline runs finalize straight after deploy.
    fleet = make_fleet(capacity=3, deregistration_delay=300)
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["AZRebalance"])
    ok(run_bluegreen("deploy", "demo", "2.0"))
    draining = {i for i, s in fleet.target_states().items() if s == "draining"}
    assert draining == set(fleet.lifecycles("blue"))  # deploy did not sit out the delay
    proc = ok(run_bluegreen("finalize", "demo"))
    assert "wait-drained: 3 not yet drained: i-" in proc.stderr
    assert "wait-drained: all Standby instances of demo-blue drained" in proc.stderr
    fleet.assert_serving_only("green", 3, "2.0")
    # only what the deploy suspended was resumed (A8)
    assert [p["ProcessName"] for p in fleet.group("blue")["SuspendedProcesses"]] == ["AZRebalance"]


def test_unusable_poll_intervals_and_timeouts_are_bad_input(make_fleet):
    make_fleet(capacity=1)
    for env in ({"BLUEGREEN_POLL_INTERVAL": "0"}, {"BLUEGREEN_POLL_INTERVAL": "nan"}, {"BLUEGREEN_TIMEOUT": "-1"}):
        proc = run_bluegreen("deploy", "demo", "2.0", "--dry-run", env=env)
        assert proc.returncode == 2, (env, proc.stderr)
        assert "is not a positive number of seconds" in last_error_line(proc)
    proc = run_bluegreen("deploy", "demo", "2.0", "--timeout", "nan", "--dry-run")
    assert proc.returncode == 2 and "positive, finite number of seconds" in proc.stderr


def test_a_pair_not_behind_the_same_load_balancer_is_refused_before_anything_changes(make_fleet):
    # E4: a group attached to no load balancer would count as "healthy everywhere", and the flip would leave
    # the real load balancer with no target at all.
    fleet = make_fleet(capacity=2)
    fleet.asg.detach_load_balancer_target_groups(AutoScalingGroupName="demo-green",
                                                 TargetGroupARNs=[fleet.svc["target_group_arn"]])
    proc = run_bluegreen("deploy", "demo", "2.0")
    assert proc.returncode == 2
    assert "are not attached to the same target groups" in last_error_line(proc)
    assert "bluegreen:operation" not in fleet.tags("blue") and fleet.sizes("green") == (0, 0, 0)
    fleet.assert_serving_only("blue", 2, "1.0")


def test_a_resumed_deploy_does_not_flip_to_a_new_fleet_that_turned_unhealthy(make_fleet, aws):
    fleet = make_fleet(capacity=3)
    crashed = run_bluegreen("deploy", "demo", "2.0", env={"BLUEGREEN_CRASH_AT": "suspend"})
    assert crashed.returncode == -9
    for instance_id in fleet.lifecycles("green"):
        aws.set_target_health(instance_id, "unhealthy")  # the new version went bad while the pipeline was dead
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        proc = run_bluegreen("deploy", "demo", "2.0")
    assert proc.returncode == 1
    assert "unhealthy in target group" in last_error_line(proc)
    assert sampler.minimum >= 3
    assert set(fleet.lifecycles("blue").values()) == {"InService"}  # nothing went to Standby
    ok(run_bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3, "1.0")


def test_rollback_brings_back_the_capacity_the_new_group_grew_to(make_fleet):
    fleet = make_fleet(capacity=3)
    ok(run_bluegreen("deploy", "demo", "2.0"))
    fleet.asg.set_desired_capacity(AutoScalingGroupName="demo-green", DesiredCapacity=5)  # a scale-out after the flip
    fleet.wait_for(lambda: len(fleet.healthy()) == 5, "green's scale-out to turn healthy")
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        ok(run_bluegreen("rollback", "demo"))
    assert sampler.minimum >= 5
    fleet.assert_serving_only("blue", 5, "1.0")
