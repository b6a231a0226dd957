"""Issue 16: the flip's end state includes the old fleet's marked services stopped, rollback's includes them
running again. In process on the fake clock, with each instance's `bluegreen-agent watch` stood in for by an
agent that writes the `bluegreen:workers` tag LAG AWS seconds after it first sees its instance's lifecycle state
(as the watch does: one interval to see the state from IMDS, then the graceful stop, then CreateTags).

The deployer reads the tags the agent writes; it never sees the agent. A test that passes with the wait removed
would prove nothing, so each test first shows the tag was still wrong after the step the wait follows.
"""

from agent.contract import TAG_WORKERS, WORKERS_RUNNING, WORKERS_STOPPED
from deployer import health
from deployer.health import OK, WAIT, WaitFacts
from tests.deployer.deployer_fixtures import group_record, ids, snapshot
from tests.helpers import expect_exit

LAG = 40.0  # AWS seconds: longer than the harness's 5 s drain, so only the workers wait can cover it


class Watches:
    """The instances' watches: each writes the tag the state it saw LAG seconds ago calls for. `dead`: ids whose
    watch is not running (their tag stays what it was)."""

    def __init__(self, fleet, lag=LAG):
        self.fleet, self.lag, self.seen, self.dead, self.published = fleet, lag, {}, set(), {}

    def __call__(self):
        now = self.fleet.clock.now()
        for color in ("blue", "green"):
            for iid, life in self.fleet.lifecycles(color).items():
                want = WORKERS_RUNNING if life == "InService" else WORKERS_STOPPED
                since = self.seen.get(iid)
                if since is None or since[0] != want:
                    self.seen[iid] = (want, now)
                elif now - since[1] >= self.lag and iid not in self.dead and self.published.get(iid) != want:
                    # As agent/watch.py: what it published itself, never a read-back (X1 would keep it rewriting).
                    self.fleet.ec2.create_tags(Resources=[iid], Tags=[{"Key": TAG_WORKERS, "Value": want}])
                    self.published[iid] = want

    def tag(self, iid):
        tags = self.fleet.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]},
                                                     {"Name": "key", "Values": [TAG_WORKERS]}])["Tags"]
        return tags[0]["Value"] if tags else None

    def tags(self, color):
        return {iid: self.tag(iid) for iid in self.fleet.lifecycles(color)}


def with_watches(fleet, lag=LAG):
    watches = Watches(fleet, lag)
    for iid in fleet.lifecycles("blue"):
        fleet.ec2.create_tags(Resources=[iid], Tags=[{"Key": TAG_WORKERS, "Value": WORKERS_RUNNING}])
        watches.published[iid] = WORKERS_RUNNING
    fleet.agents.append(watches)
    return watches


def test_a_deploy_ends_once_the_old_fleets_workers_have_stopped(make_harness):
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    at_drained = {}

    def meanwhile(step):
        if step.name == "wait-workers-stopped":
            at_drained.update(watches.tags("blue"))

    expect_exit(fleet.bluegreen("deploy", "demo", "2.0", meanwhile=meanwhile), 0)
    # Drained out of the load balancer, the old workers still ran: without the wait the deploy would end here.
    assert set(at_drained.values()) == {WORKERS_RUNNING}, at_drained
    # When the deploy has returned, every old instance's workers have stopped (the fake clock stood still since).
    assert set(watches.tags("blue").values()) == {WORKERS_STOPPED}
    fleet.assert_flipped("green", 3, "2.0")


def test_a_rollback_ends_once_the_old_fleets_workers_run_again(make_harness):
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    assert set(watches.tags("blue").values()) == {WORKERS_STOPPED}
    at_gate = {}

    def meanwhile(step):
        if step.name == "wait-workers-running" and not at_gate:  # planned again in the round after `resume`
            at_gate.update(watches.tags("blue"))

    expect_exit(fleet.bluegreen("rollback", "demo", meanwhile=meanwhile), 0)
    fleet.assert_serving_only("blue", 3, "1.0")
    assert WORKERS_STOPPED in at_gate.values(), at_gate  # back InService, not yet working: the wait covers it
    assert set(watches.tags("blue").values()) == {WORKERS_RUNNING}


