"""Smoke tests of the installed console script killed for real (SIGKILL) mid-command, then rerun or rolled back.

The whole matrix of crash points runs in process (test_deployer_crash.py); these few show that a real kill -9
of the real `bluegreen` process, between two AWS calls, is resumed the same way.
"""

from tests.deployer.fleet import HealthSampler, run_bluegreen
from tests.deployer.test_deployer_crash import no_instance_lost, policy_names, with_policy
from tests.helpers import expect_exit


def killed(*args, at):
    proc = run_bluegreen(*args, crash_at=at)
    expect_exit(proc, -9)
    assert f"killing this process before step {at.split(':')[0]}" in proc.stderr
    return proc


def test_deploy_killed_inside_the_standby_batches_then_rerun(make_fleet):
    fleet = with_policy(make_fleet(capacity=21))
    original = set(fleet.lifecycles("blue"))
    killed("deploy", "demo", "2.0", at="enter-standby:2")
    no_instance_lost(fleet, original)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        expect_exit(run_bluegreen("deploy", "demo", "2.0"), 0)
    assert sampler.minimum >= 21
    fleet.assert_flipped("green", 21, "2.0")
    assert policy_names(fleet, "green") == {"cpu50--bluegreen-demo-green"}


def test_deploy_killed_while_waiting_for_the_new_fleet_then_rolled_back(make_fleet):
    fleet = make_fleet(capacity=3)
    original = set(fleet.lifecycles("blue"))
    killed("deploy", "demo", "2.0", at="wait-new-healthy")
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        expect_exit(run_bluegreen("rollback", "demo"), 0)
    assert sampler.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")
    assert set(fleet.lifecycles("blue")) == original


def deployed_then_killed(make_fleet, capacity, command, at):
    fleet = make_fleet(capacity=capacity)
    original = set(fleet.lifecycles("blue"))
    expect_exit(run_bluegreen("deploy", "demo", "2.0"), 0)
    killed(command, "demo", at=at)
    no_instance_lost(fleet, original)
    expect_exit(run_bluegreen(command, "demo"), 0)
    return fleet, original


def test_rollback_killed_between_exit_standby_batches_then_rerun(make_fleet):
    fleet, original = deployed_then_killed(make_fleet, 21, "rollback", at="exit-standby:2")
    fleet.assert_serving_only("blue", 21, "1.0")
    assert set(fleet.lifecycles("blue")) == original


def test_finalize_killed_between_detach_and_terminate_then_rerun(make_fleet):
    fleet, original = deployed_then_killed(make_fleet, 3, "finalize", at="terminate")
    fleet.assert_serving_only("green", 3, "2.0")
    assert set(fleet.ec2_states(original).values()) <= {"shutting-down", "terminated"}


def test_an_installed_bluegreen_has_no_crash_switch_in_its_environment(make_fleet):
    """The old test hook read BLUEGREEN_CRASH_AT from the environment: a stray variable in a pipeline could kill
    a deploy. It is gone; the variable changes nothing."""
    fleet = make_fleet(capacity=3)
    proc = run_bluegreen("deploy", "demo", "2.0", env={"BLUEGREEN_CRASH_AT": "enter-standby"})
    expect_exit(proc, 0)
    fleet.assert_flipped("green", 3, "2.0")


def test_the_health_sampler_catches_a_naive_flip(make_fleet):
    # The sampler guards the subprocess tests here and in test_deployer_faults.py: it must see a drop when there
    # is one. Scaling the live group in before the new one is healthy is exactly the mistake it guards against.
    fleet = make_fleet(capacity=3)
    with HealthSampler(fleet.svc["target_group_arn"]) as sampler:
        fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-green", MinSize=3, MaxSize=6,
                                            DesiredCapacity=3)
        fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-blue", MinSize=0, MaxSize=6,
                                            DesiredCapacity=0)
        fleet.wait_for(lambda: len(fleet.healthy()) == 3 and not set(fleet.lifecycles("blue")),
                       "green to serve alone")
    assert sampler.minimum < 3
