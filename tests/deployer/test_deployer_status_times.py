"""`bluegreen status` during an open flip (issue 13): the expected times of a rollback started now, from the pair's
own load balancer settings and what the old instances still drain; nothing at rest."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from deployer import preflight
from tests.deployer.preflight_support import lock_objects
from tests.helpers import expect_exit


def status(fleet):
    out = fleet.bluegreen("status", "demo", "--output", "json")
    expect_exit(out, 0)
    return json.loads(out.stdout)


def rollback_lines(fleet):
    out = fleet.bluegreen("status", "demo")
    expect_exit(out, 0)
    return [line for line in out.stdout.splitlines() if line.startswith("rollback now:")]


def flip_stamp(fleet):
    """The recorded deploy's phase `flip` stamp, from the state store's lock.json."""
    [key] = [k for k in lock_objects(fleet) if k.endswith("/lock.json")]
    doc = json.loads(fleet.session.client("s3").get_object(Bucket="bluegreen-bootstrap", Key=key)["Body"].read())
    return dict(doc["phases"])["flip"]


def test_status_at_rest_states_no_rollback(make_harness):
    fleet = make_harness(capacity=1)
    assert status(fleet)["rollback_now"] is None
    assert rollback_lines(fleet) == []


def test_status_during_the_drain_counts_what_is_left_from_the_recorded_flip(make_harness):
    # 5 s x 2 health checks, a 300 s delay: right after the deploy the old instances still drain (EnteringStandby).
    fleet = make_harness(capacity=2, deregistration_delay=300)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert set(fleet.lifecycles("blue").values()) == {"EnteringStandby"}
    at = flip_stamp(fleet)
    flipped = datetime.fromisoformat(at.replace("Z", "+00:00"))
    fleet.now = lambda: flipped + timedelta(seconds=100)  # status asked 100 s after the flip
    times = status(fleet)["rollback_now"]
    # restored: registered directly while draining (no ExitStandby) + 10 s health run + 5 s poll;
    # settled: restored + the new group's 300 s drain + a poll; the old instances drain 200 s more.
    assert times["restored"] == {"exit_standby_s": 0, "health_run_s": 10, "poll_s": 5.0}
    assert (times["restored_s"], times["settled_s"]) == (15, 320)
    assert times["settled"]["old_drain_left_s"] == 200
    assert times["flip_at"] == at and times["drain_left_bound"] is False
    restored, settled = rollback_lines(fleet)
    assert restored == ("rollback now: restored in 15 s = ExitStandby 0 s (instances still draining are registered "
                        "directly; 5 s once in Standby) + health run 10 s + poll 5 s")
    assert settled == ("rollback now: settled in 320 s = restored 15 s + drain 300 s (the new group's instances drain "
                       f"before they terminate) + poll 5 s; the old instances finish draining after 200 s (the flip "
                       f"at {at})")
    # A status machine whose clock runs behind the deploying one's: what is left never exceeds the delay.
    fleet.now = lambda: flipped - timedelta(seconds=30)
    assert status(fleet)["rollback_now"]["settled"]["old_drain_left_s"] == 300
    # Once they are in Standby, a rollback returns them with ExitStandby: its Pending counts, the drain does not.
    fleet.wait_for(lambda: set(fleet.lifecycles("blue").values()) == {"Standby"}, "blue in Standby")
    times = status(fleet)["rollback_now"]
    assert times["restored"]["exit_standby_s"] == preflight.EXIT_STANDBY_S
    assert times["restored_s"] == preflight.EXIT_STANDBY_S + 10 + 5
    assert times["settled"]["old_drain_left_s"] == 0


def test_status_without_the_flip_time_takes_the_whole_delay_as_an_upper_bound(make_harness):
    # A finalize killed while it waits for the drain: its record does not carry the deploy's flip, and the old
    # instances still drain, so what is left can only be bounded by the whole delay.
    fleet = make_harness(capacity=1, health_interval=30, healthy_threshold=5, deregistration_delay=300)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert fleet.bluegreen("finalize", "demo", crash_at="wait-drained").returncode == -9
    data = status(fleet)
    assert data["operation"]["action"] == "finalize" and data["operation"]["phase"] == "drain"
    times = data["rollback_now"]
    assert times["drain_left_bound"] is True and times["flip_at"] is None
    assert times["settled"]["old_drain_left_s"] == 300
    assert (times["restored_s"], times["settled_s"]) == (155, 460)
    _, settled = rollback_lines(fleet)
    assert settled.endswith("the old instances finish draining after 300 s (the flip's time is not recorded: the "
                            "whole delay, an upper bound)")
