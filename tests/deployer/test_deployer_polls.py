"""What a wait's poll reads (issue 13: at N = 1,000 a poll of the pair describes 2,000 instances). A wait whose
verdict reads one group describes that group alone, by name, while the state store's lock.json is the record; every
poll still reads lock.json, so a takeover stops the wait at its next poll. The gate, the launch wait's first poll
and a pair without a state store still read the pair. In process, on the fake clock, against the emulator."""

import json

from deployer.store import LOCK
from tests.deployer.test_deployer_finalize import without_store
from tests.helpers import expect_exit

BUCKET, STATE = "bluegreen-bootstrap", "demo/.bluegreen/demo/"
PAIR = "pair"  # a DescribeAutoScalingGroups of the service's tag filter: both groups


def flipped(make_harness, n=3):
    fleet = make_harness(capacity=n)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", n, "2.0")
    return fleet


def run(fleet, *argv, meanwhile=None):
    """`bluegreen ARGV`, with what it asked: ("step", name) as each step begins, then the calls made under it."""
    with fleet.requests() as asked:
        def mark(step):
            asked.append(("step", step.name))
            if meanwhile is not None:
                meanwhile(step)

        out = fleet.bluegreen(*argv, meanwhile=mark)
    return out, asked


def group_reads(asked):
    """{step name: what each DescribeAutoScalingGroups made under it asked for: the group names, or PAIR}. Under a
    wait step come its polls, then the observation of the round after it."""
    out, step = {}, None
    for what, params in asked:
        if what == "step":
            step = params
        elif what.endswith(".DescribeAutoScalingGroups"):
            out.setdefault(step, []).append(",".join(params.get("AutoScalingGroupNames", ())) or PAIR)
    return out


def polls(reads, step):
    """The reads of `step`'s polls: without the round's observation after it (and, after a command's last step,
    the final status read)."""
    out = list(reads[step])
    assert out[-1] == PAIR, out
    while out and out[-1] == PAIR:
        out.pop()
    return out


def test_each_rollback_wait_describes_the_group_it_watches_alone(make_harness):
    fleet = flipped(make_harness)
    out, asked = run(fleet, "rollback", "demo")
    expect_exit(out, 0)
    fleet.assert_serving_only("blue", 3, "1.0")
    reads = group_reads(asked)
    # The old fleet's health floor (5 s x 2) takes several polls at a 5 s interval: each names demo-blue alone.
    assert len(polls(reads, "wait-restored")) >= 2 and set(polls(reads, "wait-restored")) == {"demo-blue"}
    for step in ("wait-new-out", "wait-new-empty"):
        assert polls(reads, step) and set(polls(reads, step)) == {"demo-green"}, (step, reads[step])
    # The workers wait is a gate: its polls only, no round's observation after it (the unlock follows at once).
    assert set(reads["wait-workers-running"]) == {"demo-blue"}, reads["wait-workers-running"]
    # Every round's observation is still the pair's: the planner decides from both groups.
    waits = {"wait-restored", "wait-new-out", "wait-new-empty", "wait-workers-running"}
    assert all(set(r) == {PAIR} for step, r in reads.items() if step not in waits), reads
    # Each one-group poll reads lock.json right after the group: the lock check a takeover is noticed by.
    reads_and_locks = [params.get("AutoScalingGroupNames", PAIR) if what.endswith(".DescribeAutoScalingGroups")
                       else params["Key"] for what, params in asked if what.endswith(".DescribeAutoScalingGroups")
                       or what == "s3.GetObject"]
    named = [n for n, read in enumerate(reads_and_locks) if isinstance(read, list)]
    assert named and all(reads_and_locks[n + 1] == STATE + LOCK for n in named)

    # Without a state store the groups' tags are the record: every poll reads the pair, as before.
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")
    without_store(fleet)
    out, asked = run(fleet, "rollback", "demo")
    expect_exit(out, 0)
    reads = group_reads(asked)
    assert len(reads["wait-restored"]) >= 3 and all(set(r) == {PAIR} for r in reads.values()), reads


