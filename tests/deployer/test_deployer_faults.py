"""The deployer under the emulated AWS's faults and limits: throttling, contention, pages, locks, Classic ELB."""

import json
import subprocess
import time

from tests.deployer.fleet import BLUEGREEN, FAST, HealthSampler, last_error_line, run_bluegreen


def ok(*args, **kwargs):
    proc = run_bluegreen(*args, **kwargs)
    assert proc.returncode == 0, f"{args} exit {proc.returncode}\n{proc.stderr}"
    return proc


def test_a_fifth_of_all_calls_throttled_still_completes_safely(make_fleet, aws):
    fleet = make_fleet(capacity=5)
    aws.configure_faults(throttle_fraction=0.2)  # A10: HTTP 400 Throttling "Rate exceeded"
    try:
        with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
            deploy = json.loads(ok("deploy", "demo", "2.0", "--output", "json").stdout)
            rollback = json.loads(ok("rollback", "demo", "--output", "json").stdout)
    finally:
        aws.configure_faults()
    assert sampler.minimum >= 5
    # botocore's adaptive mode retried the throttled calls (A10): more HTTP attempts than API calls
    assert deploy["aws_attempts"] > deploy["aws_calls"] and rollback["aws_attempts"] > rollback["aws_calls"]
    fleet.assert_serving_only("blue", 5, "1.0")


def test_exit_standby_resource_contention_is_retried(make_fleet, aws):
    fleet = make_fleet(capacity=3)
    ok("deploy", "demo", "2.0")
    aws.configure_faults(exit_standby_contention_once=True)  # A2
    try:
        summary = json.loads(ok("rollback", "demo", "--output", "json").stdout)
    finally:
        aws.configure_faults()
    # HTTP 500 ResourceContention is retried by botocore (adaptive mode): one more attempt than calls
    assert summary["aws_attempts"] == summary["aws_calls"] + 1
    fleet.assert_serving_only("blue", 3, "1.0")


def test_more_policies_and_scheduled_actions_than_one_page(make_fleet):
    fleet = make_fleet(capacity=2)
    for k in range(60):  # A9: DescribePolicies answers 50 a page
        fleet.asg.put_scaling_policy(AutoScalingGroupName="demo-blue", PolicyName=f"step-{k:02d}",
                                     PolicyType="SimpleScaling", AdjustmentType="ChangeInCapacity",
                                     ScalingAdjustment=1)
    for k in range(55):
        fleet.asg.put_scheduled_update_group_action(AutoScalingGroupName="demo-blue",
                                                    ScheduledActionName=f"at-{k:02d}", Recurrence="0 3 * * *",
                                                    DesiredCapacity=2)

    def count(color):
        pol = fleet.asg.get_paginator("describe_policies").paginate(
            AutoScalingGroupName=fleet.svc["groups"][color]).build_full_result()["ScalingPolicies"]
        act = fleet.asg.get_paginator("describe_scheduled_actions").paginate(
            AutoScalingGroupName=fleet.svc["groups"][color]).build_full_result()["ScheduledUpdateGroupActions"]
        return len(pol), len(act)

    ok("deploy", "demo", "2.0")
    assert count("green") == (60, 55) and count("blue") == (60, 55)  # A7: copied, blue's kept for rollback
    ok("finalize", "demo")
    assert count("green") == (60, 55) and count("blue") == (0, 0)
    fleet.assert_serving_only("green", 2, "2.0")


def test_lock_names_a_running_holder_and_rollback_takes_over(make_fleet):
    # With a launch hook nobody completes (A6), the deploy sits in its health wait: a running holder. The hook's
    # own timeout (3600 AWS s, 36 s here) must outlast the test on a loaded machine, or its ABANDON (A6) would
    # abort the deploy before the rollback takes over.
    fleet = make_fleet(capacity=2, launch_hook=True, hook_timeout=3600)
    env = dict(__import__("os").environ, **FAST)
    first = subprocess.Popen([BLUEGREEN, "deploy", "demo", "2.0"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        fleet.wait_for(lambda: "bluegreen:operation" in fleet.tags("green"), "the first deploy to take the lock")
        same = run_bluegreen("deploy", "demo", "2.0")
        assert same.returncode == 3
        line = last_error_line(same)
        assert f":{first.pid} (since " in line and "deploy 2.0 of demo is running now in" in line
        other = run_bluegreen("deploy", "demo", "3.0")
        assert other.returncode == 3
        assert "held by deploy 2.0 (phase launch)" in last_error_line(other) and f":{first.pid} since " in \
            last_error_line(other)
        with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
            taken = ok("rollback", "demo")
        assert sampler.minimum >= 2
        # The deploy it displaced still runs and may have a call in flight: the rollback re-checks its end state
        # once that call can have landed (store.MAX_CALL_S) before it unlocks.
        assert "for any call of the displaced holder to land" in taken.stderr
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 3
    # The deploy notices at its next observation: the rollback either still holds the record, or has already
    # finished and removed it; both stop the displaced deploy with exit 3.
    last = err.splitlines()[-1]
    assert "taken over by rollback" in last or "record on demo was removed by another command" in last, last
    fleet.assert_serving_only("blue", 2, "1.0")


def test_force_unlock_takes_over_a_holder_that_looks_alive(make_fleet):
    fleet = make_fleet(capacity=2)
    crashed = run_bluegreen("deploy", "demo", "2.0", crash_at="suspend")
    assert crashed.returncode == -9
    # The same record as written by a holder on another machine, whose lease is live: whether that pipeline
    # still runs cannot be checked from here. The state store (the default, beside the bundle) holds the lock.
    s3 = fleet.session.client("s3")
    key = "demo/.bluegreen/demo/lock.json"
    doc = json.loads(s3.get_object(Bucket="bluegreen-bootstrap", Key=key)["Body"].read())
    doc["holder"] = "ci@another-host:77"
    s3.put_object(Bucket="bluegreen-bootstrap", Key=key, Body=json.dumps(doc).encode())
    refused = run_bluegreen("deploy", "demo", "2.0")
    assert refused.returncode == 3 and "ci@another-host:77" in last_error_line(refused)
    proc = ok("deploy", "demo", "2.0", "--force-unlock")
    assert "take over the lock" in proc.stderr
    fleet.assert_flipped("green", 2, "2.0")


def test_classic_elb_and_target_group_together(make_fleet):
    fleet = make_fleet(capacity=3, classic_elb=True)
    elb = fleet.session.client("elb")

    def in_service():
        states = elb.describe_instance_health(LoadBalancerName="demo-elb")["InstanceStates"]
        return {s["InstanceId"] for s in states if s["State"] == "InService"}

    blue = set(fleet.lifecycles("blue"))
    fleet.wait_for(lambda: in_service() == blue, "blue InService in the Classic ELB (E3)")
    ok("deploy", "demo", "2.0")
    green = set(fleet.lifecycles("green"))
    assert in_service() == green  # E3: Standby instances left the Classic ELB, the new ones are InService
    start = time.monotonic()
    ok("rollback", "demo")
    assert time.monotonic() - start < 30
    assert in_service() == blue
