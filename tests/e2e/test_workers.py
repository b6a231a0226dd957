"""Standby means "no work" (issue 16), on the local fleet's machines: the demo bundle's `worker` service is marked
`bluegreen.when: in-service`; each machine's `bluegreen-agent watch` (its own unit, baked and enabled) runs it only
while the instance is InService. Through a deploy and a rollback, once each step settles, exactly one colour's
workers run (an ordering assertion: each wait has a deadline, no time is asserted)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

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


def test_workers_run_only_on_the_in_service_colour_through_deploy_and_rollback(fleet):
    status, _ = only_this_colour_works(fleet, "blue")  # after `up`: blue InService, its workers started
    blue = instances(status, "blue")
    only_they_consume(fleet, blue)

    out = fleet.bluegreen("deploy", "demo", "2.0")
    assert out.returncode == 0, out.stderr[-2000:]
    status, states = only_this_colour_works(fleet, "green")
    only_they_consume(fleet, instances(status, "green"))  # the old fleet, in Standby, consumes nothing
    # The old fleet keeps running in Standby, its web still serving nothing, its workers stopped, not removed.
    assert set(blue) <= set(states) and all(states[i] in ("exited", "created") for i in blue), states
    tags = {i["id"]: i.get("workers") for i in status["groups"]["blue"]["instances"]}
    wait_until(lambda: all(fleet_tag(fleet, i) == "stopped" for i in blue), "the old fleet's tags to say stopped",
               deadline_s=60.0, interval=1.0)

    out = fleet.bluegreen("rollback", "demo")
    assert out.returncode == 0, out.stderr[-2000:]
    status, _ = only_this_colour_works(fleet, "blue")
    assert set(instances(status, "blue")) == set(blue), tags
    only_they_consume(fleet, blue)


def fleet_tag(fleet, instance_id):
    status = fleet.status()
    for group in status["groups"].values():
        for inst in group["instances"]:
            if inst["id"] == instance_id:
                return inst.get("workers")
    return None
