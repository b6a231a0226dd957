"""Is a wait done? Pure verdicts over one observation (a group and its load-balancer health).

Each returns (state, detail): state is "ok", "wait" or "fail"; detail is one line for progress output and
for the timeout error, which must say what was seen last (STYLE.md point 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

OK, WAIT, FAIL, REPLAN = "ok", "wait", "fail", "replan"


@dataclass(frozen=True)
class Verdict:
    """A wait's condition, as botocore's acceptors are (STYLE.md, botocore): a name for output and JSON, and a
    pure function of one observation: (group, health, seen) -> (state, detail). `seen` holds the instance ids
    earlier polls of the same wait saw in the group."""

    kind: str
    check: Callable

    def __call__(self, group, health, seen=frozenset()):
        return self.check(group, health, seen)


def leaving(inst):
    """Terminating (any of its sub-states) or Terminated: the instance is on its way out of the group."""
    return inst.lifecycle.startswith("Terminat")


def lb_label(key):
    kind, ident = key.split(":", 1)
    if kind == "tg":
        # arn:...:targetgroup/NAME/ID -> NAME
        parts = ident.split("/")
        return "target group " + (parts[1] if len(parts) > 2 else ident)
    return "load balancer " + ident


def lb_keys(group):
    return [f"{kind}:{ident}" for kind, ident in group.load_balancers()]


def state_in(health, instance_id, key):
    return (health.get(instance_id) or {}).get(key, "unused")


def healthy_count(group, health):
    """InService instances healthy in every load balancer of the group."""
    keys = lb_keys(group)
    return sum(1 for i in group.in_state("InService")
               if all(state_in(health, i.id, k) == "healthy" for k in keys))


def verdict_healthy(group, health, strict=True, seen=frozenset()):
    """Every instance InService and healthy everywhere, as many as desired.

    strict (deploy, canary): any instance unhealthy in a load balancer, marked Unhealthy by the group, or
    terminated while we wait (Terminating now, or gone since an earlier poll of this wait: `seen`), fails at
    once (the operation then aborts). Not strict (rollback's wait for the
    old fleet): keep waiting, the group replaces what fails, and the deadline decides.
    """
    keys = lb_keys(group)
    if not strict and group.in_state("Standby"):
        # Put back in Standby after the plan was made (a deploy that was taken over finishing its batch):
        # only a new plan returns them to service.
        return REPLAN, f"{len(group.in_state('Standby'))} instances of {group.name} are in Standby again"
    if strict:
        for inst in group.instances:
            if leaving(inst):
                return FAIL, f"instance {inst.id} of {group.name} is {inst.lifecycle} (failed launch or health check)"
            if inst.health_status == "Unhealthy":
                return FAIL, f"instance {inst.id} of {group.name} is marked Unhealthy by the group"
            for key in keys:
                if state_in(health, inst.id, key) == "unhealthy":
                    return FAIL, f"instance {inst.id} of {group.name} is unhealthy in {lb_label(key)}"
        vanished = verdict_vanished(seen, group)
        if vanished:
            return vanished
    good = healthy_count(group, health)
    pending = [i for i in group.instances if i.lifecycle not in ("InService", "Standby")
               and not leaving(i)]
    detail = f"{good}/{group.desired} of {group.name} healthy"
    waiting = []
    for inst in group.in_state("InService"):
        for key in keys:
            state = state_in(health, inst.id, key)
            if state != "healthy":
                waiting.append(f"{inst.id} {state} in {lb_label(key)}")
    if pending:
        waiting += [f"{i.id} {i.lifecycle}" for i in pending[:3]]
    if waiting:
        detail += " (" + ", ".join(waiting[:3]) + (", ..." if len(waiting) > 3 else "") + ")"
    if good >= group.desired and not pending and not group.in_state("Standby"):
        return OK, detail
    return WAIT, detail


def verdict_vanished(seen, group):
    """A new instance seen earlier in this wait has left the group: a failed launch (an ABANDON from its launch
    hook, A6, or a termination) whose Terminating state fell between two polls. None when nothing vanished."""
    gone = sorted(seen - {i.id for i in group.instances})
    if not gone:
        return None
    return FAIL, (f"instance {gone[0]} left {group.name} before turning healthy (failed launch: abandoned by its "
                  "lifecycle hook or terminated)" + (f", and {len(gone) - 1} more" if len(gone) > 1 else ""))


def verdict_deregistered(group, health):
    """The group's instances no longer take new requests: draining or gone (A1, E2).

    An instance stays EnteringStandby while it drains, and only then is Standby; both count here, so a deploy
    does not sit out the deregistration delay (in-flight requests finish on instances that keep running).
    """
    keys = lb_keys(group)
    back = [i.id for i in group.in_state("InService")]
    if back:
        # InService after the plan was made (it was Pending then, or a scale-out slipped in): only a new plan
        # moves it to Standby; waiting would only run into the timeout with it still serving the old version.
        return REPLAN, f"{len(back)} instances of {group.name} are InService and not yet in Standby"
    still = []
    for inst in group.instances:
        if inst.lifecycle not in ("Standby", "EnteringStandby"):
            still.append(f"{inst.id} still {inst.lifecycle}")
            continue
        for key in keys:
            state = state_in(health, inst.id, key)
            if state not in ("draining", "unused"):
                still.append(f"{inst.id} {state} in {lb_label(key)}")
    if still:
        return WAIT, f"{len(still)} still registered: " + ", ".join(still[:3])
    return OK, f"all {len(group.instances)} instances of {group.name} deregistered or draining"


def verdict_drained(group, health):
    """Every instance of the group is in Standby and no longer registered or draining anywhere (E2, E3)."""
    keys = lb_keys(group)
    still = [f"{i.id} {i.lifecycle}" for i in group.instances if i.lifecycle != "Standby"]
    still += [f"{i.id} {state_in(health, i.id, k)} in {lb_label(k)}"
              for i in group.in_state("Standby") for k in keys if state_in(health, i.id, k) != "unused"]
    if still:
        return WAIT, f"{len(still)} not yet drained: " + ", ".join(still[:3])
    return OK, f"all Standby instances of {group.name} drained"


def verdict_settled(group):
    """No instance is between InService and Standby, so the next plan sees where each one is."""
    moving = [i.id for i in group.instances if i.lifecycle == "EnteringStandby"]
    if moving:
        return WAIT, f"{len(moving)} instances of {group.name} still EnteringStandby"
    return OK, f"no instance of {group.name} is EnteringStandby"


def verdict_scaled_in(group):
    """No instance of the group is still terminating from an earlier scale-in (a rollback, an abort)."""
    # Terminated is already gone (a group lists it only for a moment): only Terminating is still to wait for.
    going = [f"{i.id} {i.lifecycle}" for i in group.instances if i.lifecycle.startswith("Terminating")]
    if going:
        return WAIT, f"{len(going)} instances of {group.name} still terminating: " + ", ".join(going[:3])
    return OK, f"no instance of {group.name} is terminating"


def verdict_detached(group):
    """No instance of the group is still Detaching (A3): what finalize detached has left the group."""
    detaching = [i.id for i in group.instances if i.lifecycle.startswith("Detach")]
    if detaching:
        return WAIT, f"{len(detaching)} instances of {group.name} still detaching: " + ", ".join(detaching[:3])
    return OK, f"no instance of {group.name} is detaching"


# The waits a plan can name. Each is the verdict of one kind; the runner calls it on every poll.
HEALTHY = Verdict("healthy", lambda group, health, seen: verdict_healthy(group, health, strict=True, seen=seen))
RESTORED = Verdict("restored", lambda group, health, seen: verdict_healthy(group, health, strict=False))
DEREGISTERED = Verdict("deregistered", lambda group, health, seen: verdict_deregistered(group, health))
DRAINED = Verdict("drained", lambda group, health, seen: verdict_drained(group, health))
SETTLED = Verdict("settled", lambda group, health, seen: verdict_settled(group))
SCALED_IN = Verdict("scaled-in", lambda group, health, seen: verdict_scaled_in(group))
DETACHED = Verdict("detached", lambda group, health, seen: verdict_detached(group))


# ---- rollback's and abort's end state (issue 10: "Rollback done has two stages") ----------------------------


def _retire_blockers(group):
    """Why instances of a group being emptied may never leave it: None, or a REPLAN/FAIL verdict."""
    if group.desired > 0:
        # Scaled up again after the plan was made (a displaced holder's late call): only a new plan empties it.
        return REPLAN, f"{group.name} has desired capacity {group.desired} again"
    staying = [i for i in group.instances if i.protected and not leaving(i)]
    if staying:
        # A14: protected instances survive the scale-in and keep serving; the plan clears protection first.
        return REPLAN, f"{len(staying)} instances of {group.name} are protected from scale-in"
    if "Terminate" in group.suspended and any(not leaving(i) for i in group.instances):
        # A14, A8: with Terminate suspended nothing is scaled in; reporting success would leave them serving.
        return FAIL, (f"Terminate is suspended on {group.name}, so its instances are not scaled in and keep "
                      f"serving; resume it (aws autoscaling resume-processes --auto-scaling-group-name "
                      f"{group.name} --scaling-processes Terminate) and rerun the command")
    return None


def verdict_out_of_traffic(group, health):
    """The first stage of rollback done (`restored`), for the group being emptied: none of its instances takes
    new requests in any load balancer: each is draining or unused everywhere (E2, E3), or gone."""
    blocked = _retire_blockers(group)
    if blocked:
        return blocked
    keys = lb_keys(group)
    serving = [f"{i.id} {state_in(health, i.id, k)} in {lb_label(k)}" for i in group.instances for k in keys
               if state_in(health, i.id, k) not in ("draining", "unused")]
    if serving:
        return WAIT, f"{len(serving)} still take requests: " + ", ".join(serving[:3])
    return OK, f"no instance of {group.name} takes new requests"


def verdict_emptied(group, health):
    """The second stage (`settled`), for the group being emptied: desired 0 and no instance left at all."""
    blocked = _retire_blockers(group)
    if blocked:
        return blocked
    if group.instances:
        left = [f"{i.id} {i.lifecycle}" for i in group.instances]
        return WAIT, f"{len(left)} instances of {group.name} still there: " + ", ".join(left[:3])
    return OK, f"{group.name} is empty"


OUT_OF_TRAFFIC = Verdict("out-of-traffic", lambda group, health, seen: verdict_out_of_traffic(group, health))
EMPTIED = Verdict("emptied", lambda group, health, seen: verdict_emptied(group, health))
