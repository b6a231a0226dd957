"""Applying plans: observe, plan, apply the steps one observation settles, observe again; and the waits.

The loop re-reads the world before every step, so a run killed anywhere is finished by running the same
command again (or `rollback`): the planner skips what is already done (STYLE.md point 8).

Time and the test seams are passed in: `sleep` and `clock` (a test drives them, and the emulated AWS, from one
fake clock), and `before_step`, called with each step just before it is applied (the crash tests kill the
process there). Nothing here reads the environment.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from botocore.exceptions import BotoCoreError, ClientError

from agent.contract import EVENT_ABORTED, EVENT_RESTORED, EVENT_SETTLED, PHASE_BAKE, PHASE_RESTORED, TAG_WORKERS

from . import bake, events
from .alarms import linked_alarm_names
from .errors import (
    Aborted,
    BakeFailed,
    BlueGreenError,
    ConflictError,
    HealthFailure,
    RolledBack,
    WaitFailed,
    WaitTimeout,
)
from .health import (
    DEFAULT_BUDGET,
    FAIL,
    GATE,
    NLB_PROTOCOLS,
    OK,
    OUT_OF_TRAFFIC,
    REPLAN,
    WaitFacts,
    cross_zone_off,
    leaving,
)
from .model import (
    COLORS,
    LAUNCHING,
    TAG_SERVICE,
    Snapshot,
    classic_state,
    group_from_describe,
    other,
    pair_from_describe,
)
from .steps import ABORT, NEEDS, ROLLBACK, BakeStep, CallStep, LockStep, RecordClear, RecordWrite, UnlockStep, WaitStep
from .store import MAX_CALL_S
from .watch import ACTIVITY_SKEW_S, LaunchWatch

log = logging.getLogger(__name__)


# X1: how long finalize searches again for the detached instances' tag before it goes on with the ids it knows.
RETIRED_SEARCH_S = 120.0
RETIRED_BACKOFF_CAP_S = 20.0


def find_retired(aws, group_name, expected, known=False):
    """The detached instances of `group_name` that still exist: those a tag search finds and those `expected`
    (ids known to be detached: the state store's list, and this run's). X1: a tag just written may not be
    returned by DescribeTags for a while, so search again with backoff until every expected id that still
    exists is found (what a rerun without a store relies on), under RETIRED_SEARCH_S."""
    deadline = aws.clock() + RETIRED_SEARCH_S
    delay = 1.0
    while True:
        tagged, live = aws.describe_retired_instances(group_name, sorted(expected))
        missing = (set(expected) & set(live)) - set(tagged)
        if not missing or known:
            # `known`: the state store keeps every detached id, so nothing depends on the tags being visible yet
            # (X1 matters only to a rerun without a store): no backoff, and no lease left unrenewed meanwhile.
            return live
        if aws.clock() + delay > deadline:
            log.warning("X1: %d detached instances of %s are still not found by their tag after %gs (%s); going on "
                        "with the ids this run knows", len(missing), group_name, RETIRED_SEARCH_S,
                        ", ".join(sorted(missing)[:3]))
            return live
        log.info("X1: %d detached instances of %s not yet found by their tag; searching again in %gs",
                 len(missing), group_name, delay)
        aws.sleep(delay)
        delay = min(2 * delay, RETIRED_BACKOFF_CAP_S)


@dataclass(frozen=True)
class LaunchReads:
    """What one poll of a launch wait or the gate reads beyond the group and its health, each only when needed
    (A9, A10: the poll cost stays flat): the `bluegreen:running` tags of its InService instances not yet `verified`
    (DescribeTags, 200 ids a call), the group's newest scaling activities when it is short of capacity (A15), its launch hooks (once per
    wait), and the pair's cross-zone settings (once per gate, E6)."""

    color: str
    versions: bool = True
    verified: frozenset = frozenset()  # ids already seen running the version: not asked again
    hooks: bool = False
    peers: bool = False  # whether the live fleet's instances publish `bluegreen:running` (once per wait)
    cross_zone: bool = False


