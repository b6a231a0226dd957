"""Scheduled actions a group missed while its `ScheduledActions` process was held (A8, deployer-audit finding 12).

AWS: "When you resume ScheduledActions, Amazon EC2 Auto Scaling only considers scheduled actions whose scheduled
time has not yet passed" (user guide, "Suspend and resume processes"). A rollback returns the old group after a
Standby window in which the deployer held ScheduledActions, so a morning "min 20" would be lost: it applies the
effect of the latest action whose time fell inside the window instead. Pure functions over DescribeScheduledActions
records; no AWS here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# Recurring actions are scanned minute by minute; a window longer than this is scanned over its last week only.
SCAN_LIMIT = timedelta(days=7)
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field(text, lo, hi):
    """The values one cron field allows, or None when it is not understood (names, `L`, `#`, `?`)."""
    values = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if base in ("*", "?"):
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            if not (a.isdigit() and b.isdigit()):
                return None
            first, last = int(a), int(b)
        elif base.isdigit():
            first = last = int(base)
            if step:
                last = hi
        else:
            return None
        if step and not step.isdigit():
            return None
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


def _cron(expr):
    fields = expr.split()
    if len(fields) != 5:
        return None
    parsed = [_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES)]
    if any(p is None for p in parsed):
        return None
    if 7 in parsed[4]:
        parsed[4].add(0)  # Sunday is 0 or 7
    return parsed, fields[2] not in ("*", "?"), fields[4] not in ("*", "?")


def _matches(cron, at):
    (minutes, hours, doms, months, dows), dom_set, dow_set = cron
    if at.minute not in minutes or at.hour not in hours or at.month not in months:
        return False
    dom, dow = at.day in doms, (at.isoweekday() % 7) in dows
    # cron: with both day fields restricted, either may match
    return (dom or dow) if (dom_set and dow_set) else (dom and dow)


def _utc(value):
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def last_time_in(action, start, end):
    """The latest time in (start, end] at which `action` was due, or None. Recurring actions in a time zone
    other than UTC are not evaluated (None): the standard library has no cron, and this one is UTC only."""
    first, until = _utc(action.get("StartTime")), _utc(action.get("EndTime"))
    recurrence = action.get("Recurrence")
    if not recurrence:
        return first if first is not None and start < first <= end else None
    if action.get("TimeZone") not in (None, "", "UTC", "Etc/UTC"):
        return None
    cron = _cron(recurrence)
    if cron is None:
        return None
    latest = min(end, until) if until else end
    lowest = max(start, first) if first else start
    lowest = max(lowest, latest - SCAN_LIMIT)
    at = latest.replace(second=0, microsecond=0)
    while at > lowest:
        if _matches(cron, at):
            return at
        at -= timedelta(minutes=1)
    return None


def missed_action(actions, start, end):
    """(time, action) of the latest scheduled action due inside (start, end], or None."""
    due = [(t, a) for a in actions for t in [last_time_in(a, start, end)] if t is not None]
    return max(due, key=lambda item: item[0]) if due else None


def apply_action(sizes, action):
    """(min, desired, max) with the action's MinSize, DesiredCapacity and MaxSize where it sets them."""
    lo, want, hi = sizes
    lo = action.get("MinSize", lo) if action.get("MinSize") is not None else lo
    hi = action.get("MaxSize", hi) if action.get("MaxSize") is not None else hi
    want = action["DesiredCapacity"] if action.get("DesiredCapacity") is not None else want
    return (lo, max(lo, min(want, hi)), hi)


def parse_stamp(stamp):
    """A record's `started` (2026-11-26T11:00:00Z), or None."""
    return _utc(stamp) if stamp else None