def test_a_deploy_polls_the_new_group_alone_after_its_first_poll_and_the_gate_reads_the_pair(make_harness):
    fleet = make_harness(capacity=3)
    out, asked = run(fleet, "deploy", "demo", "2.0")
    expect_exit(out, 0)
    fleet.assert_flipped("green", 3, "2.0")
    reads = group_reads(asked)
    # The first poll also asks whether the live fleet publishes bluegreen:running (its instances' tags).
    launch = polls(reads, "wait-new-healthy")
    assert launch[0] == PAIR and len(launch) >= 2 and set(launch[1:]) == {"demo-green"}, launch
    # The gate counts the new healthy instances per zone the old fleet serves: the pair on every poll.
    assert set(reads["recheck-new-healthy"]) == {PAIR}
    # The drain wait is a gate now, followed by the workers wait (issue 16): their polls name demo-blue alone.
    assert set(reads["wait-deregistered"]) == {"demo-blue"}
    assert set(polls(reads, "wait-workers-stopped")) == {"demo-blue"}


def test_a_one_group_poll_still_notices_a_takeover_at_once(make_harness):
    fleet = make_harness(capacity=2)
    s3 = fleet.session.client("s3")
    taken = []

    def take_over():  # another holder writes the record while the launch wait polls demo-green alone
        reads = group_reads(fleet.asked or [])
        if not taken and reads.get("wait-new-healthy", [])[-1:] == ["demo-green"]:
            doc = json.loads(s3.get_object(Bucket=BUCKET, Key=STATE + LOCK)["Body"].read())
            doc["holder"] = "ci@another-host:77"
            doc["operation"] = dict(doc["operation"], action="rollback")
            s3.put_object(Bucket=BUCKET, Key=STATE + LOCK, Body=json.dumps(doc).encode())
            taken.append(len(reads["wait-new-healthy"]))

    fleet.agents.append(take_over)
    out, asked = run(fleet, "deploy", "demo", "2.0")
    fleet.agents.remove(take_over)
    expect_exit(out, 3, "was taken over by rollback by ci@another-host:77")
    assert taken, "the takeover never happened: the test proves nothing"
    # Stopped by the very next poll, which read demo-green alone and lock.json.
    assert group_reads(asked)["wait-new-healthy"] == group_reads(asked)["wait-new-healthy"][:taken[0]] + ["demo-green"]
    assert fleet.lifecycles("blue") and set(fleet.lifecycles("blue").values()) == {"InService"}


def test_a_group_detached_from_its_target_group_mid_wait_is_refused_as_any_observation_would(make_harness):
    # E4: a group attached to no load balancer would pass every health verdict. A one-group poll that finds the
    # group's load balancers changed reads the pair, which refuses it.
    fleet = flipped(make_harness)
    detached = []

    def detach(step=None):
        reads = group_reads(fleet.asked or [])
        if not detached and reads.get("wait-restored", [])[-1:] == ["demo-blue"]:
            fleet.asg.detach_load_balancer_target_groups(AutoScalingGroupName="demo-blue",
                                                         TargetGroupARNs=[fleet.svc["target_group_arn"]])
            detached.append(True)

    fleet.agents.append(detach)
    out, asked = run(fleet, "rollback", "demo")
    fleet.agents.remove(detach)
    assert detached, "never detached: the test proves nothing"
    expect_exit(out, 2, "are not attached to the same target groups")
    reads = group_reads(asked)["wait-restored"]
    assert reads[-2:] == ["demo-blue", PAIR], reads


def test_dry_run_shows_a_one_group_wait_describing_its_group_by_name(make_harness):
    fleet = make_harness(capacity=3)
    plan = json.loads(fleet.bluegreen("deploy", "demo", "2.0", "--dry-run", "--output", "json").stdout)["plan"]
    calls = {s["name"]: s["calls"] for s in plan}
    assert calls["wait-new-healthy"][0] == {"op": "DescribeAutoScalingGroups",
                                            "params": {"AutoScalingGroupNames": ["demo-green"]}}
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")
    plan = json.loads(fleet.bluegreen("rollback", "demo", "--dry-run", "--output", "json").stdout)["plan"]
    calls = {s["name"]: s["calls"] for s in plan}
    assert calls["wait-restored"][0] == {"op": "DescribeAutoScalingGroups",
                                         "params": {"AutoScalingGroupNames": ["demo-blue"]}}, calls["wait-restored"]