def observe(aws, service, needs=(), health_of=(), store=None, detached=(), launch=None, only=None, workers=None):
    """One Snapshot: one group describe, lock.json when there is a state store, plus only what the next decision
    needs (A9, A10). `detached`: ids this run detached (finalize), searched for with the stored ones; `launch`
    (LaunchReads): what a launch wait or the gate asks for.

    `only` (a Group of an earlier observation): the poll of a wait whose verdict reads that group alone describes
    it alone, by name, and its Snapshot holds that group only: at N = 1,000 a poll then reads 1,000 instances, not
    the pair's 2,000. Only while lock.json decides the record (the lock check of every poll needs no group tag
    then): without a state store, or without its lock.json, the record is the groups' tags, which the pair carries
    (Snapshot.tag_record), so the pair is read as before. The pair also when the group is gone, or no longer the
    service's group of that color behind the same load balancers (pair_from_describe then says what changed, E4,
    as any observation would), and when `launch` asks whether the live fleet publishes `bluegreen:running`.

    `workers` ("running" or "stopped", a workers wait: issue 16): the group of `only` (else the pair's instances)
    has its `bluegreen:workers` tags read, 200 ids a call, and the EC2 state of those whose tag says otherwise."""
    groups = None
    if only is not None and store is not None and not (launch is not None and launch.peers):
        groups = _one_group(aws, service, only)
    if groups is None:
        groups = pair_from_describe(service, aws.describe_service_groups(service))
    stored = store.read() if store is not None else None
    if len(groups) == 1 and stored is None:
        groups = pair_from_describe(service, aws.describe_service_groups(service))
    store_url = store.url if store is not None else None
    health = reasons = None
    if "health" in needs and not health_of:
        health_of = COLORS  # the pair shares its load balancers (E4): one read each
    if health_of:
        health, reasons = {}, {}
        seen = set()
        for color in health_of:
            for kind, ident in groups[color].load_balancers():
                key = f"{kind}:{ident}"
                if key in seen:
                    continue
                seen.add(key)
                if kind == "tg":
                    for desc in aws.describe_target_health(ident):
                        target = desc["Target"]["Id"]
                        health.setdefault(target, {})[key] = desc["TargetHealth"]["State"]
                        if desc["TargetHealth"].get("Reason"):
                            reasons.setdefault(target, {})[key] = desc["TargetHealth"]["Reason"]
                else:
                    for st in aws.describe_instance_health(ident):
                        health.setdefault(st["InstanceId"], {})[key] = classic_state(
                            st["State"], st.get("Description", ""))
    aside = None
    if "health" in needs:
        ids = [i.id for g in groups.values() for i in g.in_state("Standby", "EnteringStandby")]
        aside = aws.describe_instance_states(ids) if ids else {}
    policies = scheduled = retired = None
    if "policies" in needs:
        policies = {c: aws.describe_policies(g.name) for c, g in groups.items()}
        scheduled = {c: aws.describe_scheduled_actions(g.name) for c, g in groups.items()}
    snap = Snapshot(service, groups, health, policies, scheduled, store_url=store_url, stored=stored,
                    reasons=reasons, aside_states=aside)
    if policies is not None:
        # W1: the alarms that make the pair's step and simple policies act, as their `Alarms` list them, and the
        # copies the record says this operation made (one whose policy is gone is still found): read by name.
        names = {n for c in COLORS for n in linked_alarm_names(policies[c])}
        names |= {name for kind, _, name in snap.created if kind == "alarm"}
        snap = replace(snap, alarms=aws.describe_alarms(names) if names else [])
    if "retired" in needs:
        rec = snap.record
        expected = set(snap.detached or ()) | set(detached)
        retired = find_retired(aws, groups[rec.live].name, expected, known=bool(snap.detached)) if rec else []
        snap = replace(snap, retired=retired)
    if launch is not None:
        snap = replace(snap, **_launch_reads(aws, groups, launch))
    if workers is not None:
        watched = [groups[only.color]] if only is not None and only.color in groups else list(groups.values())
        ids = [i.id for g in watched for i in g.instances if not leaving(i)]
        tags = aws.describe_instance_tag(ids, TAG_WORKERS) if ids else {}
        other_value = [i for i, v in tags.items() if v != workers]
        snap = replace(snap, workers=tags, workers_ec2=aws.describe_instance_states(other_value) if other_value else {})
    return snap


def _one_group(aws, service, only):
    """{color: Group} of `only`'s group described by name, or None when it no longer is what `only` was: the
    service's group of that color, behind the same load balancers (E4: a group attached to none would pass every
    health verdict)."""
    records = aws.describe_group(only.name)
    if len(records) != 1:
        return None
    group = group_from_describe(records[0])
    if group.name != only.name or group.tags.get(TAG_SERVICE) != service or group.color != only.color or \
            set(group.load_balancers()) != set(only.load_balancers()):
        return None
    return {group.color: group}


