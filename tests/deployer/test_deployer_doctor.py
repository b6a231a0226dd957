"""`bluegreen doctor SERVICE` (issue 10, section 3): read only, every check with pass/warn/fail and its fix, the
expected times from the pair's own settings; exit 0 when nothing fails, 1 when a check fails, 2 usage, 4 AWS."""

from __future__ import annotations

import contextlib
import io
import json
import os

from agent import contract
from deployer import cli, doctor, preflight
from tests.deployer.preflight_support import ecr_image, lock_objects, name_image, pair_state
from tests.helpers import Outcome, expect_exit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_doctor(fleet, *extra):
    before, objects = pair_state(fleet), lock_objects(fleet)
    out = fleet.bluegreen("doctor", "demo", "--output", "json", *extra)
    assert pair_state(fleet) == before and lock_objects(fleet) == objects  # read only
    return out, (json.loads(out.stdout) if out.stdout.strip() else None)


def by_id(doc):
    return {c["id"]: c for c in doc["checks"]}


def test_the_json_document_and_a_warn_only_pair_exits_0(make_harness):
    # The harness's pair: no launch hook and no image named (warnings), everything else sound.
    fleet = make_harness(capacity=2)
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    assert set(doc) == {"schema_version", "service", "checks", "expected", "iam_actions"}
    assert doc["schema_version"] == contract.SCHEMA_VERSION and doc["service"] == "demo"
    assert [c["id"] for c in doc["checks"]] == ["operation", *preflight.REFUSALS, *preflight.WARNINGS,
                                                "health-check-type", "launch-hook",
                                                "cross-zone", "iam-actions"]
    assert set(preflight.CHECK_IDS) == {c["id"] for c in doc["checks"]}
    for c in doc["checks"]:
        assert set(c) == {"id", "status", "message", "fix"} and c["status"] in ("pass", "warn", "fail")
    checks = by_id(doc)
    warned = {"launch-hook", "image-exists"}
    assert {i for i, c in checks.items() if c["status"] != "pass"} == warned
    assert "has no launch hook" in checks["launch-hook"]["message"] and "put-lifecycle-hook" in checks["launch-hook"]["fix"]
    assert checks["bootstrap-manifest"]["message"] == "s3://bluegreen-bootstrap/demo/manifest.json: 1 files"
    # The scenario's settings: health checks every 5 s, healthy after 2, a 5 s deregistration delay; the harness's
    # poll is the deployer's default, 5 s. A rollback right after a flip registers the draining instances directly.
    assert doc["expected"] == {
        "deploy_floor_s": preflight.LAUNCH_S + 10, "rollback_floor_s": 15.0, "drain_s": 5, "health_run_s": 10, "poll_s": 5.0,
        "hook_timeout_s": None,
        "rollback": {"restored_s": 15.0, "settled_s": 25.0,
                     "restored": {"exit_standby_s": 0, "health_run_s": 10, "poll_s": 5.0},
                     "settled": {"restored_s": 15.0, "drain_s": 5, "old_drain_left_s": 5, "poll_s": 5.0}}}
    text = fleet.bluegreen("doctor", "demo")
    expect_exit(text, 0)
    assert "  WARN  launch-hook: demo-blue has no launch hook" in text.stdout
    assert "        fix: put a launch hook on both groups" in text.stdout
    assert f"0 failed, {len(warned)} warnings, {len(preflight.CHECK_IDS) - len(warned)} passed" in text.stdout


def test_a_failing_check_exits_1_and_names_its_fix(make_harness):
    fleet = make_harness(capacity=1)
    fleet.asg.put_warm_pool(AutoScalingGroupName=fleet.svc["groups"]["green"], MinSize=1, PoolState="Stopped")
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName=fleet.svc["groups"]["blue"], HealthCheckType="EC2")
    out, doc = run_doctor(fleet)
    expect_exit(out, 1)
    checks = by_id(doc)
    assert checks["warm-pool"]["status"] == "fail" and "delete-warm-pool" in checks["warm-pool"]["fix"]
    assert checks["health-check-type-match"]["status"] == "fail"
    assert checks["health-check-type"]["status"] == "warn" and "demo-blue uses HealthCheckType EC2" in \
        checks["health-check-type"]["message"]
    text = fleet.bluegreen("doctor", "demo")
    expect_exit(text, 1)
    assert "  FAIL  warm-pool: demo-green has a warm pool" in text.stdout


def test_groups_on_different_load_balancers_are_a_failed_check_not_a_usage_error(make_harness):
    fleet = make_harness(capacity=1)
    other = fleet.elbv2.create_target_group(Name="other-tg", Protocol="HTTP", Port=8080, VpcId=fleet.svc["vpc_id"],
                                            TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    fleet.asg.attach_load_balancer_target_groups(AutoScalingGroupName=fleet.svc["groups"]["green"],
                                                 TargetGroupARNs=[other])
    out, doc = run_doctor(fleet)
    expect_exit(out, 1)
    assert by_id(doc)["same-load-balancers"]["status"] == "fail"
    # deploy refuses it as it always did, now as pre-flight's check: exit 2, nothing changed
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 2, "[same-load-balancers]")


