"""The bake after a flip (issue 12, part 2): what it watches, when it may start, and whether it fails. No AWS here.

`deploy --bake SECONDS [--alarm NAME]...` (and `canary`) watch, until an absolute deadline recorded in the state
store, the named CloudWatch alarms and the new fleet's health. An alarm in ALARM, or the fleet short of its
capacity healthy beyond the launch wait's replacement budget, fails the bake: a deploy then rolls back, a
canary aborts. These are plain functions over DescribeAlarms records and one group with its target health, so
the refusals and the verdict are unit-tested without AWS; runner.Runner polls, plan.py places the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from agent.contract import TAG_ALARMS

from .errors import ConflictError, UsageError
from .health import FAIL, WAIT, Verdict, healthy_count, lb_keys, lb_label, leaving, state_in

# W2: CloudWatch publishes a period's datapoint, and evaluates the alarm on it, up to about a minute after the
# period ends; a bake shorter than the alarm's window plus this could end before the alarm can fire.
CLOUDWATCH_DELAY_S = 60
# DescribeAlarms takes at most 100 AlarmNames a call.
NAMES_PER_CALL = 100
# `status` says "bake not watched since T" once the watcher's stamp is older than this many poll intervals (the
# watcher stamps every poll), and never sooner than STALE_MIN_S: one slow poll (its describe calls and the
# stamp's own write, each retried by botocore) is not a dead watcher.
STALE_POLLS = 3
STALE_MIN_S = 30.0
FIRING = "ALARM"  # W2: OK and INSUFFICIENT_DATA do not fire


@dataclass(frozen=True)
class Bake:
    """A bake as asked for: its length, the alarms it watches, and the watcher's poll interval (for `status`)."""

    seconds: float
    alarms: tuple[str, ...] = ()
    poll_s: float = 5.0

    def as_state(self):
        """What the operation record holds from the start of the operation (the deadline is added at the flip)."""
        return {"seconds": self.seconds, "alarms": list(self.alarms), "poll_s": self.poll_s}

    @classmethod
    def from_state(cls, state):
        return cls(float(state["seconds"]), tuple(state.get("alarms", ())), float(state.get("poll_s", 5.0)))


def stamp(when):
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def deadline(state, now):
    """The bake's absolute deadline: the recorded one, or SECONDS from `now` (the flip just completed)."""
    return state.get("until") or stamp(now + timedelta(seconds=float(state["seconds"])))


def alarm_names(flagged, groups):
    """The alarms a bake watches: the --alarm flags and both groups' `bluegreen:alarms` tags (comma-separated),
    the union, in a stable order (flags first)."""
    names = list(flagged or ())
    for color in sorted(groups):
        names += [n.strip() for n in groups[color].tags.get(TAG_ALARMS, "").split(",")]
    out = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return out


def batches(names):
    names = list(names)
    return [names[i:i + NAMES_PER_CALL] for i in range(0, len(names), NAMES_PER_CALL)]


def window_s(alarm):
    """Seconds of data an alarm needs before it can fire: Period x EvaluationPeriods; a metric-math alarm's
    period is its queries' longest. None for a composite alarm (it fires on other alarms, which have theirs)."""
    if "AlarmRule" in alarm:
        return None
    periods = [alarm.get("Period") or 0]
    periods += [q.get("Period") or (q.get("MetricStat") or {}).get("Period") or 0 for q in alarm.get("Metrics") or ()]
    return max(periods) * int(alarm.get("EvaluationPeriods") or 1)


def refuse(seconds, names, described):
    """Refuse a bake that cannot work, before anything changes: an alarm name CloudWatch does not know (exit 2),
    an alarm already in ALARM (exit 3: the deploy would roll back at its first poll, W2), a bake too short for
    the slowest alarm to fire (exit 2)."""
    by_name = {a["AlarmName"]: a for a in described}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"CloudWatch has no alarm named {', '.join(unknown)} in this account and Region (from "
                         f"--alarm or the groups' {TAG_ALARMS} tag); check the name")
    firing = [n for n in names if by_name[n].get("StateValue") == FIRING]
    if firing:
        raise ConflictError(f"alarm {', '.join(firing)} is already in ALARM: a bake would roll back at once; deploy "
                            "once it is OK (INSUFFICIENT_DATA does not count as firing)")
    windows = [(window_s(by_name[n]), n) for n in names if window_s(by_name[n]) is not None]
    if windows:
        slowest, name = max(windows)
        need = slowest + CLOUDWATCH_DELAY_S
        if seconds < need:
            raise UsageError(f"--bake {seconds:g} could end before alarm {name} can fire: it needs {slowest:g} s of "
                             f"data (Period x EvaluationPeriods) plus {CLOUDWATCH_DELAY_S} s of CloudWatch delay; "
                             f"bake at least {need:g} s")


