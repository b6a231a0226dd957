"""The launch wait, the Standby gate and the phase record, through the real `bluegreen` in process (harness.py).

A new instance that fails and is replaced does not abort a deploy within the replacement budget (finding 11); the
gate counts only instances that report the version being deployed (finding 7); phase flip is recorded after the
first EnterStandby, and a failed gate leaves nothing suspended on the serving group (finding 21).
"""

import json

import pytest

from agent.contract import RESULT_SUCCESS, TAG_RUNNING, Running, encode_running
from deployer import cli, health, plan
from tests.deployer.deployer_fixtures import ctx, group_record, ids, names, record_tag, snapshot
from tests.deployer.fleet import last_error_line
from tests.helpers import expect_exit

WARNING = f"publishes no {TAG_RUNNING} tag"


def fail_one_new_instance(fleet):
    """An agent callback: the first new instance to come into service dies once (a Spot reclaim, a failed host);
    the group replaces it. Returns the list the failed id is put in."""
    failed = []

    def agent():
        if failed:
            return
        serving = [i for i, life in fleet.lifecycles("green").items() if life == "InService"]
        if serving:
            failed.append(serving[0])
            fleet.ec2.terminate_instances(InstanceIds=serving[:1])

    fleet.agents.append(agent)
    return failed


def publish_running(fleet, version, others=None):
    """What the agent does once its stack is healthy: tag its instance `bluegreen:running` (CreateTags of
    encode_running). `others` maps an instance's position in launch order to another version it reports."""
    others = others or {}
    order = []

    def agent():
        for iid, life in sorted(fleet.lifecycles("green").items()):
            if life != "InService":
                continue
            if iid in order:
                continue  # written once, as the agent does (a rewrite would restart X1's delay)
            order.append(iid)
            reports = others.get(order.index(iid), version)
            value = encode_running(Running(version=reports, digest=None, agent="0.1.0", result=RESULT_SUCCESS))
            fleet.ec2.create_tags(Resources=[iid], Tags=[{"Key": TAG_RUNNING, "Value": value}])

    fleet.agents.append(agent)
    return agent


def phase(fleet):
    return dict(p.split("=", 1) for p in fleet.tags("blue")["bluegreen:operation"].split(";"))["phase"]


# -- the launch wait (finding 11) ------------------------------------------------------------------------


def test_a_new_instance_that_fails_is_replaced_and_the_deploy_still_flips(make_harness):
    fleet = make_harness(capacity=3)
    failed = fail_one_new_instance(fleet)
    with fleet.health_floor() as floor:
        out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert failed and failed[0] not in fleet.lifecycles("green")
    fleet.assert_flipped("green", 3, "2.0")
    assert floor.minimum >= 3


def test_a_budget_of_zero_aborts_on_the_first_replaced_instance(make_harness):
    fleet = make_harness(capacity=3)
    failed = fail_one_new_instance(fleet)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--max-replacements", "0")
    expect_exit(out, 1)
    line = last_error_line(out)
    assert f"aborted: 1 new instances of demo-green failed or were replaced, more than the budget of 0 (0, " \
           f"--max-replacements): {failed[0]}" in line
    fleet.assert_serving_only("blue", 3, "1.0")


def test_a_bad_replacement_budget_is_a_usage_error_before_any_aws_call(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["deploy", "demo", "2.0", "--max-replacements", "many"], environ={})
    assert exited.value.code == 2
    assert "--max-replacements: must be a count (0, 3) or a percentage of the capacity (10%)" in \
        capsys.readouterr().err


# -- verified version (finding 7) ------------------------------------------------------------------------


def test_an_instance_reporting_another_version_is_never_counted(make_harness):
    fleet = make_harness(capacity=3)
    publish_running(fleet, "2.0", others={1: "1.0"})  # one new instance runs the old version (a warm pool's)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "120")
    expect_exit(out, 1)
    line = last_error_line(out)
    assert "aborted: timed out after 120s" in line and "2/3 of demo-green healthy on 2.0 (i-" in line
    assert "runs 1.0" in line
    fleet.assert_serving_only("blue", 3, "1.0")


