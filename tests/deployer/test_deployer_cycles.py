"""Whole commands, in process (tests/deployer/harness.py): the real CLI, planners and runner against the emulated
AWS over HTTP, on one fake clock; the health floor is sampled after every mutating call the deployer makes."""

import json

from tests.deployer.fleet import last_error_line, unhealthy_launches
from tests.helpers import expect_exit


def ok(proc):
    expect_exit(proc, 0)
    return proc


def test_full_cycle_at_45_instances_never_drops_below_live_capacity(make_harness):
    n = 45  # so every batch loop runs three times (20 + 20 + 5)
    fleet = make_harness(capacity=n)
    blue_ids = set(fleet.lifecycles("blue"))

    with fleet.health_floor() as deploy_sampler:
        out = ok(fleet.bluegreen("deploy", "demo", "2.0", "--output", "json"))
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

    with fleet.health_floor() as rollback_sampler:
        ok(fleet.bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", n, "1.0")
    assert set(fleet.lifecycles("blue")) == blue_ids  # the same instances came back: nothing relaunched
    assert fleet.sizes("blue") == (n, n, 2 * n)
    assert rollback_sampler.minimum >= n

    with fleet.health_floor() as second:
        ok(fleet.bluegreen("deploy", "demo", "2.0"))
    assert second.minimum >= n
    fleet.assert_flipped("green", n, "2.0")

    with fleet.health_floor() as finalize_sampler:
        out = ok(fleet.bluegreen("finalize", "demo"))
    assert finalize_sampler.minimum >= n
    fleet.assert_serving_only("green", n, "2.0")
    assert fleet.lifecycles("blue") == {}
    # A4: detached first, then terminated; none left running outside the group
    states = fleet.ec2_states(blue_ids)
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    assert out.stdout.strip() == "finalize demo: done; demo-green is live"

    status = json.loads(ok(fleet.bluegreen("status", "demo", "--output", "json")).stdout)
    assert status["live"] == "green" and status["operation"] is None and status["schema_version"] == 1
    assert (status["groups"]["blue"]["min"], status["groups"]["blue"]["desired"], status["groups"]["blue"]["max"]) \
        == (0, 0, 0)
    assert {i["health"] for i in status["groups"]["green"]["instances"]} == {"healthy"}


def test_canary_then_deploy_keeps_the_canary_and_canary_then_rollback_removes_it(make_harness):
    fleet = make_harness(capacity=3)
    with fleet.health_floor() as sampler:
        out = ok(fleet.bluegreen("canary", "demo", "2.0", "--count", "1"))
    assert sampler.minimum >= 3
    assert "1 canary instance(s) in demo-green serve beside demo-blue" in out.stdout
    canary = set(fleet.lifecycles("green"))
    assert len(canary) == 1 and canary <= fleet.healthy()
    assert len(fleet.healthy()) == 4  # serves beside the live fleet

    blocked = fleet.bluegreen("deploy", "demo", "3.0")
    assert blocked.returncode == 3
    assert "held by canary 2.0" in last_error_line(blocked)

    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    fleet.assert_flipped("green", 3, "2.0")
    assert canary <= set(fleet.lifecycles("green"))  # kept, not replaced

    ok(fleet.bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3)
    ok(fleet.bluegreen("canary", "demo", "2.1", "--count", "2"))
    assert len(fleet.lifecycles("green")) == 2
    ok(fleet.bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3, "1.0")
    fleet.wait_for(lambda: not fleet.lifecycles("green"), "the canary instances to be gone")


def test_deploy_aborts_on_its_own_when_a_new_instance_turns_unhealthy(make_harness, aws):
    fleet = make_harness(capacity=3)
    with unhealthy_launches(aws, "demo-green"), fleet.health_floor() as sampler:
        proc = fleet.bluegreen("deploy", "demo", "3.0")
    assert proc.returncode == 1
    line = last_error_line(proc)
    # Every new instance fails: past the replacement budget (finding 11) once their grace period is over (E5).
    assert "deploy demo 3.0 aborted: 3 new instances of demo-green failed or were replaced" in line
    assert "unhealthy in target group demo-tg" in line
    assert "demo-green is back to 0 and demo-blue was not touched" in line
    assert sampler.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


def test_deploy_that_times_out_aborts_and_says_what_it_saw(make_harness):
    # A6: with a launch hook and no agent to complete it, new instances wait in Pending:Wait, outside the LB.
    fleet = make_harness(capacity=2, launch_hook=True)
    proc = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "0.5")
    assert proc.returncode == 1
    line = last_error_line(proc)
    assert "timed out after 0.5s" in line and "last seen: 0/2 of demo-green healthy" in line
    assert "Pending:Wait" in line
    fleet.assert_serving_only("blue", 2, "1.0")