def test_a_watch_that_never_stops_its_workers_fails_the_deploy_with_its_instance_named_then_a_rerun_ends_it(
        make_harness):
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    stuck = min(fleet.lifecycles("blue"))
    watches.dead.add(stuck)
    out = fleet.bluegreen("deploy", "demo", "2.0", "--timeout", "120")
    expect_exit(out, 1)
    assert "wait-workers-stopped" in out.stderr and stuck in out.stderr and "bluegreen-agent-watch" in out.stderr, out.stderr
    # The traffic flipped (the new fleet serves, the old one is in Standby); the record stays for a rerun.
    assert "bluegreen:operation" in fleet.tags("blue")
    assert set(fleet.lifecycles("blue").values()) <= {"Standby", "EnteringStandby"}
    watches.dead.clear()
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")
    assert set(watches.tags("blue").values()) == {WORKERS_STOPPED}


def test_a_fleet_without_marked_services_is_not_waited_for(make_harness):
    fleet = make_harness(capacity=2)
    with fleet.requests() as asked:
        out = fleet.bluegreen("deploy", "demo", "2.0")
    expect_exit(out, 0)
    assert [p for what, p in asked if what == "ec2.DescribeTags"]  # read, answered with no tag: nothing to wait for
    assert "wait-workers-stopped: no instance of demo-blue runs marked services" in out.stderr
    fleet.assert_flipped("green", 2, "2.0")


# ---- the verdict, pure --------------------------------------------------------------------------------------


def test_the_workers_verdict_reads_only_instances_in_the_states_that_matter():
    blue = group_record("blue", (0, 0, 6), ids("s", 2, "Standby") + ids("e", 1, "EnteringStandby")
                        + ids("t", 1, "Terminating"))

    group = snapshot(blue, group_record("green", (3, 3, 6), ids("g", 3))).groups["blue"]
    s0, s1, e0, t0 = group.instances[0].id, group.instances[1].id, group.instances[2].id, group.instances[3].id
    stopped = {s0: WORKERS_STOPPED, s1: WORKERS_STOPPED, e0: WORKERS_STOPPED, t0: WORKERS_RUNNING}
    assert health.STOPPED_WORKERS(group, {}, facts=WaitFacts(workers=stopped))[0] == OK  # a leaving one: not read
    state, detail = health.STOPPED_WORKERS(group, {}, facts=WaitFacts(workers=dict(stopped, **{e0: WORKERS_RUNNING})))
    assert state == WAIT and e0 in detail and "bluegreen-agent-watch" in detail
    # A4: terminated in Standby, still listed by its group, its tag left as it was: not waited for.
    assert health.STOPPED_WORKERS(group, {}, facts=WaitFacts(workers=dict(stopped, **{s0: WORKERS_RUNNING}),
                                                             ec2_states={s0: "terminated"}))[0] == OK
    # No tag: no marked service (or an agent older than the tag).
    state, detail = health.STOPPED_WORKERS(group, {}, facts=WaitFacts(workers={}))
    assert state == OK and "no instance" in detail
    # Running wanted: only InService instances count, and Standby ones with `stopped` are not late.
    assert health.RUNNING_WORKERS(group, {}, facts=WaitFacts(workers=stopped))[0] == OK