def test_instances_reporting_the_version_flip_without_a_warning(make_harness):
    fleet = make_harness(capacity=3)
    publish_running(fleet, "2.0")
    out = fleet.bluegreen("deploy", "demo", "2.0", "--output", "json")
    expect_exit(out, 0)
    fleet.assert_flipped("green", 3, "2.0")
    assert WARNING not in out.stderr
    # Read in batches, and not once an instance is verified: far fewer reads than polls (A10).
    calls = json.loads(out.stdout)["aws_calls_by_op"]
    assert 1 <= calls["DescribeTags"] < calls["DescribeAutoScalingGroups"]


def test_an_agent_older_than_the_tag_is_gated_on_health_with_one_warning_per_instance(make_harness):
    fleet = make_harness(capacity=3)
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    fleet.assert_flipped("green", 3, "2.0")
    warned = [line for line in out.stderr.splitlines() if WARNING in line]
    # The launch wait and the gate both count them: still one line per instance in the run.
    assert sorted(line.split("instance ", 1)[1].split(" ", 1)[0] for line in warned) == sorted(
        fleet.lifecycles("green"))


def test_tags_not_yet_visible_are_not_taken_for_an_agent_without_the_tag(make_harness, aws):
    fleet = make_harness(capacity=3)
    running = encode_running(Running(version="1.0", digest=None, agent="0.1.0", result=RESULT_SUCCESS))
    fleet.ec2.create_tags(Resources=list(fleet.lifecycles("blue")), Tags=[{"Key": TAG_RUNNING, "Value": running}])
    aws.configure_faults(tag_visibility_delay_s=30)  # X1: a new tag is invisible to DescribeTags for 30 s
    fleet.advance(31)  # the live fleet's tags are old and visible
    publish_running(fleet, "2.0")
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    fleet.assert_flipped("green", 3, "2.0")
    assert WARNING not in out.stderr  # the live fleet publishes the tag: a new instance will too


# -- phase and cleanup (finding 21) ----------------------------------------------------------------------


def test_phase_flip_is_recorded_only_once_an_old_instance_has_entered_standby(make_harness):
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at="enter-standby"), -9)
    assert phase(fleet) == "policies"  # killed before the first EnterStandby: the old group still serves
    status = fleet.bluegreen("status", "demo", "--output", "json")
    assert '"live": "blue"' in status.stdout
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")


def test_a_failed_gate_leaves_nothing_suspended_on_the_serving_group(make_harness):
    fleet = make_harness(capacity=3)
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["AZRebalance"])  # the operator's
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at="suspend"), -9)
    publish_running(fleet, "2.0", others={0: "1.0"})()  # meanwhile one new instance turns out to run 1.0
    out = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "60")
    expect_exit(out, 1)
    line = last_error_line(out)
    assert "timed out after 60s" in line and "confirm 3 2.0 instances of demo-green" in line and "runs 1.0" in line
    assert [p["ProcessName"] for p in fleet.group("blue")["SuspendedProcesses"]] == ["AZRebalance"]
    assert phase(fleet) == "policies"
    assert set(fleet.lifecycles("blue").values()) == {"InService"}
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)


# -- with the emulator's failures: apps that never answer (E5, A20), failed launches (A15), zones (A19, E6) --


def test_an_instance_whose_app_never_answers_is_replaced_by_its_group_and_the_deploy_flips(make_harness, aws):
    fleet = make_harness(capacity=3)
    aws.configure_apps(broken_launches=1)  # the next launch's app never answers: unhealthy, then replaced (A20)
    with fleet.health_floor() as floor:
        out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    fleet.assert_flipped("green", 3, "2.0")
    assert floor.minimum >= 3


def test_a_launch_that_aws_refuses_fails_at_once_with_the_scaling_activity_message(make_harness, aws):
    fleet = make_harness(capacity=2)
    aws.configure_faults(vcpu_limit=4)  # blue's two t3.micro already use the account's 4 vCPUs
    started = fleet.clock.now()
    out = fleet.bluegreen("deploy", "demo", "2.0")
    took = fleet.clock.now() - started
    expect_exit(out, 1)
    line = last_error_line(out)
    assert "aborted: demo-green cannot launch its capacity (0/2 instances): " in line and "vCPU" in line, line
    assert took < 120, f"the deploy took {took:.0f} AWS seconds to say why capacity does not arrive"
    fleet.assert_serving_only("blue", 2, "1.0")