def test_deploy_with_a_launch_hook_waits_for_the_agents(make_harness):
    fleet = make_harness(capacity=2, launch_hook=True)
    fleet.agents.append(lambda: fleet.complete_hooks("green"))  # each new instance's agent, once its stack answers
    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    fleet.assert_flipped("green", 2, "2.0")


def test_deploy_aborts_at_once_when_the_agents_abandon_their_launches(make_harness):
    # What an agent does when its stack never turns healthy (A6: ABANDON terminates the instance, and the group
    # launches another). The deploy must abort on the failed launch, not sit out its timeout.
    fleet = make_harness(capacity=2, launch_hook=True)
    fleet.agents.append(lambda: fleet.complete_hooks("green", result="ABANDON"))
    started = fleet.clock.now()
    proc = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "600")
    took = fleet.clock.now() - started
    assert proc.returncode == 1
    line = last_error_line(proc)
    assert "aborted" in line and "timed out" not in line, line
    assert "left demo-green before turning healthy" in line or "Terminating" in line, line
    assert took < 120, f"the deploy took {took:.0f} AWS seconds to notice the failed launches"
    fleet.assert_serving_only("blue", 2, "1.0")


def test_rollback_mid_deploy_empties_the_new_group_and_leaves_the_live_one(make_harness):
    fleet = make_harness(capacity=3)
    crashed = fleet.bluegreen("deploy", "demo", "2.0", crash_at="suspend")
    assert crashed.returncode == -9
    assert "action=deploy;phase=policies" in fleet.tags("blue")["bluegreen:operation"]
    with fleet.health_floor() as sampler:
        ok(fleet.bluegreen("rollback", "demo"))
    assert sampler.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


def test_dry_run_prints_the_plan_and_changes_nothing(make_harness):
    fleet = make_harness(capacity=3)
    before = (fleet.sizes("blue"), fleet.sizes("green"), fleet.tags("blue"), fleet.tags("green"))
    out = ok(fleet.bluegreen("deploy", "demo", "2.0", "--dry-run", "--output", "json"))
    plan = json.loads(out.stdout)
    assert plan["dry_run"] is True and plan["aws_calls"] >= 1
    assert [s["name"] for s in plan["plan"]][:4] == ["lock", "set-version", "size-new", "wait-new-healthy"]
    ops = [c["op"] for s in plan["plan"] for c in s["calls"]]
    assert "EnterStandby" in ops and "SuspendProcesses" in ops
    assert (fleet.sizes("blue"), fleet.sizes("green"), fleet.tags("blue"), fleet.tags("green")) == before
    text = ok(fleet.bluegreen("deploy", "demo", "2.0", "--dry-run")).stdout
    assert text.startswith("deploy demo 2.0 (dry run: nothing changed):")
    assert "EnterStandby(AutoScalingGroupName=demo-blue" in text
    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    text = ok(fleet.bluegreen("rollback", "demo", "--dry-run")).stdout
    # Straight after the flip the old instances still drain (EnteringStandby, A1): the plan registers them
    # directly with the target group (E8), and waits for the drain only in the settled stage.
    assert "register-draining: register 3 instances of demo-blue that still drain after the flip" in text
    assert "RegisterTargets(TargetGroupArn=" in text and "wait-standby-settled" not in text
    fleet.wait_for(lambda: set(fleet.lifecycles("blue").values()) == {"Standby"}, "the drain to end")
    flipped = (fleet.sizes("blue"), fleet.sizes("green"), fleet.lifecycles("blue"), fleet.tags("green"))
    text = ok(fleet.bluegreen("rollback", "demo", "--dry-run")).stdout
    assert "ExitStandby(AutoScalingGroupName=demo-blue" in text and "retire-new: scale demo-green to 0" in text
    text = ok(fleet.bluegreen("finalize", "demo", "--dry-run")).stdout
    assert "DetachInstances(AutoScalingGroupName=demo-blue" in text and "ShouldDecrementDesiredCapacity=False" in text
    assert (fleet.sizes("blue"), fleet.sizes("green"), fleet.lifecycles("blue"), fleet.tags("green")) == flipped


