"""The lock and the state store (deployer/store.py): compare-and-set in S3 (X2), the lease, state that an IaC
apply cannot wipe (X3), rollback from facts, and the journal."""

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import boto3
import pytest
from botocore.exceptions import ClientError

from deployer.errors import ConflictError
from deployer.store import LOCK, StateStore
from tests.deployer.fleet import FAST, REPO, run_bluegreen
from tests.deployer.harness import Killed
from tests.helpers import expect_exit

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


def test_the_lease_is_judged_by_s3s_clock_never_the_local_one(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    holder = store("ci@host:1", clock=lambda: 10 ** 9)  # a holder whose local clock is far off
    holder.acquire(None, {"action": "deploy", "phase": "launch", "live": "blue", "started": "t"}, {}, [])
    # A reader whose own clock is years off still sees the lease live: only S3's headers count.
    assert store("ci@host:2", clock=lambda: 0.0).read().lease_live
    # A reader whose S3 answers an hour later (its Date header) sees it run out: the holder's lease_s (180 s), not
    # the reader's own setting, against Last-Modified.
    later = store("ci@host:3", lease_s=10 ** 6)

    def an_hour_later(parsed=None, **_):
        headers = parsed["ResponseMetadata"]["HTTPHeaders"]
        headers["date"] = format_datetime(parsedate_to_datetime(headers["date"]) + timedelta(hours=1), usegmt=True)

    later.s3.meta.events.register("after-call.s3.GetObject", an_hour_later)
    assert not later.read().lease_live
    holder.park()
    assert not store("ci@host:2").read().lease_live  # parked: nobody holds it


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
        ("finalize", "finalized", "3.0"), ("rollback", "rolled-back", "2.0")]
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
    status = fleet.bluegreen("status", "demo")
    assert "warning: no operation is recorded, but 3 instances of demo-blue are in Standby: `bluegreen rollback " \
        "demo` returns them to service" in status.stdout
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
    polls = []

    def kill_on_the_third_poll():  # kill -9 in the middle of the launch wait, between two polls
        polls.append(fleet.clock.now())
        if len(polls) == 3:
            raise Killed("mid-wait")

    fleet.agents.append(kill_on_the_third_poll)
    killed = fleet.bluegreen("deploy", "demo", "2.0", me="ci@builder-7:41")
    fleet.agents.remove(kill_on_the_third_poll)
    expect_exit(killed, -9)
    assert lock_doc(fleet)["operation"]["phase"] == "launch"
    fleet.alive.add("ci@builder-7:41")  # on another host: whether it still runs cannot be told from here...
    # ...but its lease is live by S3's clock, so it is taken to run.
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 3, "is running now in ci@builder-7:41")
    fleet.advance(200)  # S3's clock moves with the harness's: past the 180 s lease
    out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert "take over the lock" in out.stderr
    fleet.assert_flipped("green", 2, "2.0")


def displaced_deploy_lands_late(fleet, step, late_call):
    """A deploy that still runs (it looks alive) but stopped just before `step`, whose call of that step lands
    once the rollback that takes over has restored the old fleet (phase retire). Returns what landed."""
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", crash_at=step, me="ci@runner:1"), -9)
    fleet.alive.add("ci@runner:1")  # it still runs: its call is in flight
    landed = []

    def lands():
        op = lock_doc(fleet)["operation"]
        if not landed and op and op["action"] == "rollback" and op["phase"] == "retire":
            landed.append(late_call())

    fleet.agents.append(lands)
    return landed


def test_a_late_enter_standby_of_a_displaced_deploy_is_returned_before_the_new_group_is_emptied(make_harness):
    """The deploy was in the middle of its EnterStandby batch when the rollback took the lock; the call lands
    after the rollback restored the old fleet. The rollback holds back emptying the new group until that call can
    have landed, sees the old instances in Standby again, and returns them first: the service never goes dark."""
    fleet = make_harness(capacity=3)
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-blue", MinSize=0)  # so decrement is allowed
    landed = displaced_deploy_lands_late(fleet, "enter-standby", lambda: fleet.asg.enter_standby(
        AutoScalingGroupName="demo-blue", ShouldDecrementDesiredCapacity=True,
        InstanceIds=[i for i, life in fleet.lifecycles("blue").items() if life == "InService"]))
    with fleet.health_floor() as floor:
        out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert landed, "the late call never landed: the test proves nothing"
    assert len(landed[0]["Activities"]) == 3
    assert floor.minimum >= 3
    fleet.assert_serving_only("blue", 3, "1.0")


