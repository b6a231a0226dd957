"""Deployment events (issue 12, part 3): one event per transition of an operation, put on an EventBridge bus,
published to an SNS topic, and printed as JSON lines on stderr with `--output json`.

The detail types are the contract's event names (agent/contract.py EVENTS): `started`, `launched`, `flipped`,
`baked`, `restored`, `settled`, `rolled-back`, `finalized`, `aborted`. Which transition announces which is
one table, TRANSITIONS, read by `transition` (pure: two records in, an event name out); the runner calls it on
every record write, so a phase added to a plan (the bake) is announced as soon as the table names it.

Events are notifications, never part of the operation: one that cannot be delivered (no such bus or topic, no
permission, a PutEvents entry that failed although the call answered 200) costs one warning line and a count,
and the command goes on. Each is sent only after the transition it announces is recorded (the state store,
then the tags), so an event never announces what a crash could still undo; a crash between the record and its
event loses that event (at most once; the journal keeps the phases).

Clients are made by the CLI and passed in (STYLE.md point 2): `events` and `sns`, with short timeouts and few
retries (cli.make_clients), so an unreachable sink delays a deploy by seconds, not by the lock's MAX_CALL_S.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from agent.contract import (
    ACTION_CANARY,
    ACTION_DEPLOY,
    ACTION_FINALIZE,
    ACTION_INIT,
    ACTION_ROLLBACK,
    EVENT_ABORTED,
    EVENT_BAKED,
    EVENT_FINALIZED,
    EVENT_FLIPPED,
    EVENT_LAUNCHED,
    EVENT_RESTORED,
    EVENT_ROLLED_BACK,
    EVENT_SETTLED,
    EVENT_STARTED,
    PHASE_BAKE,
    PHASE_FLIPPED,
    PHASE_POLICIES,
    PHASE_RESTORED,
    PHASE_SERVING,
)

log = logging.getLogger(__name__)

SOURCE = "bluegreen"  # EventBridge's `source` of every event, and the SNS message's
SCHEMA_VERSION = 1  # of the detail; new fields keep it (docs/contract.md, "Versions")
# The AWS operations this module makes: one method of Sinks each (tests/deployer/test_deployer_steps.py), all
# granted by iam/deployer-policy.json (tests/deployer/test_deployer_iam.py reads this module too).
OPERATIONS = frozenset({"PutEvents", "Publish"})
SUBJECT_MAX = 100  # SNS Subject: at most 100 characters

# What each transition announces. Keys:
#   ("start", action): an operation takes the lock (a new record: another action, or another start time);
#   ("enter", phase): the record enters `phase` (also when an operation starts in it: an abort that leaves its
#                     record as a rollback in phase restored announces `restored`, not a new rollback);
#                     ("enter", phase, action), when present, is that action's own;
#   ("leave", phase): the record leaves `phase` for another phase of the same operation (wins over "enter");
#                     never for a rollback or a finalize that takes the operation over (they end a bake early);
#   ("end", result): the lock released; `result` is the journal's (plan.clear_record).
# A phase not named here (launch, flip, restore, retire, drain, detach, cleanup) is a step inside a transition:
# it is recorded in the journal's phases, and announces nothing of its own.
TRANSITIONS = {
    ("start", ACTION_DEPLOY): EVENT_STARTED,
    ("start", ACTION_CANARY): EVENT_STARTED,
    ("start", ACTION_FINALIZE): EVENT_STARTED,
    ("start", ACTION_INIT): EVENT_STARTED,  # issue 15: a new pair's first colour brought up
    # A rollback taking over (by its holder, or by an alarm: the record's `reason`): the deploy is being rolled
    # back from here on; `restored` and `settled` follow as it gets there.
    ("start", ACTION_ROLLBACK): EVENT_ROLLED_BACK,
    ("enter", PHASE_POLICIES): EVENT_LAUNCHED,  # deploy: the new fleet is InService, healthy, on the version
    ("enter", PHASE_SERVING): EVENT_LAUNCHED,  # canary: the same for its instances
    ("enter", PHASE_FLIPPED): EVENT_FLIPPED,  # the old fleet has left the load balancers
    # With --bake the record enters `bake` where it would have entered `flipped` (deploy) or `serving` (canary),
    # and leaves it for them once the window passed: that is `baked` (by a rollback: a new operation).
    ("enter", PHASE_BAKE, ACTION_DEPLOY): EVENT_FLIPPED,
    ("enter", PHASE_BAKE, ACTION_CANARY): EVENT_LAUNCHED,
    ("leave", PHASE_BAKE): EVENT_BAKED,
    ("enter", PHASE_RESTORED): EVENT_RESTORED,  # the old fleet serves again, the new takes no new requests
    ("end", EVENT_ROLLED_BACK): EVENT_SETTLED,  # the rollback's second stage: new group empty, lock released
    ("end", EVENT_SETTLED): EVENT_SETTLED,
    ("end", EVENT_ABORTED): EVENT_ABORTED,  # a deploy or canary undone after its wait failed
    ("end", EVENT_FINALIZED): EVENT_FINALIZED,
    ("end", EVENT_LAUNCHED): EVENT_LAUNCHED,  # init ends when its colour serves (journal result `launched`)
}


def transition(previous, record):
    """What a record write announces, in order: (event, the record it is about) pairs, mostly one, often none.
    `previous` is the record before the write (None: no operation)."""
    if previous is None or (previous.action, previous.started) != (record.action, record.started):
        # A rollback or a finalize taking over a bake ends it early: it did not pass, so no `baked` (the bake's own
        # `then` write announces that, within the deploy or canary, before any finalize starts).
        ends_early = record.action in (ACTION_ROLLBACK, ACTION_FINALIZE)
        left = TRANSITIONS.get(("leave", previous.phase)) if previous and not ends_early else None
        begun = _entered(record) or TRANSITIONS.get(("start", record.action))
        return tuple(pair for pair in ((left, previous), (begun, record)) if pair[0])
    if previous.phase == record.phase:
        return ()  # a renewal, a resumed holder, the ids finalize detaches: no transition
    name = TRANSITIONS.get(("leave", previous.phase)) or _entered(record)
    return ((name, record),) if name else ()


def _entered(record):
    return TRANSITIONS.get(("enter", record.phase, record.action)) or TRANSITIONS.get(("enter", record.phase))


def ended(result):
    """The event the end of an operation announces (its journal result)."""
    return TRANSITIONS.get(("end", result), EVENT_SETTLED)


def event_id(service, record, name):
    """The same for every delivery of one transition (a consumer may dedupe on it)."""
    return hashlib.sha256(f"{service}|{record.action}|{record.started}|{name}".encode()).hexdigest()[:32]


def _parse(stamp):
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def detail(name, service, record, old_version, now, timeline=(), reason=None, operation=None, extra=None):
    """The event's Detail (plain data): who, what, which colours, the phase, why and how long.

    `timeline`: [(phase, ISO stamp)] of the operation so far, ending with the phase it is in; `now`: an aware
    datetime."""
    # From the lock's first write (milliseconds) when the phases are known; the record's `started` has seconds.
    started = _parse(timeline[0][1]) if timeline else _parse(record.started)
    at = now.astimezone(timezone.utc)
    phases = []
    for n, (phase, stamp) in enumerate(timeline):
        begun, until = _parse(stamp), _parse(timeline[n + 1][1]) if n + 1 < len(timeline) else at
        phases.append({"phase": phase, "at": stamp,
                       "duration_s": round((until - begun).total_seconds(), 3) if begun and until else None})
    previous = phases[-2] if len(phases) > 1 else None  # the timeline ends with the phase the record is in
    reason = reason or getattr(record, "reason", None)
    out = {"schema_version": SCHEMA_VERSION, "id": event_id(service, record, name), "event": name,
           "service": service, "action": record.action, "operation": operation,
           "version": record.version, "old_version": old_version,
           "live_color": record.live, "new_color": "green" if record.live == "blue" else "blue",
           "phase": record.phase, "previous_phase": previous["phase"] if previous else None,
           "holder": record.holder, "reason": reason,
           "started": record.started, "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
           "durations": {"elapsed_s": round((at - started).total_seconds(), 3) if started else None,
                         "previous_phase_s": previous["duration_s"] if previous else None,
                         "phases": phases}}
    if name == EVENT_ROLLED_BACK:
        out["by"] = reason or record.holder  # which alarm, when the record says so; else who
    out.update(extra or {})
    return out


class Sinks:
    """Where events go: an EventBridge bus, an SNS topic, JSON lines on stderr; any, all or none of them.

    `put` never raises: a failed delivery is one warning line and one more in `failed`."""

    def __init__(self, events=None, sns=None, bus=None, topic=None, json_lines=False):
        self.events, self.sns, self.bus, self.topic = events, sns, bus, topic
        self.json_lines = json_lines
        self.sent = 0
        self.failed = 0

    @property
    def active(self):
        return bool(self.bus or self.topic or self.json_lines)

    def describe(self):
        where = [f"EventBridge bus {self.bus}"] if self.bus else []
        where += [f"SNS topic {self.topic}"] if self.topic else []
        where += ["JSON lines on stderr"] if self.json_lines else []
        return ", ".join(where) or "nowhere"

    def put(self, name, data):
        envelope = {"source": SOURCE, "detail-type": name, "time": data.get("at"), "detail": data}
        if self.json_lines:
            # sys.stderr as it is now (a test or a caller may have redirected it since the CLI started).
            print(json.dumps(envelope, sort_keys=True, default=str), file=sys.stderr, flush=True)
        if self.bus:
            self._deliver(f"EventBridge bus {self.bus}", name, self.put_events, Entries=[{
                "Source": SOURCE, "DetailType": name, "Detail": json.dumps(data, sort_keys=True, default=str),
                "EventBusName": self.bus}])
        if self.topic:
            params = {"TopicArn": self.topic, "Message": json.dumps(envelope, sort_keys=True, default=str),
                      "Subject": f"bluegreen {data.get('service')}: {name}"[:SUBJECT_MAX],
                      "MessageAttributes": {"event": {"DataType": "String", "StringValue": name},
                                            "service": {"DataType": "String", "StringValue": str(data["service"])}}}
            if self.topic.endswith(".fifo"):
                # A FIFO topic requires a group (one service's events stay in order) and a deduplication id.
                params.update(MessageGroupId=str(data["service"]), MessageDeduplicationId=data["id"])
            self._deliver(f"SNS topic {self.topic}", name, self.publish, **params)

    def _deliver(self, where, name, method, **params):
        try:
            method(**params)
        except (ClientError, BotoCoreError, DeliveryFailed) as exc:
            self.failed += 1
            log.warning("event %s not delivered to %s: %s (the command goes on)", name, where, _reason(exc))
            return
        self.sent += 1

    # -- one method per AWS operation (OPERATIONS) -------------------------------------------------------

    def put_events(self, **params):
        resp = self._call(self.events, "put_events", **params)
        # PutEvents answers 200 with entries that failed (throttled, malformed, not authorised): check them.
        if resp.get("FailedEntryCount"):
            failed = [e for e in resp.get("Entries", []) if e.get("ErrorCode")]
            first = failed[0] if failed else {}
            raise DeliveryFailed(f"PutEvents: {resp['FailedEntryCount']} entry failed: "
                                 f"{first.get('ErrorCode', '?')}: {first.get('ErrorMessage', '')}")
        return resp

    def publish(self, **params):
        return self._call(self.sns, "publish", **params)

    @staticmethod
    def _call(client, method, **params):
        if client is None:
            raise DeliveryFailed(f"{method}: internal error: no client was made")
        return getattr(client, method)(**params)


class DeliveryFailed(Exception):
    """An event the sink did not take (a PutEvents entry that failed)."""


def _reason(exc):
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{exc.operation_name}: {err.get('Code', 'Unknown')}: {err.get('Message', '')}"
    return str(exc)