def test_bad_input_gives_one_line_and_exit_2(make_harness):
    fleet = make_harness(capacity=1)
    proc = fleet.bluegreen("deploy", "nosuch", "2.0")
    assert proc.returncode == 2
    assert last_error_line(proc) == ("bluegreen: error: no Auto Scaling group is tagged bluegreen:service=nosuch "
                                     "in this account and Region")
    proc = fleet.bluegreen("deploy", "demo", "not a tag", "--output", "json")
    assert proc.returncode == 2 and "is not a valid Docker tag" in last_error_line(proc)
    assert json.loads(proc.stdout)["exit_code"] == 2
    proc = fleet.bluegreen("deploy", "nosuch", "2.0", "--output", "json")
    summary = json.loads(proc.stdout)
    assert (proc.returncode, summary["result"], summary["aws_calls"]) == (2, "error", 1)
    proc = fleet.bluegreen("push-bootstrap", "/nonexistent", "s3://bucket/x/")
    assert proc.returncode == 2 and last_error_line(proc) == "bluegreen: error: '/nonexistent' is not a directory"
    proc = fleet.bluegreen("rollback", "demo")
    assert proc.returncode == 3 and "nothing to roll back" in last_error_line(proc)


def test_the_health_floor_catches_a_naive_flip(make_harness):
    # The floor assertions above are only worth something if the floor sees a drop when there is one: scaling
    # the live group in before the new one is healthy is exactly the mistake they guard against.
    from deployer.steps import CallStep, UnlockStep, set_sizes

    fleet = make_harness(capacity=3)

    def naive(snap, ctx):
        if snap.groups["blue"].desired == 0:
            return []
        return [CallStep("size-new", "green up", (set_sizes(snap.groups["green"], (3, 3, 6)),)),
                UnlockStep("retire-old", "blue to 0 at once", (set_sizes(snap.groups["blue"], (0, 0, 6)),))]

    with fleet.health_floor() as floor:
        fleet.run_planner(naive)
    assert floor.minimum < 3


def test_colors_alternate_across_finalized_deploys(make_harness):
    fleet = make_harness(capacity=3)
    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    ok(fleet.bluegreen("finalize", "demo"))
    fleet.assert_serving_only("green", 3, "2.0")
    with fleet.health_floor() as sampler:
        ok(fleet.bluegreen("deploy", "demo", "3.0"))
    assert sampler.minimum >= 3
    fleet.assert_flipped("blue", 3, "3.0")
    again = ok(fleet.bluegreen("deploy", "demo", "3.0"))  # a pipeline retrying a finished deploy changes nothing
    assert "already done: nothing to change" in again.stdout
    ok(fleet.bluegreen("finalize", "demo"))
    fleet.assert_serving_only("blue", 3, "3.0")
    assert ok(fleet.bluegreen("finalize", "demo")).stdout.strip() == "finalize demo: done (already done: nothing " \
        "to change); demo-blue is live"


