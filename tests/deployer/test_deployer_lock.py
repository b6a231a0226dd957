"""The lock and the state store (deployer/store.py): compare-and-set in S3 (X2), the lease, state that an IaC
apply cannot wipe (X3), rollback from facts, and the journal."""

import json
import re
import subprocess
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from deployer.errors import ConflictError
from deployer.store import LOCK, StateStore
from tests.deployer.fleet import BLUEGREEN, FAST, REPO, run_bluegreen
from tests.helpers import expect_exit, wait_until

BUCKET = "bluegreen-bootstrap"
STATE = "demo/.bluegreen/demo/"  # the default: beside the bundle of the groups' bluegreen:bootstrap tag


def store(me, lease_s=180.0, clock=time.monotonic):
    return StateStore(boto3.client("s3"), BUCKET, STATE, "demo", me, clock, lease_s=lease_s)


def lock_doc(fleet):
    return json.loads(fleet.session.client("s3").get_object(Bucket=BUCKET, Key=STATE + LOCK)["Body"].read())


def wipe_tags(fleet):
    """What a Terraform apply does to tags it does not manage (X3)."""
    for color in ("blue", "green"):
        keys = [k for k in fleet.tags(color) if k in ("bluegreen:operation", "bluegreen:saved-sizes",
                                                       "bluegreen:saved-suspended")]
        if keys:
            fleet.asg.delete_tags(Tags=[{"ResourceId": fleet.svc["groups"][color], "ResourceType":
                                         "auto-scaling-group", "Key": k} for k in keys])


# -- the mechanism -----------------------------------------------------------------------------------------


def test_x2_two_takers_at_the_same_instant_exactly_one_wins_every_time(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    op = {"action": "deploy", "phase": "launch", "version": "2.0", "live": "blue", "started": "t"}
    for round_ in range(25):
        stores = [store(f"ci@host-{n}:{round_}") for n in range(2)]
        results = race(stores, stores[0].read(), op)
        assert results.count("won") == 1, (round_, results)
        assert "was taken by deploy 2.0 by ci@host-" in next(r for r in results if r != "won")
        winner = next(s for s in stores if s.lease.etag)
        winner.write(None, saved={}, phases=[])  # released: the next round starts from a released lock


def race(stores, base, op):
    """Every store tries to take the lock from `base` at the same instant; "won" or the refusal, each."""
    results = []
    barrier = threading.Barrier(len(stores))

    def take(s):
        barrier.wait()
        try:
            s.acquire(base, op, {}, [])
            results.append("won")
        except ConflictError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=take, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_a_displaced_holder_learns_it_at_its_next_change_and_stops(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    deploy, rollback = store("ci@host:1"), store("ci@host:2")
    deploy.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])
    rollback.acquire(rollback.read(), {"action": "rollback", "phase": "restore", "live": "blue", "started": "u"},
                     {}, [])
    with pytest.raises(ConflictError, match="was taken by rollback by ci@host:2"):
        deploy.renew()  # the runner renews before every step that changes anything: fencing
    assert rollback.read().holder == "ci@host:2"


def test_x2_a_lost_response_is_not_a_lost_lock(aws):
    """The write landed but its answer was lost; botocore's retry then meets 412. Our nonce says it was ours."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    mine = store("ci@host:1")
    mine.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])
    real_put = mine.s3.put_object

    def lost(**params):
        real_put(**params)
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions "
                                     "you specified did not hold"}, "ResponseMetadata": {"HTTPStatusCode": 412}},
                          "PutObject")

    mine.s3.put_object = lost
    mine.write({"action": "deploy", "phase": "policies", "live": "blue", "started": "t"})
    mine.s3.put_object = real_put
    assert mine.read().operation["phase"] == "policies"
    mine.write({"action": "deploy", "phase": "flip", "live": "blue", "started": "t"})  # its etag is current
    other = store("ci@host:2")
    with pytest.raises(ConflictError, match="was taken by deploy"):
        other.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])


def test_x2_a_conflicting_write_in_flight_409_is_tried_again(aws):
    """The emulator answers the first conditional PutObject 409 ConditionalRequestConflict (its X2 fault)."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    mine = store("ci@host:1")
    answers = []
    mine.s3.meta.events.register("after-call.s3.PutObject",
                                 lambda http_response, **_: answers.append(http_response.status_code))
    aws.configure_faults(conditional_conflicts=1)
    mine.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])
    assert answers == [409, 200] and mine.read().holder == "ci@host:1"


