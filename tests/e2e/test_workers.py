"""Standby means "no work" (issue 16), on the local fleet's machines: the demo bundle's `worker` service is marked
`bluegreen.when: in-service`; each machine's `bluegreen-agent watch` (its own unit, baked and enabled) runs it only
while the instance is InService. Through a deploy and a rollback, once each step settles, exactly one colour's
workers run (an ordering assertion: each wait has a deadline, no time is asserted)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from localcloud.fleet.load import LoadGenerator
from localcloud.machines import MachineError, run_in
from tests.e2e.conftest import started_fleet
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    yield from started_fleet(tmp_path_factory, "--worker")


def worker_states(fleet) -> dict:
    """{instance id: the worker container's docker status word, or None} for every running machine."""
    out = {}
    for item in fleet.running_instances():
        try:
            ps = run_in(item["pid"], "docker", "ps", "-a", "--filter", "label=com.docker.compose.service=worker",
                        "--format", "{{.State}}")
        except (MachineError, OSError, KeyError, TypeError):
            continue  # powered off between the two reads
        out[item["instance_id"]] = ps.stdout.strip() or None
    return out


def instances(status, color):
    return [i["id"] for i in status["groups"][color]["instances"]]


def only_this_colour_works(fleet, color):
    """The wait's predicate: the colour's instances' workers all run, every other machine's are stopped, and
    the agent's tag says the same in `bluegreen status`."""
    def settled():
        status = fleet.status()
        working = set(instances(status, color))
        states = worker_states(fleet)
        if not working or not working <= set(states):
            return None
        if any(states[i] != "running" for i in working):
            return None
        if any(state == "running" for i, state in states.items() if i not in working):
            return None
        tags = {i["id"]: i.get("workers") for g in status["groups"].values() for i in g["instances"]}
        if any(tags.get(i) != "running" for i in working):
            return None
        return status, states
    return wait_until(settled, f"only {color}'s workers to run", deadline_s=120.0, interval=1.0)


def consumers_since(fleet, since: float) -> set:
    """Who took messages from the fleet's shared work queue since `since` (localcloud/fleet/queue.py)."""
    url = fleet.localcloud_status()["state"]["queue_url"]
    with urllib.request.urlopen(url + "/log", timeout=10) as resp:
        return {r["who"] for r in json.loads(resp.read()) if r["at"] >= since}


def only_they_consume(fleet, ids) -> set:
    """Once a step settled: over 3 s, the shared queue is consumed, and only by `ids`."""
    since = time.time()
    time.sleep(3.0)
    who = consumers_since(fleet, since)
    assert who and who <= set(ids), (who, ids)
    return who


def took_after(fleet, since: float, ids) -> list:
    """Messages taken from the shared queue after `since` by any of `ids`."""
    url = fleet.localcloud_status()["state"]["queue_url"]
    with urllib.request.urlopen(url + "/log", timeout=10) as resp:
        return [r for r in json.loads(resp.read()) if r["at"] > since and r["who"] in set(ids)]


def test_workers_run_only_on_the_in_service_colour_through_deploy_and_rollback(fleet):
    status, _ = only_this_colour_works(fleet, "blue")  # after `up`: blue InService, its workers started
    blue = instances(status, "blue")
    only_they_consume(fleet, blue)
    load = LoadGenerator(fleet.lb_url, rate=20, max_seconds=300).start()
    try:
        out = fleet.bluegreen("deploy", "demo", "2.0")
        returned = time.time()
        assert out.returncode == 0, out.stderr[-2000:]
        # The flip's end state (the deployer's wait-workers-stopped): when the deploy returns, every old
        # instance's agent has stopped its workers and said so; none takes a message after that moment.
        assert {i: fleet_tag(fleet, i) for i in blue} == dict.fromkeys(blue, "stopped")
        assert "wait-workers-stopped: the workers of 3 instances of demo-blue are stopped" in out.stderr
        status, states = only_this_colour_works(fleet, "green")
        green = instances(status, "green")
        only_they_consume(fleet, green)  # the old fleet, in Standby, consumes nothing
        assert not took_after(fleet, returned, blue)
        # The old fleet keeps running in Standby, its web still serving nothing, its workers stopped, not removed.
        assert set(blue) <= set(states) and all(states[i] in ("exited", "created") for i in blue), states

        out = fleet.bluegreen("rollback", "demo")
        returned = time.time()
        assert out.returncode == 0, out.stderr[-2000:]
        # Rollback's end state: the old fleet's workers run again (wait-workers-running), the new fleet is gone.
        assert {i: fleet_tag(fleet, i) for i in blue} == dict.fromkeys(blue, "running")
        status, _ = only_this_colour_works(fleet, "blue")
        assert set(instances(status, "blue")) == set(blue)
        only_they_consume(fleet, blue)
        assert not took_after(fleet, returned, green)
    finally:
        result = load.stop()
    # Under load through HAProxy the whole time: no request lost by either flip.
    assert result.total > 100 and not result.failures, result.summary()


def test_a_watch_survives_an_imds_outage_its_own_restart_and_token_expiry(fleet):
    """On one InService machine of the live fleet: its IMDS down for 15 s while its watch is SIGKILLed and
    restarted by systemd (the worker keeps running, the same container start: I3, no flapping); then its IMDS
    tokens expired and the instance put in Standby by hand (the watch fetches a new token and stops the worker,
    I1); back to InService (started again); a restart of the watch while InService leaves the worker alone."""
    import boto3

    status, _ = only_this_colour_works(fleet, fleet.status()["live"])
    live = status["live"]
    group = status["groups"][live]["name"]
    target = instances(status, live)[0]
    pid = next(i["pid"] for i in fleet.running_instances() if i["instance_id"] == target)
    asg = boto3.client("autoscaling", endpoint_url=fleet.env["AWS_ENDPOINT_URL"],
                       region_name=fleet.env["AWS_DEFAULT_REGION"], aws_access_key_id="testing",
                       aws_secret_access_key="testing")

    def worker():
        ps = run_in(pid, "docker", "ps", "-a", "--filter", "label=com.docker.compose.service=worker",
                    "--format", "{{.State}} {{.ID}}")
        state, ident = ps.stdout.split()
        started = run_in(pid, "docker", "inspect", "-f", "{{.State.StartedAt}}", ident).stdout.strip()
        return state, started

    def unit(prop):
        return run_in(pid, "systemctl", "show", "-P", prop, "bluegreen-agent-watch.service").stdout.strip()

    running_since = worker()
    assert running_since[0] == "running"
    out = fleet.localcloud("imds-fault", target, "--fail-for", "15")
    assert out.returncode == 0, out.stderr
    outage_ends = time.time() + 15
    run_in(pid, "systemctl", "kill", "--signal=SIGKILL", "bluegreen-agent-watch.service")
    wait_until(lambda: unit("ActiveState") == "active" and unit("NRestarts") not in ("", "0"),
               "systemd to restart the killed watch", deadline_s=30.0, interval=0.5)
    time.sleep(max(0.0, outage_ends - time.time()))  # the restarted watch meets IMDS down: the worker stays
    assert worker() == running_since
    journal = run_in(pid, "journalctl", "-u", "bluegreen-agent-watch.service", "--no-pager", "-o", "cat").stdout
    assert "IMDS did not give the target lifecycle state" in journal, journal[-2000:]

    out = fleet.localcloud("imds-fault", target, "--expire-tokens")
    assert out.returncode == 0, out.stderr
    min_size = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["MinSize"]
    asg.update_auto_scaling_group(AutoScalingGroupName=group, MinSize=0)  # A1: Standby with decrement needs room
    asg.enter_standby(AutoScalingGroupName=group, InstanceIds=[target], ShouldDecrementDesiredCapacity=True)
    wait_until(lambda: worker()[0] == "exited" and fleet_tag(fleet, target) == "stopped",
               "the Standby instance's worker stopped, with a new token", deadline_s=60.0, interval=1.0)

    asg.exit_standby(AutoScalingGroupName=group, InstanceIds=[target])
    asg.update_auto_scaling_group(AutoScalingGroupName=group, MinSize=min_size)
    wait_until(lambda: worker()[0] == "running" and fleet_tag(fleet, target) == "running",
               "the worker running again once InService", deadline_s=60.0, interval=1.0)
    running_since = worker()
    run_in(pid, "systemctl", "restart", "bluegreen-agent-watch.service")
    time.sleep(8)  # more than one watch interval (5 s) after the restart
    assert worker() == running_since


def fleet_tag(fleet, instance_id):
    status = fleet.status()
    for group in status["groups"].values():
        for inst in group["instances"]:
            if inst["id"] == instance_id:
                return inst.get("workers")
    return None
