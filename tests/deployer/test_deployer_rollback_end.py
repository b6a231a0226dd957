"""Rollback and abort verify their end state before they unlock, in two stages (issue 10, "Rollback done has two
stages"), and survive what AWS answers under retries (deployer-audit findings 3, 5, 12, 20). In process, on the
fake clock, through the public command against the emulator."""

import json

import pytest

from localcloud.aws import faults_asg
from tests.deployer.fleet import last_error_line, unhealthy_launches
from tests.helpers import expect_exit


def flipped(make_harness, n=3):
    fleet = make_harness(capacity=n)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", n, "2.0")
    return fleet


def test_rollback_clears_scale_in_protection_so_the_new_instances_leave(make_harness):
    # A14, finding 5: protected instances survive the scale-in and would keep serving after "rolled back".
    fleet = flipped(make_harness)
    green = sorted(fleet.lifecycles("green"))
    fleet.asg.set_instance_protection(AutoScalingGroupName="demo-green", InstanceIds=green, ProtectedFromScaleIn=True)
    with fleet.health_floor() as floor:
        out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert floor.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.lifecycles("green") == {}
    assert not set(green) & fleet.healthy()
    assert "unprotect-new: clear scale-in protection of 3 instances of demo-green" in out.stderr


def test_rollback_restores_the_live_capacity_past_the_old_max_size(make_harness):
    # Finding 12: the new group grew past the old MaxSize under load; the old one must come back as large.
    fleet = flipped(make_harness)
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-green", MaxSize=10, DesiredCapacity=8)
    fleet.wait_for(lambda: len(fleet.healthy()) >= 8, "green at 8 healthy")
    with fleet.health_floor() as floor:
        expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    assert fleet.sizes("blue") == (3, 8, 8)  # MinSize as saved; MaxSize never below the live capacity
    fleet.assert_serving_only("blue", 8, "1.0")
    assert floor.minimum >= 3


def test_rollback_refuses_launch_suspended_on_the_old_group_and_changes_nothing(make_harness):
    # A13, finding 3: ExitStandby is refused while Launch is suspended; refuse up front, with the fix.
    fleet = flipped(make_harness)
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["Launch"])
    before = (fleet.tags("blue"), fleet.lifecycles("blue"), fleet.sizes("blue"), fleet.sizes("green"))
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 2)
    assert "Launch is suspended on demo-blue" in last_error_line(out)
    assert "--scaling-processes Launch" in last_error_line(out)
    assert (fleet.tags("blue"), fleet.lifecycles("blue"), fleet.sizes("blue"), fleet.sizes("green")) == before
    # A8: AddToLoadBalancer suspended would leave the returned instances out of the load balancer: refused alike.
    fleet.asg.resume_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["Launch"])
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["AddToLoadBalancer"])
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 2)
    assert "AddToLoadBalancer is suspended on demo-blue" in last_error_line(out)
    assert (fleet.tags("blue"), fleet.lifecycles("blue"), fleet.sizes("blue"), fleet.sizes("green")) == before


def test_rollback_fails_in_one_line_when_terminate_is_suspended_on_the_new_group(make_harness):
    # A14/A8, finding 5: with Terminate suspended nothing is scaled in: never report that as rolled back.
    fleet = flipped(make_harness)
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-green", ScalingProcesses=["Terminate"])
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 1)
    assert "Terminate is suspended on demo-green" in last_error_line(out)
    assert "action=rollback" in fleet.tags("blue")["bluegreen:operation"]  # kept: a rerun finishes it
    fleet.asg.resume_processes(AutoScalingGroupName="demo-green", ScalingProcesses=["Terminate"])
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.lifecycles("green") == {}