def test_finalize_right_after_deploy_waits_for_draining_and_keeps_the_operators_suspensions(make_harness):
    # 300 s deregistration delay (E2): 3 s at the test time scale, so the Standby instances still drain when
    # a pipeline runs finalize straight after deploy.
    fleet = make_harness(capacity=3, deregistration_delay=300)
    fleet.asg.suspend_processes(AutoScalingGroupName="demo-blue", ScalingProcesses=["AZRebalance"])
    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    draining = {i for i, s in fleet.target_states().items() if s == "draining"}
    assert draining == set(fleet.lifecycles("blue"))  # deploy did not sit out the delay
    proc = ok(fleet.bluegreen("finalize", "demo"))
    assert "wait-drained: 3 not yet drained: i-" in proc.stderr
    assert "wait-drained: all Standby instances of demo-blue drained" in proc.stderr
    fleet.assert_serving_only("green", 3, "2.0")
    # only what the deploy suspended was resumed (A8)
    assert [p["ProcessName"] for p in fleet.group("blue")["SuspendedProcesses"]] == ["AZRebalance"]


def test_a_pair_not_behind_the_same_load_balancer_is_refused_before_anything_changes(make_harness):
    # E4: a group attached to no load balancer would count as "healthy everywhere", and the flip would leave
    # the real load balancer with no target at all.
    fleet = make_harness(capacity=2)
    fleet.asg.detach_load_balancer_target_groups(AutoScalingGroupName="demo-green",
                                                 TargetGroupARNs=[fleet.svc["target_group_arn"]])
    proc = fleet.bluegreen("deploy", "demo", "2.0")
    assert proc.returncode == 2
    assert "are not attached to the same target groups" in last_error_line(proc)
    assert "bluegreen:operation" not in fleet.tags("blue") and fleet.sizes("green") == (0, 0, 0)
    fleet.assert_serving_only("blue", 2, "1.0")


def test_a_resumed_deploy_does_not_flip_to_a_new_fleet_that_turned_unhealthy(make_harness, aws):
    fleet = make_harness(capacity=3)
    crashed = fleet.bluegreen("deploy", "demo", "2.0", crash_at="suspend")
    assert crashed.returncode == -9
    for instance_id in fleet.lifecycles("green"):
        aws.set_target_health(instance_id, "unhealthy")  # the new version went bad while the pipeline was dead
    with fleet.health_floor() as sampler:
        proc = fleet.bluegreen("deploy", "demo", "2.0")
    assert proc.returncode == 1
    assert "unhealthy in target group" in last_error_line(proc)
    assert sampler.minimum >= 3
    assert set(fleet.lifecycles("blue").values()) == {"InService"}  # nothing went to Standby
    ok(fleet.bluegreen("rollback", "demo"))
    fleet.assert_serving_only("blue", 3, "1.0")


def test_rollback_brings_back_the_capacity_the_new_group_grew_to(make_harness):
    fleet = make_harness(capacity=3)
    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    fleet.asg.set_desired_capacity(AutoScalingGroupName="demo-green", DesiredCapacity=5)  # a scale-out after the flip
    fleet.wait_for(lambda: len(fleet.healthy()) == 5, "green's scale-out to turn healthy")
    with fleet.health_floor() as sampler:
        ok(fleet.bluegreen("rollback", "demo"))
    assert sampler.minimum >= 5
    fleet.assert_serving_only("blue", 5, "1.0")


def test_a_planner_that_never_converges_is_stopped_by_a_bound_from_the_pairs_size(make_harness):
    from deployer.runner import round_limit
    from deployer.steps import Call, CallStep, tag

    fleet = make_harness(capacity=2)
    rounds = []

    def forever(snap, ctx):  # a bug: always one more harmless step
        rounds.append(snap)
        return [CallStep("again", "tag again", (Call("CreateOrUpdateTags", {"Tags": [tag("demo-blue", "x", "y")]}),))]

    try:
        fleet.run_planner(forever)
    except RuntimeError as exc:
        assert "did not converge" in str(exc)
    else:
        raise AssertionError("the runner applied steps without end")
    assert len(rounds) == round_limit(rounds[0]) == 100 + 4 * 4  # blue at most 4, green at most 0