def test_a_late_min_size_change_of_a_displaced_deploy_is_undone_before_the_rollback_unlocks(make_harness):
    """The displaced deploy's `lower-min` (MinSize 0 on the old group) lands after the rollback restored the sizes:
    the rollback re-checks its end state once that call can have landed, and restores them again."""
    fleet = make_harness(capacity=3)
    landed = displaced_deploy_lands_late(fleet, "lower-min", lambda: fleet.asg.update_auto_scaling_group(
        AutoScalingGroupName="demo-blue", MinSize=0))
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert landed, "the late call never landed: the test proves nothing"
    assert "for any call of the displaced holder to land" in out.stderr
    fleet.assert_serving_only("blue", 3, "1.0")
    assert fleet.sizes("blue") == (3, 3, 6)
    history = json.loads(fleet.bluegreen("history", "demo", "--output", "json").stdout)["entries"]
    assert history[0]["took_over"] == {"action": "deploy", "version": "2.0", "holder": "ci@runner:1",
                                       "lease_live": True}


def test_a_command_that_stops_with_the_operation_open_parks_its_lease_so_a_rerun_resumes_at_once(make_harness, aws):
    fleet = make_harness(capacity=2)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    for instance_id in fleet.lifecycles("blue"):
        aws.set_target_health(instance_id, "unhealthy")  # the old fleet does not come back healthy
    stuck = fleet.bluegreen("rollback", "demo", "--timeout", "60", me="ci@builder-1:5")
    expect_exit(stuck, 1, "timed out after 60s")
    fleet.alive.add("ci@builder-1:5")  # another host: only its lease can say whether it runs, and it is parked
    assert lock_doc(fleet)["lease_s"] == 0
    for instance_id in fleet.lifecycles("blue"):
        aws.set_target_health(instance_id, None)
    expect_exit(fleet.bluegreen("rollback", "demo", me="ci@builder-2:6"), 0)
    fleet.assert_serving_only("blue", 2, "1.0")


def test_a_state_store_named_apart_from_the_groups_tag_is_refused(make_harness):
    fleet = make_harness(capacity=2)
    fleet.asg.create_or_update_tags(Tags=[{"ResourceId": g, "ResourceType": "auto-scaling-group",
                                           "Key": "bluegreen:state", "Value": "s3://bluegreen-bootstrap/state/",
                                           "PropagateAtLaunch": False} for g in ("demo-blue", "demo-green")])
    out = fleet.bluegreen("deploy", "demo", "2.0", env={"BLUEGREEN_STATE": "s3://bluegreen-bootstrap/mine/"})
    expect_exit(out, 2, "BLUEGREEN_STATE names s3://bluegreen-bootstrap/mine/, but the groups of demo name")
    assert "bluegreen:operation" not in fleet.tags("blue")
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", "--state", "s3://bluegreen-bootstrap/state"), 0)
    assert fleet.session.client("s3").get_object(Bucket=BUCKET, Key="state/demo/" + LOCK)


# -- real processes at the same instant ----------------------------------------------------------------------


def test_two_deploys_writing_the_lock_at_the_same_instant_exactly_one_proceeds_every_time(make_fleet, tmp_path):
    """Both processes observe the lock free and reach their lock write together (tests/deployer/racing.py): only
    the compare-and-set decides, every round."""
    fleet = make_fleet(capacity=1)
    env = dict(os.environ, **FAST)
    for round_ in range(4):
        version = f"2.{round_}"
        gate = tmp_path / f"round-{round_}"
        gate.mkdir()
        procs = [subprocess.Popen([sys.executable, "-m", "tests.deployer.racing", str(gate), "2", "deploy", "demo",
                                   version], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=REPO) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 3], (round_, [err[-600:] for _, err in results])
        loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 3)
        assert "was taken by deploy " + version in loser, loser[-600:]
        live = "green" if round_ % 2 == 0 else "blue"
        fleet.assert_flipped(live, 1, version)
        expect_exit(run_bluegreen("finalize", "demo"), 0)
        fleet.assert_serving_only(live, 1, version)


def test_a_deploy_and_a_rollback_writing_the_lock_at_the_same_instant_leave_the_fleet_consistent(make_fleet,
                                                                                                  tmp_path):
    """Over a serving canary both commands fit, so both reach their lock write (held there together by
    tests/deployer/racing.py): exactly one wins the compare-and-set; the other stops, and the fleet ends either
    flipped (then rolled back by hand) or rolled back, never in between."""
    fleet = make_fleet(capacity=2)
    env = dict(os.environ, **FAST)
    for round_ in range(2):
        expect_exit(run_bluegreen("canary", "demo", "2.0"), 0)
        gate = tmp_path / f"round-{round_}"
        gate.mkdir()
        commands = (["deploy", "demo", "2.0"], ["rollback", "demo"])
        procs = [subprocess.Popen([sys.executable, "-m", "tests.deployer.racing", str(gate), "2", *argv], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for argv in commands]
        results = [p.communicate(timeout=120) for p in procs]
        codes = {argv[0]: p.returncode for argv, p in zip(commands, procs)}
        assert sorted(codes.values()) == [0, 3], (round_, [err[-600:] for _, err in results])
        loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 3)
        assert "was taken by" in loser, loser[-600:]
        if codes["deploy"] == 0:
            fleet.assert_flipped("green", 2, "2.0")
            expect_exit(run_bluegreen("rollback", "demo"), 0)
        fleet.assert_serving_only("blue", 2, "1.0")