def test_a_launch_hook_with_a_long_timeout_or_continue_warns_and_a_short_one_passes(make_harness):
    fleet = make_harness(capacity=1, launch_hook=True, hook_timeout=600)
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    assert by_id(doc)["launch-hook"]["status"] == "pass"
    assert doc["expected"]["hook_timeout_s"] == 600

    def put_hook(timeout, result, name=fleet.svc["lifecycle_hook"]):
        for group in fleet.svc["groups"].values():
            fleet.asg.put_lifecycle_hook(LifecycleHookName=name, AutoScalingGroupName=group,
                                         LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                                         HeartbeatTimeout=timeout, DefaultResult=result)

    # 45 s: the agent heartbeats every 15 s (a third of it, issue 11), so a short hook is the recommended shape.
    put_hook(45, "ABANDON")
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    assert by_id(doc)["launch-hook"]["status"] == "pass"
    # An hour, and CONTINUE: an instance whose agent never started waits the hour, then joins the load balancer.
    put_hook(3600, "CONTINUE")
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    hook = by_id(doc)["launch-hook"]
    assert hook["status"] == "warn" and "times out after 3600 s, above the agent's whole run" in hook["message"]
    assert "defaults to CONTINUE" in hook["message"] and "--heartbeat-timeout 300" in hook["fix"]
    assert by_id(doc)["launch-hooks-match"]["status"] == "pass"
    # Two launch hooks and no tag: the agent cannot tell which is its own.
    put_hook(300, "ABANDON", name="other-launch")
    fleet.asg.delete_tags(Tags=[{"Key": "bluegreen:lifecycle-hook", "ResourceId": g,
                                 "ResourceType": "auto-scaling-group"} for g in fleet.svc["groups"].values()])
    out, doc = run_doctor(fleet)
    expect_exit(out, 1)
    assert "has 2 launch hooks and no bluegreen:lifecycle-hook tag" in by_id(doc)["launch-hook"]["message"]


def test_cross_zone_off_across_zones_is_a_warning(make_harness):
    fleet = make_harness(capacity=2, zones=2)
    out, doc = run_doctor(fleet)
    assert by_id(doc)["cross-zone"]["status"] == "pass" and by_id(doc)["zones-match"]["status"] == "pass"
    fleet.elbv2.modify_target_group_attributes(TargetGroupArn=fleet.svc["target_group_arn"], Attributes=[
        {"Key": "load_balancing.cross_zone.enabled", "Value": "false"}])
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    check = by_id(doc)["cross-zone"]
    assert check["status"] == "warn" and "across 2 zone(s)" in check["message"]


def test_doctor_checks_the_image_of_the_live_version_and_reports_an_operation(make_harness):
    fleet = make_harness(capacity=1)
    name_image(fleet, ecr_image(fleet.session, "demo-web", tags=("1.0", "2.0")))
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    assert by_id(doc)["image-exists"]["status"] == "pass"
    assert by_id(doc)["operation"]["message"] == "no operation in progress; demo-blue is live"
    assert fleet.bluegreen("deploy", "demo", "2.0", crash_at="enter-standby").returncode == -9
    doc = json.loads(fleet.bluegreen("doctor", "demo", "--output", "json").stdout)
    op = by_id(doc)["operation"]
    assert op["status"] == "warn" and op["message"].startswith("deploy 2.0 is in progress (phase policies")


def test_usage_and_aws_errors(make_harness, monkeypatch, tmp_path):
    fleet = make_harness(capacity=1)
    expect_exit(fleet.bluegreen("doctor", "nosuch"), 2, "no Auto Scaling group is tagged bluegreen:service=nosuch")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["doctor", "demo"], environ={})
    expect_exit(Outcome(code, "", err.getvalue()), 4, "no AWS credentials found")


def test_the_listed_iam_actions_are_exactly_the_policy():
    with open(os.path.join(ROOT, "iam", "deployer-policy.json")) as f:
        policy = json.load(f)
    granted = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        granted |= set(actions if isinstance(actions, list) else [actions])
    assert set(doctor.IAM_ACTIONS) == granted and len(doctor.IAM_ACTIONS) == len(granted)


def test_between_a_deploy_and_its_finalize_the_held_processes_and_standby_instances_are_no_failure(make_harness):
    # The flipped deploy's own work (processes held on the old group, its instances in Standby) is explained by its
    # record: a pipeline running doctor before finalize must not fail on it.
    fleet = make_harness(capacity=2)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    checks = by_id(doc)
    assert checks["suspended-processes"]["status"] == "pass" and checks["standby-unexplained"]["status"] == "pass"
    assert checks["operation"]["status"] == "warn"