def test_a_step_policy_and_its_alarm_act_on_the_live_group_through_every_flip(make_harness):
    """W1, A7: deploy, finalize, deploy, rollback, deploy again, finalize. After each, the alarms of the live group's
    step policies watch the live group and act on its policies' ARNs; the operator's own same-name policy put by
    hand on the idle group is never overwritten nor deleted, and its own alarm goes on acting on it."""
    fleet = make_harness(capacity=2)
    cw = fleet.session.client("cloudwatch")
    group = fleet.svc["groups"]

    def policies(color):
        return {p["PolicyName"]: p for p in fleet.asg.describe_policies(AutoScalingGroupName=group[color])[
            "ScalingPolicies"]}

    def put(color, policy, alarm, adjustment=1):
        fleet.asg.put_scaling_policy(AutoScalingGroupName=group[color], PolicyName=policy, PolicyType="StepScaling",
                                     AdjustmentType="ChangeInCapacity", StepAdjustments=[
                                         {"MetricIntervalLowerBound": 0, "ScalingAdjustment": adjustment}])
        cw.put_metric_alarm(AlarmName=alarm, Namespace="AWS/EC2", MetricName="CPUUtilization", Statistic="Average",
                            Period=60, EvaluationPeriods=2, Threshold=70, ComparisonOperator="GreaterThanThreshold",
                            AlarmActions=[policies(color)[policy]["PolicyARN"]],
                            Dimensions=[{"Name": "AutoScalingGroupName", "Value": group[color]}])

    def acting(color):
        """Alarm name -> (the policy of `color` it acts on, the group its dimension names), for every alarm acting
        on a policy of `color`."""
        arns = {p["PolicyARN"]: name for name, p in policies(color).items()}
        out = {}
        for a in cw.describe_alarms()["MetricAlarms"]:
            for arn in a["AlarmActions"]:
                if arn in arns:
                    out[a["AlarmName"]] = (arns[arn], a["Dimensions"][0]["Value"])
        return out

    def tool_copies(color):
        g = group[color]
        return {f"cpu-high--bluegreen-{g}": (f"out--bluegreen-{g}", g),
                f"cpu-low--bluegreen-{g}": (f"in--bluegreen-{g}", g)}

    put("blue", "out", "cpu-high")
    put("blue", "in", "cpu-low", adjustment=-1)
    put("green", "green-only", "green-own")  # the operator's, on the idle group, under a name of its own

    ok(fleet.bluegreen("deploy", "demo", "2.0"))
    assert acting("green") == {**tool_copies("green"), "green-own": ("green-only", group["green"])}
    assert acting("blue") == {"cpu-high": ("out", group["blue"]), "cpu-low": ("in", group["blue"])}  # until finalize

    out = ok(fleet.bluegreen("finalize", "demo"))
    assert acting("green") == {**tool_copies("green"), "green-own": ("green-only", group["green"])}
    assert acting("blue") == {} and "cpu-high, cpu-low keep no action" in out.stdout + out.stderr
    assert {"cpu-high", "cpu-low"} <= {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}  # kept (W1)

    # The operator puts "out" by hand on the now idle blue, as an IaC declaring it there would: same name as the
    # policy the deploy moves, another body. It is the live group's from the next flip on, never overwritten.
    put("blue", "out", "blue-own", adjustment=3)
    own_arn = policies("blue")["out"]["PolicyARN"]

    def assert_blue_live():
        assert acting("blue") == {"blue-own": ("out", group["blue"]),  # the operator's, not a second copy
                                  f"cpu-low--bluegreen-{group['blue']}": (f"in--bluegreen-{group['blue']}",
                                                                          group["blue"]),
                                  f"green-own--bluegreen-{group['blue']}": (f"green-only--bluegreen-{group['blue']}",
                                                                            group["blue"])}
        mine = policies("blue")["out"]
        assert (mine["PolicyARN"], mine["StepAdjustments"][0]["ScalingAdjustment"]) == (own_arn, 3)

    ok(fleet.bluegreen("deploy", "demo", "3.0"))
    assert_blue_live()
    ok(fleet.bluegreen("rollback", "demo"))
    assert acting("green") == {**tool_copies("green"), "green-own": ("green-only", group["green"])}
    assert acting("blue") == {"blue-own": ("out", group["blue"])}  # the rollback deleted only the tool's copies
    assert set(policies("blue")) == {"out"}
    ok(fleet.bluegreen("deploy", "demo", "3.0"))
    assert_blue_live()
    ok(fleet.bluegreen("finalize", "demo"))
    assert_blue_live()
    assert policies("green") == {} and acting("green") == {}