def test_the_lease_runs_out_by_s3s_clock_not_the_local_one(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    skewed = store("ci@host:1", lease_s=1.0, clock=lambda: 10 ** 9)  # a holder whose local clock is far off
    skewed.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])
    reader = store("ci@host:2", lease_s=600.0)  # the reader's own setting does not matter: the holder's does
    assert reader.read().lease_live
    wait_until(lambda: not reader.read().lease_live, "the 1 s lease to run out by S3's clock", deadline_s=8,
               interval=0.25)


# -- whole commands (in process, on the fake clock) --------------------------------------------------------


def test_deploy_rollback_and_finalize_keep_their_state_in_s3_and_journal_it(make_harness):
    fleet = make_harness(capacity=3)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--output", "json")
    expect_exit(out, 0)
    doc = lock_doc(fleet)
    assert doc["operation"]["phase"] == "flipped" and doc["saved"] == {"sizes": [3, 3, 6], "suspended": []}
    assert [p[0] for p in doc["phases"]] == ["launch", "policies", "flip", "flipped"]
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    assert lock_doc(fleet)["operation"] is None  # released, not deleted: the compare-and-set chain goes on
    fleet.assert_serving_only("blue", 3, "1.0")
    expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 0)
    out = fleet.bluegreen("finalize", "demo", "--output", "json")
    expect_exit(out, 0)
    summary = json.loads(out.stdout)
    assert summary["journal"].startswith(STATE + "journal/")
    history = json.loads(fleet.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert [(e["action"], e["result"], e["version"]) for e in history] == [
        ("finalize", "done", "3.0"), ("rollback", "done", "2.0")]
    assert history[1]["took_over"]["action"] == "deploy"
    assert [p["phase"] for p in history[0]["phases"]] == ["drain", "detach", "cleanup"]
    assert all(p["duration_s"] >= 0 for p in history[0]["phases"])
    text = fleet.bluegreen("history", "demo", "--limit", "1").stdout
    assert "finalize" in text and "rollback" not in text


def test_an_aborted_deploy_is_journaled_as_aborted(make_harness, aws):
    from tests.deployer.fleet import unhealthy_launches
    fleet = make_harness(capacity=2)
    with unhealthy_launches(aws, "demo-green"):
        expect_exit(fleet.bluegreen("deploy", "demo", "3.0"), 1, "aborted")
    history = json.loads(fleet.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert [(e["action"], e["result"]) for e in history] == [("deploy", "aborted")]


def test_tags_wiped_by_an_apply_between_deploy_and_finalize_finalize_finalizes(make_harness):
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    wipe_tags(fleet)
    status = json.loads(fleet.bluegreen("status", "demo", "--output", "json").stdout)
    assert status["operation"]["phase"] == "flipped" and "the store wins" in status["drift"]
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    fleet.assert_serving_only("green", 3, "2.0")
    assert fleet.group("blue")["SuspendedProcesses"] == []


def test_tags_wiped_by_an_apply_between_deploy_and_finalize_rollback_restores(make_harness):
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    wipe_tags(fleet)
    with fleet.health_floor() as floor:
        expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    assert floor.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.sizes("blue") == (3, 3, 6)  # the saved sizes came from S3


def test_s3_state_and_tags_both_lost_mid_flip_rollback_restores_from_facts(make_harness):
    fleet = make_harness(capacity=3)
    original = set(fleet.lifecycles("blue"))
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.session.client("s3").delete_object(Bucket=BUCKET, Key=STATE + LOCK)
    wipe_tags(fleet)
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert "roll back from facts, 3 instances of demo-blue in Standby" in out.stderr
    fleet.assert_serving_only("blue", 3, "1.0")
    assert set(fleet.lifecycles("blue")) == original


def test_s3_state_lost_but_tags_kept_rollback_uses_the_mirror(make_harness):
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.session.client("s3").delete_object(Bucket=BUCKET, Key=STATE + LOCK)
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.sizes("blue") == (3, 3, 6)  # the saved sizes came from the tags


def test_a_record_of_the_previous_version_is_read_and_migrated_into_the_store(make_harness):
    """The previous version kept the record in the tags only; a command of this one continues from it and
    writes it to the store."""
    fleet = make_harness(capacity=3)
    old = "action=deploy;phase=launch;version=2.0;live=blue;started=2026-11-30T10:00:00Z;holder=ci@old-builder:7"
    for color in ("blue", "green"):
        fleet.asg.create_or_update_tags(Tags=[{"ResourceId": fleet.svc["groups"][color], "ResourceType":
                                               "auto-scaling-group", "Key": "bluegreen:operation", "Value": old,
                                               "PropagateAtLaunch": False}])
    fleet.asg.create_or_update_tags(Tags=[{"ResourceId": "demo-blue", "ResourceType": "auto-scaling-group",
                                           "Key": k, "Value": v, "PropagateAtLaunch": False}
                                          for k, v in (("bluegreen:saved-sizes", "3/3/6"),
                                                       ("bluegreen:saved-suspended", "none"))])
    fleet.alive.add("ci@old-builder:7")  # on another host: whether it still runs cannot be told from here
    refused = fleet.bluegreen("deploy", "demo", "2.0")  # and no lease to judge it by
    expect_exit(refused, 3, "is running now in ci@old-builder:7")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--force-unlock"), 0)
    doc = lock_doc(fleet)
    assert doc["operation"]["phase"] == "flipped" and doc["operation"]["started"] == "2026-11-30T10:00:00Z"
    assert doc["saved"]["sizes"] == [3, 3, 6]
    fleet.assert_flipped("green", 3, "2.0")


def test_a_holder_on_another_host_killed_mid_wait_is_taken_over_once_its_lease_ran_out(make_harness):
    fleet = make_harness(capacity=2)
    killed = fleet.bluegreen("deploy", "demo", "2.0", crash_at="mark-flip", me="ci@builder-7:41",
                             env={"BLUEGREEN_LEASE": "1"})
    expect_exit(killed, -9)
    fleet.alive.add("ci@builder-7:41")  # on another host: whether it still runs cannot be told from here...
    # ...but its lease is live by S3's clock, so it is taken to run.
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 3, "is running now in ci@builder-7:41")
    store_view = store("reader")
    wait_until(lambda: not store_view.read().lease_live, "the killed holder's lease to run out", deadline_s=8,
               interval=0.25)
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert "take over the lock" in out.stderr
    fleet.assert_flipped("green", 2, "2.0")


def test_a_rollback_that_took_over_a_running_deploy_undoes_its_late_call_before_it_unlocks(make_harness):
    """The displaced deploy was in the middle of a resize: its call may land after the rollback took the lock.
    The rollback re-checks its end state once that call can have landed (store.MAX_CALL_S) and undoes it."""
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at="mark-flip", me="ci@runner:1"), -9)
    fleet.alive.add("ci@runner:1")  # it still runs: stuck in a slow call
    landed = []

    def late_resize():  # the displaced deploy's UpdateAutoScalingGroup, landing after green was emptied
        if not landed and fleet.sizes("green") == (0, 0, 0) and "rollback" in lock_doc(fleet)["operation"]["action"]:
            fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-green", MinSize=3, DesiredCapacity=3,
                                                MaxSize=6)
            landed.append(fleet.clock.now())

    fleet.agents.append(late_resize)
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert landed, "the late call never landed: the test proves nothing"
    assert re.search(r"waiting \d+s for any call of the displaced holder to land", out.stderr), out.stderr
    fleet.assert_serving_only("blue", 3, "1.0")
    history = json.loads(fleet.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert history[0]["took_over"] == {"action": "deploy", "version": "2.0", "holder": "ci@runner:1",
                                       "lease_live": True}


# -- real processes at the same instant ----------------------------------------------------------------------


def test_two_deploys_started_together_exactly_one_proceeds_every_time(make_fleet):
    fleet = make_fleet(capacity=1)
    for round_ in range(4):
        version = f"2.{round_}"
        procs = [subprocess.Popen([BLUEGREEN, "deploy", "demo", version], env=dict(__import__("os").environ, **FAST),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 3], (round_, [err[-600:] for _, err in results])
        loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 3)
        assert "bluegreen: error:" in loser
        live = "green" if round_ % 2 == 0 else "blue"
        fleet.assert_flipped(live, 1, version)
        expect_exit(run_bluegreen("finalize", "demo"), 0)
        fleet.assert_serving_only(live, 1, version)