def test_the_gate_refuses_to_leave_a_zone_without_new_instances(make_harness, aws):
    fleet = make_harness(capacity=4, zones=2)
    zone_b = fleet.svc["zones"][1]
    aws.configure_faults(insufficient_capacity_zones=[zone_b])  # the new group fills the other zone only (A19)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "120")
    expect_exit(out, 1)
    line = last_error_line(out)
    assert f"zone {zone_b} would be left with 0 healthy 2.0 instances of demo-green, it needs 1" in line, line
    assert set(fleet.lifecycles("blue").values()) == {"InService"}  # nothing went to Standby
    assert fleet.group("blue")["SuspendedProcesses"] == []
    aws.configure_faults()
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.assert_serving_only("blue", 4, "1.0")


# -- the plan of the gate and the phase record (pure) ------------------------------------------------------


def resumed(phase_name, blue_instances,
            suspended=("AZRebalance", "AlarmNotification", "InstanceRefresh", "ScheduledActions"),
            saved_suspended="AZRebalance"):
    blue = group_record("blue", (3, len(blue_instances), 6), blue_instances,
                        tags={**record_tag("deploy", phase_name, holder="ci@builder:100"),
                              "bluegreen:saved-sizes": "3/3/6", "bluegreen:saved-suspended": saved_suspended},
                        suspended=suspended)
    green = group_record("green", (3, 3, 6), ids("g", 3), tags={"bluegreen:version": "2.0"})
    return snapshot(blue, green, {"blue": [], "green": []}, {"blue": [], "green": []})


def test_the_gate_undoes_only_the_suspensions_of_the_deploy_and_none_once_part_has_flipped():
    steps = plan.plan_deploy(resumed("policies", ids("b", 3)), ctx(), "2.0")
    gate = steps[names(steps).index("recheck-new-healthy")]
    assert gate.verdict is health.GATE and gate.on_failure == "stop"
    assert [c.params["ScalingProcesses"] for c in gate.undo] == [["AlarmNotification", "ScheduledActions",
                                                                  "InstanceRefresh"]]
    steps = plan.plan_deploy(resumed("flip", ids("b", 2) + ids("s", 1, "Standby")), ctx(), "2.0")
    assert steps[names(steps).index("recheck-new-healthy")].undo == ()


def test_a_deploy_killed_between_its_last_batch_and_the_phase_record_records_it_on_the_rerun():
    steps = plan.plan_deploy(resumed("policies", ids("s", 3, "Standby")), ctx(), "2.0")
    assert "enter-standby" not in names(steps)
    mark = steps[names(steps).index("mark-flip")]
    assert mark.calls[0].record.phase == "flip"
    assert names(steps).index("recheck-new-healthy") < names(steps).index("mark-flip")


def test_with_cross_zone_off_the_gate_asks_each_zone_for_its_share(make_harness, aws):
    fleet = make_harness(capacity=4, zones=2)
    fleet.elbv2.modify_target_group_attributes(TargetGroupArn=fleet.svc["target_group_arn"], Attributes=[
        {"Key": "load_balancing.cross_zone.enabled", "Value": "false"}])  # each zone serves its own targets (E6)
    zone_b = fleet.svc["zones"][1]
    aws.configure_faults(insufficient_capacity_zones=[zone_b])
    out = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "60")
    expect_exit(out, 1)
    line = last_error_line(out)
    assert f"zone {zone_b} would be left with 0 healthy 2.0 instances of demo-green, it needs 2 (4 of demo-blue " \
           "serve 2 zones, cross-zone off)" in line, line
    assert set(fleet.lifecycles("blue").values()) == {"InService"}


def test_a_gate_stopped_by_ctrl_c_also_leaves_nothing_suspended_on_the_serving_group(make_harness, monkeypatch):
    # Finding 21 beyond a failed gate: any stop inside the gate (Ctrl-C here; an AWS error alike) undoes it too.
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at="suspend"), -9)
    publish_running(fleet, "2.0", others={0: "1.0"})()  # the gate waits: one new instance runs 1.0

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet, "_sleep", interrupted)  # the first sleep is the gate's first poll interval
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 130)
    assert fleet.group("blue")["SuspendedProcesses"] == []
    assert set(fleet.lifecycles("blue").values()) == {"InService"}
