"""The fleet supervisor against the emulated AWS over HTTP and a real HAProxy, with tiny HTTP apps standing in
for agent + stack (FakeInstance): HAProxy follows the target group, the target group follows HAProxy's real
checks, and no request fails through unhealthy, Standby, ExitStandby and scale-in. Fast: no Docker.
"""

import functools
import time

import boto3
import pytest
from botocore.config import Config

from localcloud.fleet.control import ControlClient
from localcloud.fleet.haproxy import LoadBalancer
from localcloud.fleet.load import LoadGenerator, sample_versions
from localcloud.fleet.supervisor import LAUNCH_TRIES, FleetSupervisor
from localcloud.scenario import create_service
from tests.helpers import wait_until

SCALE = 0.05  # AWS time: the 5 s x 2 check is 0.25 s x 2, a 30 s deregistration delay drains in 1.5 s
wait = functools.partial(wait_until, deadline_s=20.0)
RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})

pytestmark = pytest.mark.haproxy


@pytest.fixture
def fleet(aws, tmp_path, fake_instance):
    aws.configure_time(time_scale=SCALE, health_interval=300)  # the emulation's own timer: out of reach
    session = boto3.session.Session()
    svc = create_service(session, name="svc", capacity=2, version="1.0", health_interval=5, healthy_threshold=2,
                         deregistration_delay=30)
    asg = session.client("autoscaling", config=RETRIES)
    elbv2 = session.client("elbv2", config=RETRIES)
    lb = LoadBalancer(str(tmp_path / "lb")).start()
    supervisor = FleetSupervisor(ControlClient(aws.endpoint), asg, elbv2, lb, str(tmp_path), aws.endpoint,
                                 "us-east-1", "unused", time_scale=SCALE, poll_interval=0.05,
                                 instance_factory=fake_instance).start()
    yield svc, asg, elbv2, lb, supervisor
    supervisor.stop()
    lb.stop()


def target_health(elbv2, svc):
    answer = elbv2.describe_target_health(TargetGroupArn=svc["target_group_arn"])
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in answer["TargetHealthDescriptions"]}


def test_haproxy_routes_only_what_the_target_group_calls_healthy_and_no_request_fails(fleet):
    svc, asg, elbv2, lb, supervisor = fleet
    group = svc["groups"]["blue"]
    wait(lambda: supervisor.routed_count() == 2, "both instances healthy and routed")
    ids = sorted(supervisor.instances)
    load = LoadGenerator(lb.url, rate=50, max_seconds=60).start()
    try:
        seen = []

        def routed_only_when_healthy():
            # HAProxy first, then the target group: routing follows the group, so a routed server must be
            # healthy in the later read.
            servers = lb.servers()
            health = target_health(elbv2, svc)
            for instance_id, server in servers.items():
                seen.append((instance_id, server.routed, health.get(instance_id)))
            return all(health.get(i) == "healthy" for i, s in servers.items() if s.routed)

        # A failing check makes the target unhealthy in the target group; HAProxy stops routing to it.
        first = supervisor.instances[ids[0]]
        first.backend.healthy = False
        wait(lambda: target_health(elbv2, svc).get(ids[0]) == "unhealthy", "the failing target to be unhealthy")
        wait(lambda: not lb.servers()[ids[0]].routed, "HAProxy to stop routing to it")
        assert sample_versions(lb.url, 10) == ({ids[1]: 10}, 0)
        first.backend.healthy = True
        wait(lambda: supervisor.routed_count() == 2, "the recovered target to be routed again")

        # Standby (A1): out of HAProxy (draining, then removed), its app keeps running.
        asg.update_auto_scaling_group(AutoScalingGroupName=group, MinSize=0)
        asg.enter_standby(AutoScalingGroupName=group, InstanceIds=[ids[0]], ShouldDecrementDesiredCapacity=True)
        wait(lambda: target_health(elbv2, svc).get(ids[0]) == "draining", "draining")
        wait(lambda: not lb.servers().get(ids[0], None) or not lb.servers()[ids[0]].routed, "drained in HAProxy")
        wait(lambda: ids[0] not in lb.servers(), "removed from HAProxy after the deregistration delay")
        assert sample_versions(lb.url, 10) == ({ids[1]: 10}, 0)
        assert not first.stopped

        # ExitStandby (A2): `initial` until HAProxy's checks pass again, and routed only after that.
        asg.exit_standby(AutoScalingGroupName=group, InstanceIds=[ids[0]])
        wait(lambda: routed_only_when_healthy() and supervisor.routed_count() == 2, "the instance back in service")
        assert (ids[0], False, "initial") in seen  # it was re-checked before the group called it healthy
        assert all(h == "healthy" for _, routed, h in seen if routed)

        # Scale-in: the terminated instance is drained and idle before its app stops, and the load that goes on
        # after the stop is answered by the one left, without a failure.
        asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[1], ShouldDecrementDesiredCapacity=True)
        wait(lambda: supervisor.retired.get(ids[1]) is not None and supervisor.retired[ids[1]].stopped,
             "the terminated instance's app to stop")
        stopped = time.monotonic()
        wait(lambda: sum(load.snapshot().versions(start=stopped).values()) >= 20,
             "20 more answers after the app stopped")
    finally:
        result = load.stop()
    assert result.failures == [], result.summary()
    assert result.total > 100
    assert set(result.versions()) == set(ids)
    assert set(result.versions(start=stopped)) == {ids[0]}
    assert sample_versions(lb.url, 10) == ({ids[0]: 10}, 0)