def test_an_old_instance_back_in_service_during_the_drain_wait_is_moved_to_standby_again(make_harness):
    """The drain wait is a gate now: its REPLAN (an old instance InService again, A2) must still make the runner
    plan anew, not go on to the workers wait, which reads Standby instances only (review of issue 16)."""
    fleet = make_harness(capacity=3)
    with_watches(fleet)
    asg = fleet.session.client("autoscaling")
    back = []

    def meanwhile(step):
        if step.name == "wait-deregistered" and not back:
            fleet.wait_for(lambda: set(fleet.lifecycles("blue").values()) == {"Standby"}, "the old fleet in Standby")
            back.append(min(fleet.lifecycles("blue")))
            asg.exit_standby(AutoScalingGroupName="demo-blue", InstanceIds=back)
            fleet.wait_for(lambda: fleet.lifecycles("blue")[back[0]] == "InService", "one old instance back")

    out = fleet.bluegreen("deploy", "demo", "2.0", meanwhile=meanwhile)
    expect_exit(out, 0)
    assert back and f"{back[0]}" in out.stderr
    fleet.assert_flipped("green", 3, "2.0")
    assert set(fleet.lifecycles("blue").values()) == {"Standby"}, fleet.lifecycles("blue")


def test_a_rollback_whose_old_watch_never_reports_holds_only_the_lock_and_deleting_the_tag_lets_it_end(
        make_harness):
    """Rollback is the escape hatch: a watch that is down on one old instance must not keep the serving group's
    scaling suspended (review of issue 16). The wait is last before the unlock; its line says how to go on."""
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    stuck = min(fleet.lifecycles("blue"))
    watches.dead.add(stuck)
    out = fleet.bluegreen("rollback", "demo", "--timeout", "120")
    expect_exit(out, 1)
    assert "wait-workers-running" in out.stderr and stuck in out.stderr and "delete-tags" in out.stderr, out.stderr
    assert sorted(fleet.lifecycles("blue").values()) == ["InService"] * 3 and not fleet.lifecycles("green")
    assert not fleet.group("blue")["SuspendedProcesses"]  # resumed before the wait
    assert "bluegreen:operation" in fleet.tags("blue")  # the lock alone is held, for the rerun
    fleet.ec2.delete_tags(Resources=[stuck], Tags=[{"Key": TAG_WORKERS}])  # the documented way out
    expect_exit(fleet.bluegreen("rollback", "demo"), 0)
    fleet.assert_serving_only("blue", 3, "1.0")


def test_sizes_set_on_the_old_group_while_the_rollbacks_workers_wait_timed_out_are_kept_by_the_rerun(make_harness):
    """After `resume` the old group scales on its own again; the last gate may then time out and leave the lock.
    A scheduled action (or an operator) that resizes the group meanwhile is not undone by the rerun (second
    review of issue 16)."""
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    stuck = min(fleet.lifecycles("blue"))
    watches.dead.add(stuck)
    expect_exit(fleet.bluegreen("rollback", "demo", "--timeout", "120"), 1)
    fleet.asg.update_auto_scaling_group(AutoScalingGroupName="demo-blue", MinSize=4, DesiredCapacity=4, MaxSize=8)
    fleet.wait_for(lambda: len(fleet.healthy() & set(fleet.lifecycles("blue"))) == 4, "the 4th old instance healthy")
    fleet.ec2.delete_tags(Resources=[stuck], Tags=[{"Key": TAG_WORKERS}])
    out = fleet.bluegreen("rollback", "demo")
    expect_exit(out, 0)
    assert "restore-sizes" not in out.stderr, out.stderr
    assert fleet.sizes("blue") == (4, 4, 8)


def test_under_the_x1_tag_delay_a_deploy_waits_until_the_stopped_tags_are_visible(make_harness, aws):
    """X1: each `stopped` the watches write reads as the `running` it replaced for 60 AWS s. The emulator shows
    the previous value, as EC2's eventual consistency may; the wait must poll on, never pass on a stale read."""
    fleet = make_harness(capacity=3)
    watches = with_watches(fleet)
    aws.configure_faults(tag_visibility_delay_s=60)
    started = fleet.clock.now()
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    # Readers see `stopped` on every old instance by the time the deploy returns: it waited out the delay.
    assert set(watches.tags("blue").values()) == {WORKERS_STOPPED}
    assert fleet.clock.now() - started >= LAG + 60