def expected_lines(out):
    return [line for line in out.stdout.splitlines() if line.startswith("expected rollback")]


def test_the_expected_rollback_comes_from_the_pairs_own_health_checks_and_poll(make_harness):
    # Issue 13: restored = ExitStandby's Pending (0 while the old instances drain: registered directly) + healthy
    # threshold x interval + one poll; settled = restored + the new group's drain + one poll.
    fleet = make_harness(capacity=1)  # 5 s x 2, a 5 s delay
    restored, settled = expected_lines(fleet.bluegreen("doctor", "demo"))
    assert restored == ("expected rollback right after a flip: restored in 15 s = ExitStandby 0 s (instances still "
                        "draining are registered directly; 5 s once in Standby) + health run 10 s + poll 5 s")
    assert settled == ("expected rollback right after a flip: settled in 25 s = restored 15 s + drain 5 s (the new "
                       "group's instances drain before they terminate) + poll 5 s; the old instances finish draining "
                       "after 5 s")
    # The poll a rollback would use: BLUEGREEN_POLL_INTERVAL, else the default.
    out = fleet.bluegreen("doctor", "demo", "--output", "json", env={"BLUEGREEN_POLL_INTERVAL": "2"})
    assert json.loads(out.stdout)["expected"]["rollback"]["restored_s"] == 12


def test_the_default_health_checks_give_a_slower_restored(make_harness):
    # AWS's defaults: 30 s x 5, a 300 s delay.
    fleet = make_harness(capacity=1, health_interval=30, healthy_threshold=5, deregistration_delay=300)
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    rollback = doc["expected"]["rollback"]
    assert (rollback["restored_s"], rollback["settled_s"]) == (155, 460)
    assert rollback["restored"] == {"exit_standby_s": 0, "health_run_s": 150, "poll_s": 5}
    assert by_id(doc)["drain-bound"]["status"] == "pass"
    restored, settled = expected_lines(fleet.bluegreen("doctor", "demo"))
    assert "restored in 155 s = ExitStandby 0 s" in restored and "health run 150 s + poll 5 s" in restored
    assert "settled in 460 s = restored 155 s + drain 300 s" in settled


def test_the_worst_load_balancer_counts_and_no_drain_means_exit_standby(make_harness):
    fleet = make_harness(capacity=1, classic_elb=True)
    elb = fleet.session.client("elb")
    # The Classic ELB checks slower than the target group (5 s x 2): 20 s x 4 is the run a returned instance waits.
    elb.configure_health_check(LoadBalancerName=fleet.svc["classic_elb"], HealthCheck={
        "Target": "HTTP:8080/health", "Interval": 20, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 4})
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    assert doc["expected"]["health_run_s"] == 80 and doc["expected"]["rollback"]["restored_s"] == 85
    # No drain anywhere: the old instances are in Standby at once, so a rollback returns them with ExitStandby.
    elb.modify_load_balancer_attributes(LoadBalancerName=fleet.svc["classic_elb"],
                                        LoadBalancerAttributes={"ConnectionDraining": {"Enabled": False}})
    fleet.elbv2.modify_target_group_attributes(TargetGroupArn=fleet.svc["target_group_arn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    rollback = doc["expected"]["rollback"]
    assert rollback["restored"]["exit_standby_s"] == preflight.EXIT_STANDBY_S
    assert (rollback["restored_s"], rollback["settled_s"]) == (preflight.EXIT_STANDBY_S + 80 + 5,
                                                               preflight.EXIT_STANDBY_S + 80 + 5 + 5)
    restored, _ = expected_lines(fleet.bluegreen("doctor", "demo"))
    assert f"= ExitStandby {preflight.EXIT_STANDBY_S} s + health run 80 s + poll 5 s" in restored


def test_a_long_drain_is_a_warning_that_names_what_it_delays(make_harness):
    fleet = make_harness(capacity=1, deregistration_delay=900)
    out, doc = run_doctor(fleet)
    expect_exit(out, 0)
    check = by_id(doc)["drain-bound"]
    assert check["status"] == "warn" and "drains for 900 s, above 300 s" in check["message"]
    assert "still reaches restored after one health-check run" in check["message"]
    assert "settled stage and a finalize wait for the drain" in check["message"]
    # restored does not move with the drain; settled does.
    assert (doc["expected"]["rollback"]["restored_s"], doc["expected"]["rollback"]["settled_s"]) == (15, 920)
    out, doc = run_doctor(fleet, "--max-drain", "900")
    expect_exit(out, 0)
    assert by_id(doc)["drain-bound"]["status"] == "pass"