def _launch_reads(aws, groups, launch):
    group = groups[launch.color]
    out = {}
    ask = [i.id for i in group.in_state("InService") if i.id not in launch.verified]
    if launch.versions and ask:
        out["running"] = aws.describe_running_tags(ask)
    arriving = [i for i in group.instances if not leaving(i) and i.health_status != "Unhealthy"]
    if len(arriving) < group.desired:
        # Short of capacity: only now is it worth asking why (A15); a wait whose launches arrive pays nothing.
        out["activities"] = aws.describe_scaling_activities(group.name)
    if launch.peers:
        serving = [i.id for i in groups[other(launch.color)].in_state("InService", "Standby", "EnteringStandby")]
        out["peers_publish"] = bool(serving) and bool(aws.describe_running_tags(serving[:200]))
    if launch.hooks:
        out["hooked"] = any(h.get("LifecycleTransition") == LAUNCHING
                            for h in aws.describe_lifecycle_hooks(group.name))
    if launch.cross_zone:
        tgs = []
        described = {t["TargetGroupArn"]: t for t in aws.describe_target_groups(group.target_groups)} \
            if group.target_groups else {}
        for arn in group.target_groups:
            desc = described.get(arn, {})
            attrs = aws.describe_target_group_attributes(arn)
            lb_attrs = None
            if desc.get("Protocol") in NLB_PROTOCOLS and desc.get("LoadBalancerArns") and \
                    attrs.get("load_balancing.cross_zone.enabled") not in ("true", "false"):
                lb_attrs = aws.describe_load_balancer_attributes(desc["LoadBalancerArns"][0])
            tgs.append((attrs, desc.get("Protocol"), lb_attrs))
        out["cross_zone_off"] = cross_zone_off(tgs, [aws.describe_classic_attributes(n) for n in group.classic_lbs])
    return out


