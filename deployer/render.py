"""What the CLI prints on stdout: the status of a service, plans, and summaries (text or JSON)."""

from __future__ import annotations

import json

from agent import contract

from . import bake
from .doctor import rollback_now_lines
from .health import lb_keys, state_in
from .model import COLORS, worst_health
from .steps import WaitStep


def status_data(snap, now=None):
    """`now` (the wall clock): whether a bake in progress is still watched ("bake not watched since")."""
    groups = {}
    for color in COLORS:
        group = snap.groups[color]
        keys = lb_keys(group)
        instances = []
        for inst in group.instances:
            per_lb = {k: state_in(snap.health or {}, inst.id, k) for k in keys}
            instances.append({"id": inst.id, "lifecycle": inst.lifecycle,
                              "health": worst_health(list(per_lb.values())) if keys else "no load balancer",
                              "group_health": inst.health_status, "load_balancers": per_lb})
        groups[color] = {"name": group.name, "version": group.version, "digest": group.digest,
                         "bootstrap": group.bootstrap, "min": group.min,
                         "desired": group.desired, "max": group.max, "instances": instances,
                         "suspended_processes": list(group.suspended),
                         "target_groups": list(group.target_groups), "classic_load_balancers": list(group.classic_lbs)}
    rec = snap.record
    warning = None
    if rec is None:
        waiting = {snap.groups[c].name: len(snap.groups[c].in_state("Standby", "EnteringStandby")) for c in COLORS}
        if any(waiting.values()):
            # No record, yet instances in Standby: an apply wiped the state, or it was lost (X3). They are billed
            # and wait for nothing; rollback works from these facts (deployer-audit finding 2).
            warning = ("no operation is recorded, but " + ", ".join(f"{n} instances of {g}" for g, n in
                       waiting.items() if n) + " are in Standby: `bluegreen rollback " + snap.service +
                       "` returns them to service")
    baking = bake.status(rec.bake, rec.phase, now) if rec is not None and now is not None else None
    return {"schema_version": contract.SCHEMA_VERSION, "service": snap.service, "live": snap.live, "groups": groups,
            "operation": rec.as_json() if rec else None, "state_store": snap.store_url,
            "bake": baking if rec is not None and rec.phase == contract.PHASE_BAKE else None,
            "lease_live": snap.lease_live if rec else None, "drift": snap.drift, "warning": warning}


def status_text(data):
    op = data["operation"]
    lines = [f"service {data['service']}: live {data['live'] or '(undetermined)'}"]
    if op:
        lines.append(f"operation: {op['action']} {op['version']}, phase {op['phase']}, since {op['started']} "
                     f"by {op['holder']}")
        baking = data.get("bake")
        if baking and baking.get("until"):
            lines.append(f"bake until {baking['until']}, watching "
                         + (f"alarms {', '.join(baking['alarms'])} and " if baking["alarms"] else "")
                         + "the new fleet's health")
            if baking["stale"]:
                lines.append(f"bake not watched since {baking['watched']}: rerun `bluegreen {op['action']} "
                             f"{data['service']} {op['version']}` to resume the watch, or `bluegreen rollback` / "
                             "`bluegreen finalize`")
    else:
        lines.append("operation: none")
    if data.get("rollback_now"):
        lines += rollback_now_lines(data["rollback_now"])
    lines.append(f"state store: {data['state_store'] or 'none (the lock is the groups tags: no compare-and-set)'}")
    if data.get("drift"):
        lines.append(f"drift: {data['drift']}")
    if data.get("warning"):
        lines.append(f"warning: {data['warning']}")
    lines.append(f"{'COLOR':6} {'GROUP':28} {'VERSION':12} {'MIN/DES/MAX':12} SUSPENDED")
    for color in COLORS:
        g = data["groups"][color]
        sizes = f"{g['min']}/{g['desired']}/{g['max']}"
        marker = "*" if color == data["live"] else " "
        lines.append(f"{color + marker:6} {g['name']:28} {g['version'] or '-':12} {sizes:12} "
                     f"{','.join(g['suspended_processes']) or '-'}")
        # Issue 11: each group runs its own bundle and image digest (the new instances of that group read them).
        lines.append(f"    {color} bundle {g.get('bootstrap') or '-'}, digest {g.get('digest') or '- (pull by tag)'}")
        for inst in g["instances"]:
            workers = f"  workers {inst['workers']}" if inst.get("workers") else ""
            lines.append(f"    {inst['id']:22} {inst['lifecycle']:20} {inst['health']}{workers}")
    return "\n".join(lines)


def history_text(service, entries):
    if not entries:
        return f"{service}: no operation journaled yet"
    lines = [f"{'ENDED':24} {'ACTION':9} {'RESULT':9} {'VERSION':12} {'TOOK':>8}  BY"]
    for e in entries:
        took = sum(p.get("duration_s", 0) for p in e.get("phases", []))
        lines.append(f"{e.get('ended', '?'):24} {e.get('action') or '?':9} {e.get('result') or '?':9} "
                     f"{e.get('version') or '-':12} {took:7.1f}s  {e.get('holder', '?')}")
    return "\n".join(lines)


def plan_data(steps):
    return [s.as_json() for s in steps]


def plan_text(title, steps):
    if not steps:
        return f"{title}: nothing to do"
    lines = [f"{title} (dry run: nothing changed):"]
    for n, step in enumerate(steps, 1):
        lines.append(f"{n:3}. {step.name}: {step.summary}")
        waits = isinstance(step, WaitStep)
        if waits:
            lines.append(f"       until {step.verdict.kind}" + (", else abort" if step.on_failure == "abort" else ""))
        for call in step.calls:
            lines.append(f"       {'poll ' if waits else ''}{call.describe()}")
        if waits and step.then is not None:
            lines.append(f"       then {step.then.describe()}")
    return "\n".join(lines)


def dumps(data):
    return json.dumps(data, indent=2, sort_keys=True, default=str)
