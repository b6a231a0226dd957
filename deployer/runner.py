"""Applying plans: observe, plan, apply the first step, observe again; and the waits.

The loop re-reads the world before every step, so a run killed anywhere is finished by running the same
command again (or `rollback`): the planner skips what is already done (STYLE.md point 8).
"""

from __future__ import annotations

import logging
import os
import signal
import time

from . import health as verdicts
from .errors import ConflictError, HealthFailure, WaitTimeout
from .model import Snapshot, classic_state, pair_from_describe

log = logging.getLogger(__name__)

# Test hook, read here and nowhere else: BLUEGREEN_CRASH_AT=<step>[:<n>] kills this process with SIGKILL
# just before it applies the n-th (default first) step of that name, as `kill -9` of a pipeline would.
# The crash-and-rerun tests use it to stop a command at every step boundary and inside batch loops.
CRASH_ENV = "BLUEGREEN_CRASH_AT"

MAX_STEPS = 100000  # a guard against a planner that never converges, far above 1000 instances' batches


class Crasher:
    def __init__(self, spec):
        name, _, nth = (spec or "").partition(":")
        self.name, self.nth, self.seen = name, int(nth or 1), 0

    def before(self, step_name):
        if not self.name or step_name != self.name:
            return
        self.seen += 1
        if self.seen == self.nth:
            log.warning("test hook %s=%s: killing this process before step %s", CRASH_ENV, self.name, step_name)
            os.kill(os.getpid(), signal.SIGKILL)


def observe(aws, service, needs=(), health_of=()):
    """One Snapshot: one group describe, plus only what the next decision needs (A9, A10)."""
    groups = pair_from_describe(service, aws.describe_service_groups(service))
    snap = Snapshot(service, groups)
    if health_of:
        snap.health = {}
        seen = set()
        for color in health_of:
            for kind, ident in groups[color].load_balancers():
                key = f"{kind}:{ident}"
                if key in seen:
                    continue
                seen.add(key)
                if kind == "tg":
                    for desc in aws.describe_target_health(ident):
                        snap.health.setdefault(desc["Target"]["Id"], {})[key] = desc["TargetHealth"]["State"]
                else:
                    for st in aws.describe_instance_health(ident):
                        snap.health.setdefault(st["InstanceId"], {})[key] = classic_state(
                            st["State"], st.get("Description", ""))
    if "policies" in needs:
        snap.policies = {c: aws.describe_policies(g.name) for c, g in groups.items()}
        snap.scheduled = {c: aws.describe_scheduled_actions(g.name) for c, g in groups.items()}
    if "retired" in needs:
        rec = snap.record
        old = groups[rec.live] if rec else None
        snap.retired = aws.describe_retired_instances(old.name) if old else []
    return snap


def has(snap, need):
    return {"policies": snap.policies is not None, "retired": snap.retired is not None}[need]


class Runner:
    def __init__(self, aws, service, context, poll_interval=5.0, timeout=600.0, sleep=time.sleep,
                 clock=time.monotonic, crash_spec=None):
        self.aws, self.service, self.context = aws, service, context
        self.poll_interval, self.timeout = poll_interval, timeout
        self.sleep, self.clock = sleep, clock
        self.crasher = Crasher(crash_spec if crash_spec is not None else os.environ.get(CRASH_ENV))
        self.executed = []
        self.locked = False

    def ctx(self):
        return self.context()

    def _check_holder(self, snap):
        if not self.locked:
            return
        rec = snap.record
        me = self.ctx().me
        if rec is None:
            raise ConflictError(f"the operation record on {self.service} was removed by another command (a rollback "
                                "that has already finished, or --force-unlock); stopping here")
        if rec.holder != me:
            raise ConflictError(f"the operation on {self.service} was taken over by {rec.action} by {rec.holder}; "
                                "stopping here")

    def run(self, planner):
        """Apply `planner`'s steps until it has none left. Returns the last snapshot."""
        needs = set()
        for _ in range(MAX_STEPS):
            snap = observe(self.aws, self.service, needs)
            self._check_holder(snap)
            steps = planner(snap, self.ctx())
            if not steps:
                return snap
            applied = self._apply_run(steps, snap)
            if applied and steps[applied - 1].name == "unlock":
                return snap
            # Read now what the next planned step needs (policies, retired instances), instead of observing
            # once without it only to find that out.
            following = steps[applied] if applied < len(steps) else None
            needs = set(following.needs if following is not None else ())
        raise RuntimeError(f"planner did not converge after {MAX_STEPS} steps")

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
            if any(not has(snap, n) for n in step.needs):
                break
            self.crasher.before(step.name)
            self._apply(step, snap)
            applied += 1
            if (step.wait and not step.gate) or step.name in ("lock", "unlock"):
                break
        return applied

    def _apply(self, step, snap):
        log.info("%s: %s", step.name, step.summary)
        if step.wait:
            self._wait(step)
            return
        for call in step.calls:
            # A2: ResourceContention comes back as HTTP 500, which botocore's adaptive mode already retries.
            self.aws.apply(call)
        if step.name == "lock":
            self.locked = True
        self.executed.append(step.name)

    def _wait(self, step):
        deadline = self.clock() + self.timeout
        last = None
        polls = 0
        seen = set()  # instances seen in the watched group during this wait
        while polls == 0 or self.clock() < deadline:
            if polls:
                self.sleep(max(0.0, min(self.poll_interval, deadline - self.clock())))
            snap = observe(self.aws, self.service, health_of=(step.color,))
            self._check_holder(snap)
            polls += 1
            group = snap.groups[step.color]
            state, detail = verdicts.verdict(step.wait, group, snap.health, seen=seen)
            seen |= {i.id for i in group.instances}
            if detail != last:
                log.info("%s: %s", step.name, detail)
                last = detail
            if state == verdicts.OK:
                if step.then is not None:
                    self.aws.apply(step.then)
                self.executed.append(step.name)
                return
            if state == verdicts.REPLAN:
                self.executed.append(step.name)
                return
            if state == verdicts.FAIL:
                exc = HealthFailure(detail)
                exc.step = step
                raise exc
        exc = WaitTimeout(f"timed out after {self.timeout:g}s ({polls} polls): {step.summary}; "
                          f"last seen: {last}")
        exc.step = step
        raise exc