def test_with_boot_seconds_each_instance_starts_only_after_its_boot(aws, tmp_path, fake_instance):
    """`bluegreen-localcloud up --boot-seconds S`: EC2's launch and the OS boot, which a container skips, come
    before the agent starts; the instance then serves as usual."""
    aws.configure_time(time_scale=SCALE, health_interval=300)
    session = boto3.session.Session()
    create_service(session, name="svc", capacity=2, version="1.0", health_interval=5, healthy_threshold=2)
    started = {}

    class Booting(fake_instance):
        def start(self):
            started[self.instance_id] = time.monotonic()
            return super().start()

    lb = LoadBalancer(str(tmp_path / "lb")).start()
    before = time.monotonic()
    supervisor = FleetSupervisor(ControlClient(aws.endpoint), session.client("autoscaling", config=RETRIES),
                                 session.client("elbv2", config=RETRIES), lb, str(tmp_path), aws.endpoint,
                                 "us-east-1", "unused", time_scale=SCALE, poll_interval=0.05, boot_seconds=40,
                                 instance_factory=Booting).start()
    try:
        wait(lambda: len(supervisor.instances) == 2, "both launches seen")
        assert started == {}, "an agent started before its instance booted"
        wait(lambda: supervisor.routed_count() == 2, "both instances booted, healthy and routed")
        assert sorted(started) == sorted(supervisor.instances)
        assert min(started.values()) - before >= 40 * SCALE
    finally:
        supervisor.stop()
        lb.stop()


def test_an_instance_whose_launch_cannot_be_read_is_listed_and_the_events_after_it_still_run(aws, tmp_path,
                                                                                              fake_instance):
    """One unreadable launch (its group or template already gone) must not stall every event after it."""
    from localcloud.fleet import FleetError

    aws.configure_time(time_scale=SCALE, health_interval=300)
    session = boto3.session.Session()
    create_service(session, name="svc", capacity=2, version="1.0", health_interval=5, healthy_threshold=2)
    refused = []

    def factory(instance_id, *args, **kwargs):
        if not refused or refused[0] == instance_id:
            refused.append(instance_id)
            raise FleetError(f"group of {instance_id} is gone: nothing to launch from")
        return fake_instance(instance_id, *args, **kwargs)

    lb = LoadBalancer(str(tmp_path / "lb")).start()
    supervisor = FleetSupervisor(ControlClient(aws.endpoint), session.client("autoscaling", config=RETRIES),
                                 session.client("elbv2", config=RETRIES), lb, str(tmp_path), aws.endpoint,
                                 "us-east-1", "unused", time_scale=SCALE, poll_interval=0.05,
                                 instance_factory=factory)
    try:
        for _ in range(LAUNCH_TRIES - 1):  # a failed read may be a failed poll: the event is read again
            with pytest.raises(FleetError):
                supervisor.tick()
            assert refused[0] not in supervisor.retired
        supervisor.tick()  # then it is given up, and the events after it run
        assert len(refused) == LAUNCH_TRIES and refused[0] in supervisor.retired
        assert supervisor.retired[refused[0]].agent_state.startswith("not launched (group of")
        assert len(supervisor.instances) == 1  # the other launch, in the same batch of events, went on
        assert refused[0] in {i["instance_id"] for i in supervisor.snapshot()["instances"]}
        supervisor.tick()  # the batch is not read again
        assert len(refused) == LAUNCH_TRIES and len(supervisor.instances) == 1
    finally:
        supervisor.stop()
        lb.stop()