def test_wait_restored_leaves_phase_restored_and_a_rerun_settles(make_harness):
    fleet = flipped(make_harness)
    green = set(fleet.lifecycles("green"))
    out = fleet.bluegreen("rollback", "demo", "--wait", "restored", "--output", "json")
    expect_exit(out, 0)
    first = json.loads(out.stdout)
    assert first["restored_s"] is not None and first["settled_s"] is None
    assert "action=rollback;phase=restored" in fleet.tags("blue")["bluegreen:operation"]
    assert set(fleet.lifecycles("blue")) <= fleet.healthy() and len(fleet.healthy() - green) == 3
    assert not green & fleet.healthy()  # the new fleet takes no new requests

    out = fleet.bluegreen("rollback", "demo", "--output", "json")
    expect_exit(out, 0)
    second = json.loads(out.stdout)
    assert second["restored_s"] is None and second["settled_s"] is not None
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.lifecycles("green") == {}


def test_a_full_rollback_reports_both_stage_times(make_harness):
    fleet = flipped(make_harness)
    summary = json.loads(fleet.bluegreen("rollback", "demo", "--output", "json").stdout)
    assert 0 < summary["restored_s"] <= summary["settled_s"]


def test_an_abort_with_wait_restored_leaves_the_rollback_to_settle(make_harness, aws):
    fleet = make_harness(capacity=3)
    with unhealthy_launches(aws, "demo-green"):
        out = fleet.bluegreen("deploy", "demo", "3.0", "--wait", "restored", "--output", "json")
    expect_exit(out, 1)
    assert json.loads(out.stdout)["restored_s"] is not None
    assert "action=rollback;phase=restored" in fleet.tags("blue")["bluegreen:operation"]
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.assert_serving_only("blue", 3, "1.0")


def test_scaling_activity_in_progress_is_retried(make_harness, aws):
    # Finding 20: HTTP 400 ScalingActivityInProgress, which botocore's standard mode never retries.
    fleet = flipped(make_harness)
    faults_asg.configure(aws, scaling_activity_in_progress={"UpdateAutoScalingGroup": 2})
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert out.stderr.count("ScalingActivityInProgress, retrying") == 2
    fleet.assert_serving_only("blue", 3, "1.0")


@pytest.mark.parametrize("action", ["EnterStandby", "ExitStandby"])
def test_a_lost_standby_response_is_a_success(make_harness, aws, action):
    # A1/A2, finding 20: the first attempt landed, botocore retried, and the retry found the instances where
    # the call puts them (a ValidationError from AWS): done, not exit 4.
    fleet = make_harness(capacity=3) if action == "EnterStandby" else flipped(make_harness)
    faults_asg.configure(aws, lost_responses={action: 1})
    out = fleet.bluegreen(*(("deploy", "demo", "2.0") if action == "EnterStandby" else ("rollback", "demo")))
    expect_exit(out, 0)
    assert "its first attempt landed" in out.stderr
    if action == "EnterStandby":
        fleet.assert_flipped("green", 3, "2.0")
    else:
        fleet.assert_serving_only("blue", 3, "1.0")


def test_rollback_applies_the_scheduled_action_missed_in_standby():
    # A8, finding 12: ScheduledActions was held on the old group; AWS skips what came due meanwhile.
    from datetime import datetime, timezone

    from deployer import plan
    from tests.deployer.deployer_fixtures import ctx, group_record, ids, names, record_tag, snapshot

    tags = {**record_tag("deploy", "flipped"), "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": "none"}
    blue = group_record("blue", (0, 0, 6), ids("b", 3, "Standby"), tags=tags,
                        suspended=("AZRebalance", "AlarmNotification", "ScheduledActions"))
    green = group_record("green", (3, 3, 6), ids("g", 3), tags=tags)
    actions = [  # the deploy started at 11:00, the rollback runs at 12:00 (deployer_fixtures.NOW)
        {"ScheduledActionName": "morning", "StartTime": datetime(2026, 11, 26, 11, 30, tzinfo=timezone.utc),
         "MinSize": 4, "MaxSize": 10, "DesiredCapacity": 5},
        {"ScheduledActionName": "at-eleven", "Recurrence": "0 11 * * *", "MinSize": 1},  # at the start: not missed
        {"ScheduledActionName": "later", "StartTime": datetime(2026, 11, 26, 13, 0, tzinfo=timezone.utc),
         "MinSize": 9, "MaxSize": 9, "DesiredCapacity": 9}]
    steps = plan.plan_rollback(snapshot(blue, green, {"blue": [], "green": []}, {"blue": actions, "green": []}), ctx())
    assert "apply the scheduled action morning" in steps[0].summary
    assert steps[0].calls[0].saved["sizes"] == [4, 5, 10]
    restore = steps[names(steps).index("restore-sizes")].calls[0].params
    assert (restore["MinSize"], restore["DesiredCapacity"], restore["MaxSize"]) == (4, 5, 10)