def verdict(group, health, alarms, names, budget, seen=frozenset(), capacity=None):
    """(state, detail, reason) of one bake poll: FAIL with the reason to record (`alarm NAME`, `unhealthy
    i-...`) when an alarm is in ALARM or the group is short of its capacity healthy beyond `budget`
    (health.ReplacementBudget, the launch wait's); else WAIT with a one-line detail.

    `capacity`: the group's desired capacity when the bake started (recorded by start-bake). The fleet is held
    to the smaller of it and the desired capacity now: instances a scale-out launched during the bake are not
    healthy yet and are no failure (the copied policies act on the new group during the bake), while a scale-in
    lowers what is owed."""
    states = {a["AlarmName"]: a.get("StateValue") for a in alarms}
    firing = [n for n in names if states.get(n) == FIRING]
    if firing:
        reason = next((a.get("StateReason") for a in alarms if a["AlarmName"] == firing[0]), "") or ""
        return FAIL, (f"alarm {firing[0]} is in ALARM" + (f" ({reason})" if reason else "")), f"alarm {firing[0]}"
    keys = lb_keys(group)
    capacity = group.desired if capacity is None else min(group.desired, capacity)
    good = healthy_count(group, health)
    short = capacity - good
    allowed = budget.allowed(capacity)
    detail = f"{good}/{capacity} of {group.name} healthy"
    quiet = [n for n in names if states.get(n) != FIRING]
    if names:
        gone = [n for n in names if n not in states]
        detail += f", alarms {', '.join(sorted({states.get(n) or 'missing' for n in quiet}))}"
        if gone:
            detail += f" (deleted meanwhile: {', '.join(gone)})"
    if short > allowed:
        bad = [i.id for i in group.instances if leaving(i) or i.lifecycle != "InService"
               or i.health_status == "Unhealthy" or not all(state_in(health, i.id, k) == "healthy" for k in keys)]
        bad += sorted(seen - {i.id for i in group.instances})
        why = ", ".join(_why(i, group, health, keys) for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
        return FAIL, (f"{group.name} has {good} of its capacity {capacity} healthy, more than the budget of "
                      f"{budget.describe(capacity)} short: {why or 'instances missing'}"), \
            "unhealthy " + (",".join(bad) or group.name)
    return WAIT, detail, None


def _why(iid, group, health, keys):
    inst = next((i for i in group.instances if i.id == iid), None)
    if inst is None:
        return f"{iid} left {group.name}"
    if inst.lifecycle != "InService":
        return f"{iid} {inst.lifecycle}"
    if inst.health_status == "Unhealthy":
        return f"{iid} marked Unhealthy by the group"
    key = next(k for k in keys if state_in(health, iid, k) != "healthy")
    return f"{iid} {state_in(health, iid, key)} in {lb_label(key)}"


def status(state, phase, now):
    """What `status` shows of a bake: its deadline, what it watches, and when it was last watched; `stale` once
    no watcher has stamped it for a few poll intervals (a crashed watcher: rerun the deploy to resume)."""
    if not state:
        return None
    out = {"seconds": state.get("seconds"), "alarms": list(state.get("alarms", ())), "until": state.get("until"),
           "watched": state.get("watched"), "stale": False}
    if phase != "bake" or not state.get("until"):
        return out
    since = state.get("watched") or stamp(parse_stamp(state["until"]) - timedelta(seconds=float(state["seconds"])))
    age = (now - parse_stamp(since)).total_seconds()
    out["watched"] = since
    out["stale"] = age > max(STALE_POLLS * float(state.get("poll_s", 5.0)), STALE_MIN_S)
    return out


# When the bake starts, per command: its deadline is this moment plus the bake's length.
STARTS = {"deploy": "when the old instances have left the load balancers",
          "canary": "when the canary instances are healthy"}


def describe(spec, budget, command="deploy"):
    """One line for --dry-run: the bake, its deadline rule and what it watches."""
    alarms = f"alarms {', '.join(spec.alarms)} (ALARM fails it; OK and INSUFFICIENT_DATA do not)" \
        if spec.alarms else "no alarm"
    undo = "rolls back" if command == "deploy" else "removes the canary"
    return (f"bake {spec.seconds:g} s: deadline = {STARTS[command]} + {spec.seconds:g} s, recorded in the state "
            f"store; every {spec.poll_s:g} s it reads {alarms}, and the new instances' target health (short of their "
            f"capacity healthy by more than {_budget_text(budget)}); a failure {undo} at once")


def _budget_text(budget):
    if budget.count is not None:
        return f"{budget.count} instance(s) (--max-replacements)"
    return f"{budget.percent:g}% of it, at least {budget.floor} (--max-replacements)"


def dry_run_data(spec, budget, command="deploy"):
    return {"seconds": spec.seconds, "alarms": list(spec.alarms), "poll_s": spec.poll_s,
            "deadline": f"{STARTS[command]} + {spec.seconds:g} s",
            "budget": _budget_text(budget)}


# The bake's wait kind (steps.BakeStep.verdict): health alone as a Verdict; the runner's bake poll calls
# verdict() above with the alarms it read too.
BAKE = Verdict("bake", lambda group, health, seen, facts: verdict(group, health, (), (), facts.budget, seen)[:2])