def _utc_stamp():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _durations(timeline, ended):
    """Each phase with how long it lasted (until the next one, the last until the end)."""
    def parse(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    out = []
    for n, item in enumerate(timeline):
        until = timeline[n + 1]["at"] if n + 1 < len(timeline) else ended
        out.append(dict(item, duration_s=round((parse(until) - parse(item["at"])).total_seconds(), 3)))
    return out


def round_limit(snap):
    """A bound on plan rounds, from the pair's own size: a planner that never converges stops long before it
    could make calls without end. Every round applies at least one step; a command needs a few dozen fixed
    steps plus a few per batch of 20 instances (A1-A3), and a wait may replan a few times."""
    most = sum(max(snap.groups[c].max, snap.groups[c].desired, len(snap.groups[c].instances)) for c in COLORS)
    return 100 + 4 * most


def last_state(snap, color, detail):
    """What a wait saw last, as data for the error (and `--output json`)."""
    group = snap.groups[color]
    return {"detail": detail, "group": group.name, "desired": group.desired,
            "instances": {i.id: {"lifecycle": i.lifecycle, "group_health": i.health_status,
                                 "load_balancers": dict((snap.health or {}).get(i.id, {}))}
                          for i in group.instances}}


class Runner:
    def __init__(self, aws, service, context, poll_interval=5.0, timeout=600.0, sleep=time.sleep,
                 clock=time.monotonic, before_step=None, store=None, journal=None, budget=None, sinks=None):
        self.aws, self.service, self.context = aws, service, context
        self.budget = budget or DEFAULT_BUDGET  # health.ReplacementBudget: --max-replacements
        self.warned = set()  # instances already warned about as unverified (one line each per run)
        self.poll_interval, self.timeout = poll_interval, timeout
        self.sleep, self.clock = sleep, clock
        self.before_step = before_step or (lambda step: None)
        self.store = store  # store.StateStore, or None: the groups' tags are the lock (no compare-and-set)
        self.journal = journal or {}  # what the journal entry of this run records beyond the store's state
        self.executed = []
        self.locked = False
        self.waiting = None  # the wait step being polled now: its undo runs however the run stops inside it
        self.fence_until = None  # after taking over a live holder: when its last call can have landed
        self.journal_key = None
        # Rollback's two stages (issue 10): seconds from this run's start until the record entered phase
        # `restored` (recovery time ends) and until the lock was released (`settled`); None if not in this run.
        self.started_at = clock()
        self.detached = set()  # instance ids this run detached (finalize): terminated by id (finding 13, X1)
        self.stage_s = {PHASE_RESTORED: None, EVENT_SETTLED: None}
        # Events (events.py): where they go, which this run announced, the record it wrote last (what its next
        # write is a transition from), that operation's phases without a state store, and why an abort began.
        self.sinks = sinks
        self.announced = set()
        self.current = None
        self.timeline = []
        self.abort_reason = None
        self.unwatched_since = None  # a resumed bake's last stamp, when no watcher had stamped it for too long
        self.pair = {}  # the groups as the last round observed them (a wait's poll may read one of them alone)
        if store is not None and hasattr(aws, "before_retry"):
            aws.before_retry = self._confirm_lock  # a retried change is a new change: confirm the lock first

    def _check_holder(self, snap):
        if not self.locked:
            return
        rec = snap.record
        me = self.context().me
        if rec is None:
            raise ConflictError(f"the operation record on {self.service} was removed by another command (a rollback "
                                "or a finalize, which may end a bake, that has already finished, or --force-unlock); "
                                "stopping here")
        if rec.holder != me:
            raise ConflictError(f"the operation on {self.service} was taken over by {rec.action} by {rec.holder}; "
                                "stopping here")

    def run(self, planner, abort=None, rollback=None):
        """Apply `planner`'s steps until it has none left; return the last snapshot.

        A failed wait whose failure policy is ABORT runs the `abort` planner, then raises Aborted naming the
        failure; a failed bake whose policy is ROLLBACK runs the `rollback` planner (plan_rollback) with the
        bake's reason, then raises RolledBack; any other failed wait raises as it is (the record stays, so a rerun
        carries on).
        """
        try:
            return self._loop(planner)
        except WaitFailed as exc:
            reason = getattr(exc, "reason", None)
            if reason:
                self.journal["reason"] = reason  # why it was undone: the journal entry says it (events, history)
            if exc.step.on_failure == ROLLBACK and rollback is not None:
                self._roll_back(exc, rollback)
            if exc.step.on_failure != ABORT or abort is None:
                self._undo(exc.step)
                self._park()
                raise
            log.info("aborting: %s", exc)
            self.abort_reason = str(exc)
            try:
                snap = self._loop(abort)
            except WaitFailed as undone:
                # The abort's own wait failed (e.g. Terminate suspended on the new group, A14): say both, and give
                # up the lease so that the `bluegreen rollback` the line asks for resumes at once.
                self._park()
                raise WaitFailed(f"{exc}; then the abort could not finish: {undone}; run `bluegreen rollback "
                                 f"{self.service}`", undone.step, undone.last) from exc
            live = snap.record.live if snap.record else snap.live
            raise Aborted(f"aborted: {exc}; {snap.groups[other(live)].name} is back to 0 and "
                          f"{snap.groups[live].name} was not touched", exc) from exc

    def _roll_back(self, exc, rollback):
        """A failed bake: `bluegreen rollback`'s steps at once, in this process, which still holds the lock."""
        log.info("rolling back: %s", exc)
        try:
            self._stamp_watched(reason=exc.reason)  # first: a rollback refused before its lock still knows why
            snap = self._loop(lambda snap, ctx: rollback(snap, ctx, reason=exc.reason))
        except (BlueGreenError, BotoCoreError, ClientError) as undone:
            self._park()
            if self.stage_s.get(PHASE_RESTORED) is not None:
                # Restored already (the old fleet serves, the new takes no new requests); only settling failed,
                # e.g. waiting for a drain longer than --timeout (E8): say so, not that the rollback failed.
                raise RolledBack(f"rolled back: {exc}; the old fleet serves again, but settling did not finish: "
                                 f"{undone}; run `bluegreen rollback {self.service}` to settle", exc) from undone
            raise RolledBack(f"{exc}; then the automatic rollback failed: {undone}; run `bluegreen rollback "
                             f"{self.service}`", exc) from undone
        rec = snap.record
        live = rec.live if rec is not None else snap.live
        if live is None:
            raise RolledBack(f"rolled back: {exc}", exc) from exc
        settled = self.stage_s[EVENT_SETTLED] is not None  # not with --wait restored: `rollback` settles it
        where = (f"{snap.groups[live].name} serves again and {snap.groups[other(live)].name} is "
                 + ("back to 0" if settled else "out of the load balancers (rerun `bluegreen rollback` to settle)"))
        raise RolledBack(f"rolled back: {exc}; {where}", exc) from exc

    def _undo(self, step):
        """A stopped wait's cleanup calls (WaitStep.undo), made while this process still holds the lock."""
        try:
            for call in step.undo:
                log.info("%s failed: %s", step.name, call.describe())
                if self.store is not None and self.locked:
                    self.store.renew()  # fencing, as for every change (see _apply)
                self._call(call, None)
        except (BlueGreenError, BotoCoreError, ClientError) as exc:  # displaced meanwhile, or AWS refused
            log.warning("could not undo after %s: %s", step.name, exc)

    def _park(self):
        """Stopping with the operation still open (exit 1, 4 or 130): give up the lease, so that the rerun the
        message asks for, from any machine, resumes at once instead of waiting for the lease to run out."""
        if self.store is None or not self.locked or not self.store.lease.doc.get("operation"):
            return
        try:
            self.store.park()
        except (BlueGreenError, BotoCoreError, ClientError) as exc:  # displaced meanwhile, or S3 unreachable
            log.warning("could not park the lease: %s", exc)

    def plan(self, planner):
        """The plan a run would start with (--dry-run), read with every extra its steps need, changing nothing."""
        needs = set()
        for _ in range(len(NEEDS) + 1):  # the first read, then at most one more per extra a step asks for
            snap = observe(self.aws, self.service, needs, store=self.store)
            steps = planner(snap, self.context())
            missing = {n for s in steps for n in s.needs if not snap.has(n)}
            if not missing:
                return steps
            needs |= missing
        return steps

    def _loop(self, planner):
        try:
            return self._rounds(planner)
        except WaitFailed:
            raise  # run() decides: abort, or park
        except ConflictError:
            raise  # displaced, or refused: not ours to park
        except (BlueGreenError, BotoCoreError, ClientError, KeyboardInterrupt):
            # Stopped inside a wait with cleanup calls (the Standby gate: the processes the deploy suspended on the
            # group still serving, finding 21): an AWS error or Ctrl-C there must not leave them suspended either.
            if self.waiting is not None and self.waiting.undo:
                self._undo(self.waiting)
            self._park()
            raise

    def _rounds(self, planner):
        needs = set()
        limit = None
        rounds = 0
        while limit is None or rounds < limit:
            rounds += 1
            snap = observe(self.aws, self.service, needs, store=self.store, detached=self.detached)
            self.pair = snap.groups
            if limit is None:
                limit = round_limit(snap)
            self._check_holder(snap)
            steps = planner(snap, self.context())
            if not steps:
                if self.store is not None and self.locked and snap.record is not None:
                    self.store.park()
                return snap
            applied = self._apply_run(steps, snap)
            if applied and isinstance(steps[applied - 1], UnlockStep):
                return snap
            # Read now what the next planned step needs (policies, retired instances), instead of observing
            # once without it only to find that out.
            following = steps[applied] if applied < len(steps) else None
            needs = set(following.needs if following is not None else ())
        raise RuntimeError(f"internal error: the {self.service} plan did not converge in {limit} rounds")

    def _apply_run(self, steps, snap):
        """Apply the plan's leading steps that one observation settles; return how many were applied.

        Steps planned from the same observation are applied back to back (each is idempotent, and a rerun
        replans from what is left) until one of them needs to see the world again first: a wait (the world
        has changed once it returns), the lock (confirm this process holds it before acting on it: tags have
        no compare-and-set), or a step planned without the data it needs (policies, retired instances).
        Every observation and every poll checks that the record still names this process as its holder.
        """
        applied = 0
        for step in steps:
            if not all(snap.has(n) for n in step.needs):
                break
            if isinstance(step, CallStep) and step.needs and not step.calls:
                # A placeholder although its extras were read: it waits on what an earlier step of this run
                # changed (the alarm copies on the policies just put, W1), so read them again first.
                break
            if (isinstance(step, UnlockStep) or getattr(step, "settling", False)) and self._fenced():
                break  # observe again: a late call of the displaced holder may have changed the plan
            self.before_step(step)
            replan = self._apply(step, snap) == REPLAN
            applied += 1
            # A gate's following steps apply from this observation, unless its verdict said only a new plan can go
            # on (an old instance back InService during the drain wait: its EnterStandby must be planned again).
            if (isinstance(step, WaitStep) and (not step.gate or replan)) or isinstance(step, (LockStep, UnlockStep)):
                break
        return applied

    def _apply(self, step, snap):
        log.info("%s: %s", step.name, step.summary)
        if isinstance(step, WaitStep):
            return self._wait(step, snap)
        for call in step.calls:
            if self.store is not None and self.locked and not isinstance(call, RecordWrite):
                # Fencing: confirm the lock with a compare-and-set right before each change (a record write is one
                # itself). A process that was displaced learns it here and stops; one that holds it knows each of
                # its calls starts while it holds it and ends within MAX_CALL_S (cli.make_clients bounds the
                # retries), which is what a rollback that takes over waits out before it settles.
                self.store.renew()
            self._call(call, snap, lock=isinstance(step, LockStep))
        self.executed.append(step.name)

    def _call(self, call, snap, lock=False):
        """One planned call. A record write goes to the state store first (the lock's compare-and-set), then to
        the tags, its mirror; a release removes the tags first, so a stale mirror never outlives the lock."""
        if isinstance(call, RecordWrite) and self.store is not None:
            self._write_record(call, snap, lock)
        if isinstance(call, RecordClear):
            if call.params["Tags"]:
                self.aws.apply(call)
            doc = dict(self.store.lease.doc) if self.store is not None else None  # the operation, before release
            if self.store is not None:
                self.journal_key = self.store.release(self._journal_entry(call))
            self._stage(EVENT_SETTLED)
            self._announce(events.ended(call.result), self.current or (snap.record if snap else None), snap, doc,
                           reason=self.abort_reason if call.result == EVENT_ABORTED else None,
                           extra={"result": call.result, "journal": self.journal_key})
            return
        # A2: ResourceContention comes back as HTTP 500, which botocore's standard retry mode already retries.
        self.aws.apply(call)
        if call.op == "DetachInstances":
            self.detached |= set(call.params["InstanceIds"])
        if isinstance(call, RecordWrite):
            self._announce_write(call.record, snap)

    def _announce_write(self, record, snap):
        """After a record write has landed (the store, then the tags): the event of its transition, if any."""
        previous = self.current or (snap.record if snap is not None else None)
        self.current = record
        if previous is None or (previous.action, previous.started) != (record.action, record.started):
            self.timeline = []
        if not self.timeline or self.timeline[-1][0] != record.phase:
            self.timeline.append((record.phase, _utc_stamp()))
        for name, about in events.transition(previous, record):
            self._announce(name, about, snap)

    def _announce(self, name, record, snap, doc=None, reason=None, extra=None):
        """Put one event on the sinks, once per operation and event in this run; never raises (events.Sinks)."""
        if self.sinks is None or not self.sinks.active or record is None:
            return
        key = (record.action, record.started, name)
        if key in self.announced:
            return
        self.announced.add(key)
        if doc is None and self.store is not None:
            doc = self.store.lease.doc
        op = (doc or {}).get("operation") or {}
        timeline = [tuple(p) for p in (doc or {}).get("phases", [])] if doc else list(self.timeline)
        live = None
        if snap is not None:
            # A one-group poll's snapshot lacks the other group: its version tag is as the round observed it.
            live = snap.groups.get(record.live) or self.pair.get(record.live)
        old = live.version if live is not None else None
        if self.unwatched_since:
            extra = dict(extra or {}, bake_not_watched_since=self.unwatched_since)
        data = events.detail(name, self.service, record, old, datetime.now(timezone.utc), timeline,
                             reason=reason or op.get("reason"), operation=op.get("id"), extra=extra)
        self.sinks.put(name, data)

    def _write_record(self, call, snap, lock):
        # The first write of this process takes the lock even when the record already names it (a resumed
        # record of the same holder string, or one migrated from the tags): only a write conditional on what
        # was observed proves this process holds it.
        if not lock and self.store.lease.etag is None:
            lock = True
            if snap.from_store and snap.stored.operation and snap.lease_live and \
                    snap.stored.doc.get("nonce") != self.store.lease.nonce and call.record.action != "rollback" \
                    and not self.context().force_unlock:
                # Another process with the same user@host:pid (containers with fixed hostnames and pids) holds a
                # live lease: the holder string cannot tell them apart, the nonce can.
                raise ConflictError(f"{snap.record.action} {snap.record.version} of {self.service} is held by another "
                                    f"process also named {snap.record.holder} whose lease is live; wait for it, or "
                                    "--force-unlock if it is stuck")
        op = dict(call.record.as_state())
        previous = (self.store.lease.doc.get("operation") or {}) if not lock else (
            snap.stored.operation if snap.from_store and snap.stored.operation else {})
        same_operation = previous.get("action") == op["action"] and previous.get("started") == op["started"]
        detached = set(previous.get("detached", ())) if same_operation else set()
        detached |= set(call.detached)
        if detached:
            op["detached"] = sorted(detached)
        # What the tool created (W1, A7) outlives the operation that made it until the one that deletes it ends: a
        # rollback or finalize taking over a deploy keeps its list.
        created = {tuple(c) for c in previous.get("created", ())} | set(call.created)
        if created:
            op["created"] = sorted(list(c) for c in created)
        op["id"] = previous.get("id") if same_operation and previous.get("id") else uuid.uuid4().hex[:16]
        phases = list((self.store.lease.doc if not lock else (snap.stored.doc if snap.from_store else {}))
                      .get("phases", [])) if same_operation else []
        if not phases or phases[-1][0] != op["phase"]:
            if call.event:
                phases.append([call.event, _utc_stamp()])  # a transition with no phase of its own (baked)
            phases.append([op["phase"], _utc_stamp()])
        fence = False
        if lock:
            saved = call.saved
            if saved is None and snap.saved is not None:  # resumed or taken over: keep what was saved
                saved = {"sizes": list(snap.saved[0]), "suspended": list(snap.saved[1])}
            if snap.record is not None and snap.record.holder != call.record.holder:
                op["took_over"] = {"action": snap.record.action, "version": snap.record.version,
                                   "holder": snap.record.holder, "lease_live": snap.lease_live}
                fence = snap.lease_live and self.context().holder_alive(snap.record.holder)
            elif same_operation and previous.get("took_over"):
                op["took_over"] = previous["took_over"]
            self.store.acquire(snap.stored if snap.from_store else None, op, saved or {}, phases)
            self.locked = True
            if op.get("took_over") and fence:
                # The displaced holder may still run and have a call in flight (it confirmed its lock right before
                # it): settle nothing until that call can have landed, counted from when we hold the lock.
                self.fence_until = self.clock() + MAX_CALL_S
        else:
            if self.store.lease.doc.get("operation", {}).get("took_over"):
                op.setdefault("took_over", self.store.lease.doc["operation"]["took_over"])
            self.store.write(op, phases=phases)

    def _journal_entry(self, call):
        op = self.store.lease.doc.get("operation") or {}
        phases = self.store.lease.doc.get("phases", [])
        ended = _utc_stamp()
        timeline = [{"phase": name, "at": at} for name, at in phases]
        entry = {"schema_version": 1, "id": op.get("id") or uuid.uuid4().hex[:16], "service": self.service,
                 "action": op.get("action"), "result": call.result, "holder": self.context().me,
                 "version": op.get("version"), "live_before": op.get("live"), "started": op.get("started"),
                 "ended": ended, "phases": _durations(timeline, ended)}
        if op.get("took_over"):
            entry["took_over"] = op["took_over"]
        if self.sinks is not None and (self.sinks.bus or self.sinks.topic):
            # The end's own event is put after this entry is written (after the transition it announces).
            entry["events"] = {"delivered": self.sinks.sent, "failed": self.sinks.failed}
        if op.get("reason"):
            entry["reason"] = op["reason"]
        entry.update(self.journal)
        return entry

    def _confirm_lock(self):
        if self.store is not None and self.locked:
            self.store.renew()

    def _stage(self, name):
        if self.stage_s[name] is None:
            self.stage_s[name] = round(self.clock() - self.started_at, 3)

    def _hold_lease(self, margin):
        """Renew the lease when less than `margin` of this process's own view of it is left (during waits)."""
        if self.store.needs_renewal(margin):
            self.store.renew()

    def _fenced(self):
        """After taking over a live holder: hold back the unlock until that holder's last possible call has
        landed (store.MAX_CALL_S), then observe and plan once more."""
        if self.fence_until is None:
            return False
        left = self.fence_until - self.clock()
        self.fence_until = None
        if left <= 0:
            return False
        log.info("waiting %.0fs for any call of the displaced holder to land before checking the end state", left)
        self._hold_lease(margin=left + MAX_CALL_S)
        self.sleep(left)
        return True

    def _wait(self, step, planned):
        """Poll `step` (planned from the observation `planned`) until its verdict decides."""
        self.waiting = step  # left set when the wait raises: _loop's handler undoes it
        result = self._bake(step, planned) if isinstance(step, BakeStep) else self._poll(step, planned)
        self.waiting = None
        return result

    def _alone(self, step, planned):
        """The group a poll of `step` may read alone (observe's `only`), or None for the pair: every wait's verdict
        reads its own group, but the gate also reads the live group's zones on every poll (finding 6)."""
        return None if step.verdict.kind == GATE.kind else planned.groups.get(step.color)

    def _bake(self, step, planned):
        """Watch until the bake's recorded deadline (by the wall clock: a rerun in another process goes on until
        the same moment), polling the group's health and the named alarms; each poll stamps the record, which
        is the lease renewal too, so `status` can tell a crashed watcher ("bake not watched since")."""
        remaining = (bake.parse_stamp(step.until) - self.context().now).total_seconds()
        deadline = self.clock() + max(0.0, remaining)
        log.info("%s: until %s (%.0f s from now)", step.name, step.until, max(0.0, remaining))
        op = (self.store.lease.doc.get("operation") or {}) if self.store else {}
        prior = bake.status(op.get("bake"), PHASE_BAKE, self.context().now)
        if prior and prior["stale"]:
            # A crashed watcher (issue 12): the gap is said, in the log and in every event this run puts after.
            self.unwatched_since = prior["watched"]
            log.warning("%s: the bake was not watched since %s; watching again until %s", step.name,
                        prior["watched"], step.until)
        # A bake that already failed (its reason recorded, then the process died before its rollback took over):
        # the failure stands, whatever the alarm says now. A rerun undoes the release, it never bakes it again.
        failed = op.get("reason")
        polls = 0
        seen = set()
        last = None
        while polls == 0 or self.clock() < deadline:
            if polls:
                self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))
            snap = observe(self.aws, self.service, health_of=(step.color,), store=self.store,
                           only=self._alone(step, planned))
            self._check_holder(snap)
            alarms = self.aws.describe_named_alarms(step.alarms) if step.alarms else []
            self._stamp_watched()
            polls += 1
            group = snap.groups[step.color]
            if failed:
                raise BakeFailed(f"bake failed: {failed} (recorded by the run that died before its rollback)", step,
                                 last_state(snap, step.color, failed), failed)
            state, detail, reason = bake.verdict(group, snap.health, alarms, step.alarms, self.budget, seen,
                                                 step.capacity)
            seen |= {i.id for i in group.instances}
            if detail != last:
                log.info("%s: %s", step.name, detail)
                last = detail
            if state == FAIL:
                raise BakeFailed(f"bake failed: {detail}", step, last_state(snap, step.color, detail), reason)
        log.info("%s: passed (%d polls)", step.name, polls)
        if step.then is not None:
            self._call(step.then, snap)
        self.executed.append(step.name)

    def _stamp_watched(self, reason=None):
        """The watcher's stamp in the record, written as the lease renewal (If-Match: a holder displaced by
        `rollback` or `finalize` learns it here and stops); with `reason`, why the bake failed."""
        if self.store is None or not self.locked:
            return
        op = dict(self.store.lease.doc.get("operation") or {})
        if op.get("bake"):
            op["bake"] = dict(op["bake"], watched=bake.stamp(self.context().now))
        if reason:
            op["reason"] = reason
        self.store.write(op)

    def _poll(self, step, planned):
        deadline = self.clock() + self.timeout
        last = None
        polls = 0
        seen = set()  # instances seen in the watched group during this wait
        snap = None
        watch = None
        if step.verdict.facts_needed:
            since = self.context().now - timedelta(seconds=ACTIVITY_SKEW_S)
            watch = LaunchWatch(step, since, self.budget, self.warned)
        while polls == 0 or self.clock() < deadline:
            if polls:
                self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))
            launch = LaunchReads(**watch.reads()) if watch else None
            snap = observe(self.aws, self.service, health_of=(step.color,), store=self.store, launch=launch,
                           only=self._alone(step, planned), workers=step.verdict.workers_needed)
            self._check_holder(snap)
            if self.store is not None and self.locked:
                self._hold_lease(margin=self.store.lease_s * 2 / 3)  # a live holder renews during every wait
            polls += 1
            group = snap.groups[step.color]
            facts = watch.facts(snap, self.clock()) if watch else None
            if step.verdict.workers_needed:
                facts = WaitFacts(workers=snap.workers or {}, ec2_states=snap.workers_ec2 or {})
            state, detail = step.verdict(group, snap.health, seen, facts)
            if watch and state == OK:
                watch.warn_unverified(group, facts)
            seen |= {i.id for i in group.instances}
            if detail != last:
                log.info("%s: %s", step.name, detail)
                last = detail
            if state == OK:
                restored = step.verdict.kind == OUT_OF_TRAFFIC.kind
                if restored:
                    self._stage(PHASE_RESTORED)  # rollback's or abort's first stage reached in this run
                if step.then is not None:
                    self._call(step.then, snap)
                if restored:  # an abort records no phase for it; a rollback's then-write announced it already
                    self._announce(EVENT_RESTORED, self.current or snap.record, snap)
                self.executed.append(step.name)
                return
            if state == REPLAN:
                self.executed.append(step.name)
                return REPLAN
            if state == FAIL:
                raise HealthFailure(detail, step, last_state(snap, step.color, detail))
        raise WaitTimeout(f"timed out after {self.timeout:g}s ({polls} polls): {step.summary}; last seen: {last}",
                          step, last_state(snap, step.color, last))
