"""What the polls of one launch wait or Standby gate learn and keep, turned into health.WaitFacts (no AWS here:
runner.observe reads, health.verdict_launch / verdict_gate decide)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from agent import contract

from .health import WaitFacts, lb_keys, state_in, unverified
from .model import other

log = logging.getLogger(__name__)


# A15: a scaling activity counts for a wait if it started after the wait did, by the deployer's clock, less
# this allowance for the skew between that clock and AWS's (NTP keeps it far below).
ACTIVITY_SKEW_S = 10.0


class LaunchWatch:
    """What the polls of one launch wait or gate learn and keep: when each instance was first seen (its grace
    period is counted from then, a lower bound on its launch: E5), which instances were seen running the version
    (not asked again), the launch hook and cross-zone answers (asked once per wait)."""

    def __init__(self, step, since, budget, warned):
        self.step, self.since, self.budget, self.warned = step, since, budget, warned
        self.first_seen = {}
        self.healthy_once = set()
        self.verified = set()
        self.hooked = None
        self.peers_publish = None
        self.cross_zone_off = None

    def reads(self):
        """What the next poll asks runner.observe for (a runner.LaunchReads)."""
        return {"color": self.step.color, "verified": frozenset(self.verified), "hooks": self.hooked is None,
                "peers": self.peers_publish is None,
                "cross_zone": self.step.verdict.kind == "gate" and self.cross_zone_off is None}

    def facts(self, snap, now):
        group = snap.groups[self.step.color]
        if snap.hooked is not None:
            self.hooked = snap.hooked
        if snap.peers_publish is not None:
            self.peers_publish = snap.peers_publish
        if snap.cross_zone_off is not None:
            self.cross_zone_off = snap.cross_zone_off
        for inst in group.instances:
            self.first_seen.setdefault(inst.id, now)
        keys = lb_keys(group)
        self.healthy_once |= {i.id for i in group.in_state("InService")
                              if keys and all(state_in(snap.health or {}, i.id, k) == "healthy" for k in keys)}
        version = group.version
        running = {i: version for i in self.verified}
        raw = snap.running or {}
        for inst in group.in_state("InService"):
            if inst.id in self.verified:
                continue
            value = raw.get(inst.id)
            if value is None:
                running[inst.id] = None
                continue
            try:
                running[inst.id] = contract.decode_running(value).version or ""
            except contract.ContractError:
                running[inst.id] = ""  # unreadable: never counted as running the version
            if running[inst.id] == version:
                self.verified.add(inst.id)
        if self.peers_publish or any(v is not None for v in running.values()):
            # The live fleet, or some new instance, publishes `bluegreen:running`: the agent knows the tag, and
            # so do the others of the same launch template; one without it has not written it yet, or its tag is
            # not visible yet (X1). Only a fleet where none publishes it is gated on health alone.
            running = {i: ("" if v is None else v) for i, v in running.items()}
        activities = None
        if snap.activities is not None:
            activities = [a for a in snap.activities if _started(a) is None or _started(a) >= self.since]
        return WaitFacts(version=version, budget=self.budget, running=running,
                         age={i: now - t for i, t in self.first_seen.items()}, hooked=self.hooked,
                         activities=activities, reasons=snap.reasons or {},
                         old=snap.groups[other(self.step.color)] if self.step.verdict.kind == "gate" else None,
                         cross_zone_off=bool(self.cross_zone_off), healthy_once=frozenset(self.healthy_once),
                         grace=self.step.verdict.kind != "gate")

    def warn_unverified(self, group, facts):
        """One warning line per instance and run for an instance gated on health alone (finding 7)."""
        for iid in unverified(group, facts):
            if iid not in self.warned:
                self.warned.add(iid)
                log.warning("instance %s of %s publishes no %s tag (an agent older than it): counted on its health "
                            "alone, its version unverified", iid, group.name, contract.TAG_RUNNING)


def _started(activity):
    start = activity.get("StartTime")
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return start