def test_customized_target_tracking_metrics_watch_the_live_group_after_every_flip(make_harness):
    """W1: a target tracking policy owns its alarms, but a customized metric may name the group in a dimension,
    as a plain metric or inside metric math (`Metrics`); each copy watches its own group."""
    fleet = make_harness(capacity=2)
    group = fleet.svc["groups"]
    dims = [{"Name": "AutoScalingGroupName", "Value": group["blue"]}]
    plain = {"MetricName": "RequestsPerInstance", "Namespace": "App", "Statistic": "Average", "Dimensions": dims}
    math = {"Metrics": [
        {"Id": "errors", "ReturnData": False, "MetricStat": {"Stat": "Sum", "Metric": {
            "Namespace": "App", "MetricName": "Errors", "Dimensions": dims}}},
        {"Id": "requests", "ReturnData": False, "MetricStat": {"Stat": "Sum", "Metric": {
            "Namespace": "App", "MetricName": "Requests", "Dimensions": dims + [{"Name": "Stage", "Value": "prod"}]}}},
        {"Id": "rate", "Expression": "100 * errors / requests", "Label": "error rate", "ReturnData": True}]}
    for name, spec in (("plain", plain), ("math", math)):
        fleet.asg.put_scaling_policy(AutoScalingGroupName=group["blue"], PolicyName=name,
                                     PolicyType="TargetTrackingScaling", TargetTrackingConfiguration={
                                         "TargetValue": 5.0, "CustomizedMetricSpecification": spec})

    def specs(color):
        return {p["PolicyName"].split("--")[0]: p["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
                for p in fleet.asg.describe_policies(AutoScalingGroupName=group[color])["ScalingPolicies"]}

    def named_groups(spec):
        found = [d["Value"] for d in spec.get("Dimensions") or () if d["Name"] == "AutoScalingGroupName"]
        for query in spec.get("Metrics") or ():
            found += [d["Value"] for d in ((query.get("MetricStat") or {}).get("Metric") or {}).get("Dimensions", ())
                      if d["Name"] == "AutoScalingGroupName"]
        return found

    for command, live in ((("deploy", "demo", "2.0"), "green"), (("finalize", "demo"), "green"),
                          (("deploy", "demo", "3.0"), "blue"), (("rollback", "demo"), "green")):
        ok(fleet.bluegreen(*command))
        copied = specs(live)
        assert named_groups(copied["plain"]) == [group[live]]
        assert named_groups(copied["math"]) == [group[live], group[live]]
        assert copied["math"]["Metrics"][2]["Expression"] == "100 * errors / requests"
        assert {d["Name"]: d["Value"] for d in copied["math"]["Metrics"][1]["MetricStat"]["Metric"]["Dimensions"]} \
            == {"AutoScalingGroupName": group[live], "Stage": "prod"}
