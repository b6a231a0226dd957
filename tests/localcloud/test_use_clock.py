"""EmulatedAWS.use_clock: with an injected clock, the emulated world moves only when that clock moves.

The in-process deployer harness gives the emulator and the deployer's runner one fake time, so that a wait's
sleep moves the world on (issue 8, "one clock for the in-process harness"). Here AWS time is made very cheap
(time_scale 0.0001: a 15 s health check is 1.5 ms of real time) so that, were the real clock driving the world,
the few milliseconds each HTTP call takes would already have moved it.
"""

from __future__ import annotations

import time

from localcloud.aws.autoscaling import LAUNCH_SECONDS
from tests.helpers import FakeTime

SCALE = 0.0001


def _inject(cloud) -> FakeTime:
    cloud.configure_time(time_scale=SCALE)
    clock = FakeTime(start=1000.0)
    cloud.use_clock(clock.now)
    return clock


def _advance(cloud, clock: FakeTime, aws_seconds: float) -> None:
    clock.advance(cloud.state.scaled(aws_seconds))
    cloud.tick()


def test_target_stays_initial_until_the_injected_clock_passes_threshold_times_interval(world):
    cloud = world.cloud
    clock = _inject(cloud)
    arn = world.target_group(HealthCheckIntervalSeconds=5, HealthyThresholdCount=3)  # E1: healthy after 15 s
    (iid,) = world.instances()
    world.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    for _ in range(5):  # real time passes, and each request advances the model first: nothing moves
        assert world.health(arn) == {iid: "initial"}
    _advance(cloud, clock, 14)
    assert world.health(arn) == {iid: "initial"}
    _advance(cloud, clock, 1.5)
    assert world.health(arn) == {iid: "healthy"}
    cloud.use_clock(None)
    assert cloud.state.clock is time.monotonic


def test_lifecycle_states_move_only_with_the_injected_clock_and_tick(world):
    cloud = world.cloud
    session_scale = cloud.state.time_scale
    clock = _inject(cloud)
    tg = world.target_group(delay=20)
    world.group("blue", desired=1, target_groups=(tg,))
    (iid,) = world.states("blue")
    for _ in range(5):
        assert world.states("blue") == {iid: "Pending"}
    _advance(cloud, clock, LAUNCH_SECONDS - 1)
    assert world.states("blue") == {iid: "Pending"}
    clock.advance(cloud.state.scaled(1.5))
    cloud.tick()  # no request in between: tick() alone moves the model (events() does not tick)
    changes = [(e["previous"], e["state"]) for e in cloud.events() if e["type"] == "instance_lifecycle_changed"]
    assert changes == [("Pending", "InService")]
    assert world.health(tg) == {iid: "initial"}
    world.asg.enter_standby(AutoScalingGroupName="blue", InstanceIds=[iid], ShouldDecrementDesiredCapacity=True)
    _advance(cloud, clock, 19)
    assert (world.states("blue"), world.health(tg)) == ({iid: "EnteringStandby"}, {iid: "draining"})
    _advance(cloud, clock, 1.5)  # the deregistration delay is over
    assert (world.states("blue"), world.health(tg)) == ({iid: "Standby"}, {})
    cloud.reset()
    assert (cloud.state.clock, cloud.state.time_scale) == (time.monotonic, session_scale)  # reset() restores both