def test_rollback_applies_a_scheduled_action_missed_in_standby_on_the_emulator(make_harness):
    # A8: the emulator skips a one-time action that comes due while ScheduledActions is suspended, as AWS does.
    import time
    from datetime import datetime, timedelta, timezone

    fleet = flipped(make_harness)
    fleet.asg.put_scheduled_update_group_action(
        AutoScalingGroupName="demo-blue", ScheduledActionName="morning", MinSize=4, MaxSize=8, DesiredCapacity=4,
        StartTime=datetime.now(timezone.utc) + timedelta(seconds=1))
    time.sleep(1.5)  # one-time actions come due on the wall clock (localcloud/aws/autoscaling.py)
    fleet.advance(1)
    assert fleet.sizes("blue") == (0, 0, 6)  # skipped: held by the deploy
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert "apply the scheduled action morning of demo-blue missed in Standby" in out.stderr
    assert fleet.sizes("blue") == (4, 4, 8)
    fleet.assert_serving_only("blue", 4, "1.0")


def test_rollback_raises_max_size_when_the_standby_instances_would_not_fit_then_restores_it(make_harness):
    # A2, finding 3: ExitStandby raises desired, which must stay <= MaxSize (here lowered by hand to 2).
    fleet = flipped(make_harness)
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-blue", MinSize=0, DesiredCapacity=0, MaxSize=2)
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert "raise-max: raise demo-blue's MaxSize to 3" in out.stderr
    assert fleet.sizes("blue") == (3, 3, 6)  # the saved sizes, MaxSize included
    fleet.assert_serving_only("blue", 3, "1.0")


def test_an_abort_clears_protection_so_the_new_instances_leave(make_harness, aws):
    # A14, finding 5, on the abort path: the launch fails while the new instances are protected. Pre-flight
    # refuses a protected idle group up front, so the protection arrives after it: set mid-deploy (an operator, an
    # IaC apply), right before the new group is sized.
    fleet = make_harness(capacity=3)

    def protect(step):
        if step.name == "size-new":
            fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-green",
                                                NewInstancesProtectedFromScaleIn=True)

    with unhealthy_launches(aws, "demo-green"):
        out = fleet.bluegreen("deploy", "demo", "3.0", meanwhile=protect)
    expect_exit(out, 1)
    assert "unprotect-new" in out.stderr
    assert fleet.lifecycles("green") == {}
    fleet.assert_serving_only("blue", 3, "1.0")


def test_an_abort_that_cannot_finish_says_both_failures_and_parks_its_lease(make_harness, aws):
    # The launch fails, and its abort cannot empty the new group (Terminate suspended on it mid-deploy, A14):
    # the line names both and the next step; the lease is parked, so that rollback takes over at once rather
    # than after store.MAX_CALL_S (90 s) of waiting for a holder that may still be running.
    fleet = make_harness(capacity=2)

    def hold_terminate(step):
        if step.name == "size-new":
            fleet.asg.suspend_processes(AutoScalingGroupName="demo-green", ScalingProcesses=["Terminate"])

    with unhealthy_launches(aws, "demo-green"):
        out = fleet.bluegreen("deploy", "demo", "3.0", "--max-replacements", "0", meanwhile=hold_terminate)
    expect_exit(out, 1)
    line = last_error_line(out)
    assert "then the abort could not finish" in line and "Terminate is suspended on demo-green" in line
    assert "bluegreen rollback demo" in line
    fleet.asg.resume_processes(AutoScalingGroupName="demo-green", ScalingProcesses=["Terminate"])
    started = fleet.clock.now()
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    assert fleet.clock.now() - started < 90
    fleet.assert_serving_only("blue", 2, "1.0")
    assert fleet.lifecycles("green") == {}
