"""Is a wait done? Pure verdicts over one observation (a group and its load-balancer health).

Each returns (state, detail): state is "ok", "wait" or "fail"; detail is one line for progress output and
for the timeout error, which must say what was seen last (STYLE.md point 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from agent.contract import TAG_WORKERS, WORKERS_RUNNING, WORKERS_STOPPED

OK, WAIT, FAIL, REPLAN = "ok", "wait", "fail", "replan"


@dataclass(frozen=True)
class Verdict:
    """A wait's condition, as botocore's acceptors are (STYLE.md, botocore): a name for output and JSON, and a
    pure function of one observation: (group, health, seen, facts) -> (state, detail). `seen` holds the instance
    ids earlier polls of the same wait saw in the group; `facts` (WaitFacts) what the runner read beyond them.
    `facts_needed`: the launch wait and the gate read versions, hooks and activities (runner.observe)."""

    kind: str
    check: Callable
    facts_needed: bool = False
    # The workers waits (issue 16): each poll also reads the watched group's `bluegreen:workers` tags, and the
    # EC2 state of the instances whose tag is not yet `workers_needed` (runner.observe's `workers`).
    workers_needed: str | None = None

    def __call__(self, group, health, seen=frozenset(), facts=None):
        return self.check(group, health, seen, facts if facts is not None else WaitFacts())


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
    """InService instances healthy in every load balancer of the group, and not marked Unhealthy by the group
    (A20: those are about to be replaced, whatever their targets still say)."""
    keys = lb_keys(group)
    return sum(1 for i in group.in_state("InService") if i.health_status != "Unhealthy"
               and all(state_in(health, i.id, k) == "healthy" for k in keys))


def out_of_lbs(health, inst, keys):
    """Whether `inst` is out of one of the load balancers `keys`: draining or unused there (E2)."""
    return any(state_in(health, inst.id, k) in ("draining", "unused") for k in keys)


def _serving(group, health, keys, aside):
    """InService instances healthy everywhere (healthy_count) plus those in or entering Standby healthy everywhere
    (registered directly by a rollback during the drain, E8)."""
    return healthy_count(group, health) + sum(
        1 for i in aside if all(state_in(health, i.id, k) == "healthy" for k in keys))


def _not_yet(group, health, keys, aside, pending_shown=None):
    """One line's worth of what a rollback's wait still waits for: targets not healthy, instances not arrived
    (at most `pending_shown` of those counted toward the "...")."""
    waiting = [f"{i.id} {state_in(health, i.id, k)} in {lb_label(k)}" for i in group.in_state("InService") + aside
               for k in keys if state_in(health, i.id, k) != "healthy"]
    waiting += [f"{i.id} {i.lifecycle}" for i in group.instances
                if i.lifecycle not in ("InService", "Standby", "EnteringStandby") and not leaving(i)][:pending_shown]
    return " (" + ", ".join(waiting[:3]) + (", ..." if len(waiting) > 3 else "") + ")" if waiting else ""


def verdict_healthy(group, health):
    """Rollback's wait for the old fleet: every instance serving again, healthy in every load balancer, as many
    as desired plus those still in or on their way to Standby. Nothing fails it: the group replaces what fails,
    and the deadline decides. (The launch wait, which may abort, is verdict_launch.)

    E8: an instance still EnteringStandby (draining after the flip) that the rollback registered directly, or one
    that reached Standby since, serves once it is healthy everywhere; it returns to InService in the `settled`
    stage. One that is out of a load balancer (draining or unused) was put aside again after the plan was made
    (a deploy that was taken over finishing its batch): only a new plan registers it or returns it to service."""
    keys = lb_keys(group)
    aside = group.in_state("Standby", "EnteringStandby")
    dropped = [i for i in aside if out_of_lbs(health, i, keys)]
    if dropped:
        return REPLAN, (f"{len(dropped)} instances of {group.name} are in {dropped[0].lifecycle} and out of the "
                        "load balancers")
    good = _serving(group, health, keys, aside)
    want = group.desired + len(aside)
    pending = [i for i in group.instances if i.lifecycle not in ("InService", "Standby", "EnteringStandby")
               and not leaving(i)]
    detail = f"{good}/{want} of {group.name} healthy"
    if aside:
        detail += f" ({len(aside)} registered directly while in or entering Standby, E8)"
    detail += _not_yet(group, health, keys, aside, pending_shown=3)
    if good >= want and not pending:
        return OK, detail
    return WAIT, detail


def verdict_serving(group, health, want, hold):
    """Rollback's wait while old instances still drain after the flip (E8): at least `want` instances serve,
    healthy in every load balancer: InService ones (not marked Unhealthy) and those in or entering Standby that
    the rollback registered directly. One that is out of a load balancer (its registration not visible yet, its
    EC2 instance terminated, or taken out again) is not counted, and not waited for: the group's desired capacity
    (`hold`, set by the plan) launches what is missing. Desired below `hold` means a late EnterStandby took one
    out of it after the plan was made: only a new plan registers it again and restores the hold. Pending
    launches are not waited for once `want` serve."""
    if group.desired < hold:
        return REPLAN, f"{group.name} has desired capacity {group.desired}, below the {hold} the rollback set"
    keys = lb_keys(group)
    aside = group.in_state("Standby", "EnteringStandby")
    good = _serving(group, health, keys, aside)
    detail = (f"{good}/{want} of {group.name} healthy ({len(aside)} in or entering Standby, registered directly, E8)"
              + _not_yet(group, health, keys, aside))
    return (OK if good >= want else WAIT), detail


def serving(want, hold):
    """The `restored` wait of a rollback during the drain (verdict_serving), for this plan's figures."""
    return Verdict("restored", lambda group, health, seen, facts: verdict_serving(group, health, want, hold))


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


# ---- the launch wait (deploy, canary) and the Standby gate ------------------------------------------

# A target in one of these states is unhealthy (E5): `unhealthy.draining` is an NLB's unhealthy target on its
# way out, not one that serves.
UNHEALTHY_STATES = ("unhealthy", "unhealthy.draining")
# States that no waiting fixes, named by their reason code (E5, audit finding 19): `unavailable` means health
# checks are disabled (or an internal error), `Target.NotInUse` that the target group is in no listener rule
# or the instance's zone is not enabled on the load balancer. Both end the wait at once with the reason.
MISCONFIGURED = {"unavailable": "health checks are disabled or unavailable for the target group",
                 "Target.NotInUse": "the target group is used by no listener, or the instance's zone is not enabled "
                                    "on the load balancer"}


@dataclass(frozen=True)
class ReplacementBudget:
    """How many new instances may fail and be replaced during a wait before the operation gives up.

    One budget for the launch wait and the bake (issue 10, "one replacement budget"): a count (`count`) or a
    share of the desired capacity (`percent`, rounded up). An instance counts once it is gone since an earlier
    poll, Terminating, marked Unhealthy by its group, or unhealthy in a load balancer past its grace period.

    The default is max(2, 10%): AWS replaces instances for ordinary reasons (a Spot reclaim, AZRebalance's launch
    then terminate, an `Elb.InternalError`, A19, E5), so even a 3-instance fleet may see one or two; at 1,000
    instances a flat count would be hit by chance alone, hence the share. A broken version fails EVERY new
    instance, far past 10%, so it still aborts within a health-check run, not after the timeout.
    """

    count: int | None = None
    percent: float | None = None
    floor: int = 0

    @classmethod
    def parse(cls, text):
        """'N' or 'N%' (the --max-replacements flag); ValueError on anything else."""
        text = str(text).strip()
        if text.endswith("%"):
            value = float(text[:-1])
            if not math.isfinite(value) or not 0 <= value <= 100:
                raise ValueError(text)
            return cls(percent=value)
        value = int(text)
        if value < 0:
            raise ValueError(text)
        return cls(count=value)

    def allowed(self, desired):
        if self.count is not None:
            return self.count
        return max(self.floor, math.ceil((self.percent or 0) * max(desired, 0) / 100 - 1e-9))

    def describe(self, desired):
        what = f"{self.count}" if self.count is not None else f"{self.percent:g}% of {desired}"
        if self.count is None and self.floor and self.allowed(desired) == self.floor:
            what += f", at least {self.floor}"
        return f"{self.allowed(desired)} ({what}, --max-replacements)"


DEFAULT_BUDGET = ReplacementBudget(percent=10, floor=2)


@dataclass(frozen=True)
class WaitFacts:
    """What a launch wait or gate knows beyond one group and its health, read by the runner (runner.observe).

    `running`: instance id -> the version its `bluegreen:running` tag reports, "" when it reports none yet (the
    agent has not passed its health check), None when the tag is absent (an AMI baked before the tag existed);
    ids not in the map were not read. `age`: seconds since the wait first saw the instance (a lower bound on
    the time since its launch). `hooked`: the group has a launch lifecycle hook (None: unknown, taken as no).
    `activities`: the group's recent scaling activities (A15), newest first, or None when not read.
    `reasons`: instance id -> {lb key: reason code}. `old`: the group being replaced (the gate only);
    `cross_zone_off`: some load balancer of the pair routes within a zone only (E6).
    """

    version: str | None = None
    budget: ReplacementBudget = DEFAULT_BUDGET
    running: dict = field(default_factory=dict)
    age: dict = field(default_factory=dict)
    hooked: bool | None = None
    activities: list | None = None
    reasons: dict = field(default_factory=dict)
    old: object | None = None
    cross_zone_off: bool = False
    healthy_once: frozenset = frozenset()  # ids seen healthy everywhere earlier in the wait
    grace: bool = True  # False for the gate: its instances passed the launch wait already
    # The workers waits (issue 16): instance id -> its `bluegreen:workers` tag (absent: no tag), and the EC2 state
    # of those whose tag is not yet the wanted value (absent: not read, taken as running).
    workers: dict = field(default_factory=dict)
    ec2_states: dict = field(default_factory=dict)


def counts_as_version(facts, inst_id):
    """Whether a healthy instance may count for `facts.version` (finding 7): it reports that version, or reports
    nothing at all (an agent older than the tag: gated on health alone, with one warning, see unverified())."""
    if facts.version is None:
        return True
    if inst_id not in facts.running:
        return False
    reported = facts.running[inst_id]
    return reported is None or reported == facts.version


def unverified(group, facts):
    """Instances with no `bluegreen:running` tag at all: counted on health alone (the runner warns once each)."""
    return sorted(i.id for i in group.instances if facts.version is not None and i.id in facts.running
                  and facts.running[i.id] is None)


def _in_grace(inst, group, facts):
    """E5, A20: without a launch hook the instance is registered while it still boots, so `unhealthy` before its
    first `healthy` is normal during the group's HealthCheckGracePeriod. Not after a first `healthy`, and not at
    the gate (its instances were all healthy once): then it is a failure."""
    if facts.hooked or not facts.grace or inst.id in facts.healthy_once:
        return False
    return facts.age.get(inst.id, 0.0) < group.grace_period


def replacements(group, health, seen, facts):
    """(ids counted against the budget, tolerated ids with why, a misconfiguration or None)."""
    keys = lb_keys(group)
    counted = {gid: f"left {group.name} before turning healthy"
               for gid in sorted(seen - {i.id for i in group.instances})}
    tolerated = {}
    for inst in group.instances:
        if leaving(inst):
            counted[inst.id] = inst.lifecycle
            continue
        if inst.health_status == "Unhealthy":
            counted[inst.id] = "marked Unhealthy by the group"
            continue
        for key in keys:
            state = state_in(health, inst.id, key)
            reason = (facts.reasons.get(inst.id) or {}).get(key)
            if state in MISCONFIGURED or reason in MISCONFIGURED:
                why = MISCONFIGURED.get(reason) or MISCONFIGURED[state]
                return counted, tolerated, (f"instance {inst.id} of {group.name} is {state}"
                                            f"{' (' + reason + ')' if reason else ''} in {lb_label(key)}: {why}")
            if state in UNHEALTHY_STATES:
                if _in_grace(inst, group, facts):
                    tolerated[inst.id] = f"{state} in {lb_label(key)}, within the {group.grace_period}s grace period"
                else:
                    counted[inst.id] = f"{state} in {lb_label(key)}{' (' + reason + ')' if reason else ''}"
                break
    return counted, tolerated, None


def failed_activity(facts):
    """(the StatusMessage of the newest Failed launch among the recent activities or None, whether a launch is
    still in progress, pending or waiting for a hook), A15."""
    activities = facts.activities or []
    failed = next((a for a in activities if a.get("StatusCode") == "Failed"), None)
    going = any(a.get("StatusCode") not in ("Successful", "Failed", "Cancelled") for a in activities)
    if failed is None:
        return None, going
    return failed.get("StatusMessage") or failed.get("Description") or "a launch failed", going


def verdict_launch(group, health, seen, facts):
    """The launch wait (deploy, canary): every desired instance InService, healthy everywhere and running the
    version; replacements tolerated within the budget while the group keeps launching them (finding 11)."""
    counted, tolerated, misconfigured = replacements(group, health, seen, facts)
    if misconfigured:
        return FAIL, misconfigured
    allowed = facts.budget.allowed(group.desired)
    keys = lb_keys(group)
    any_healthy = any(all(state_in(health, i.id, k) == "healthy" for k in keys) for i in group.in_state("InService"))
    if len(counted) > allowed or (counted and len(counted) >= max(2, group.desired) and not any_healthy):
        # Past the budget; or as many failures as the whole fleet with none healthy: a broken version, however
        # large the budget is next to a small fleet (the default's floor of 2 at 2 instances). Never at the first
        # failure, though: a 1-instance canary or service gets one replacement, as any fleet does.
        first = next(iter(counted.items()))
        limit = (f"more than the budget of {facts.budget.describe(group.desired)}" if len(counted) > allowed
                 else f"as many as its capacity {group.desired} (at least 2), none healthy")
        return FAIL, (f"{len(counted)} new instances of {group.name} failed or were replaced, {limit}: "
                      f"{first[0]} {first[1]}" + (f", and {len(counted) - 1} more" if len(counted) > 1 else ""))
    # A20: an instance its group marked Unhealthy is about to be terminated, whatever its targets still say.
    good = [i for i in group.in_state("InService") if i.health_status != "Unhealthy"
            and all(state_in(health, i.id, k) == "healthy" for k in keys) and counts_as_version(facts, i.id)]
    pending = [i for i in group.instances if i.lifecycle not in ("InService", "Standby") and not leaving(i)]
    arriving = [i for i in group.instances if not leaving(i) and i.health_status != "Unhealthy"]
    reason, going = failed_activity(facts)
    failures = [a for a in facts.activities or () if a.get("StatusCode") == "Failed"]
    newest_failed = bool(failures) and facts.activities[0] is failures[0]
    if len(arriving) < group.desired and not pending and not going and newest_failed and len(failures) >= 2:
        # A15: the group retries a failed launch on its own, often in another zone. Once that retry has failed
        # too (two failed launches in this wait, the newest activity one of them) and nothing is launching, the
        # reason is known: say it now rather than after --timeout.
        return FAIL, (f"{group.name} cannot launch its capacity ({len(arriving)}/{group.desired} instances): "
                      f"{reason}")
    detail = f"{len(good)}/{group.desired} of {group.name} healthy"
    if facts.version is not None:
        detail += f" on {facts.version}"
    waiting = []
    for inst in group.in_state("InService"):
        if inst.id in tolerated:
            waiting.append(f"{inst.id} {tolerated[inst.id]}")
            continue
        for key in keys:
            state = state_in(health, inst.id, key)
            if state != "healthy" and inst.id not in counted:
                waiting.append(f"{inst.id} {state} in {lb_label(key)}")
                break
        else:
            if not counts_as_version(facts, inst.id) and inst.id not in counted:
                reported = facts.running.get(inst.id, "?")
                waiting.append(f"{inst.id} runs {reported or 'no version yet'}")
    waiting += [f"{i.id} {i.lifecycle}" for i in pending[:3]]
    notes = ([f"{len(counted)}/{allowed} replaced"] if counted else []) + \
        ([f"last failed launch: {reason}"] if reason else [])
    if waiting or notes:
        detail += " (" + ", ".join(notes + waiting[:3]) + (", ..." if len(waiting) > 3 else "") + ")"
    if len(good) >= group.desired and not pending and not group.in_state("Standby"):
        return OK, detail
    return WAIT, detail


NLB_PROTOCOLS = ("TCP", "UDP", "TLS", "TCP_UDP")


def cross_zone_off(target_groups, classic):
    """Whether any load balancer of the pair routes each zone's traffic to that zone's targets only (E6).

    `target_groups`: (target group attributes, its protocol, its load balancer's attributes or None) per target
    group; `classic`: DescribeLoadBalancerAttributes of each Classic ELB. A target group's
    `load_balancing.cross_zone.enabled` is true, false, or `use_load_balancer_configuration`: then an ALB's is
    always on, an NLB's follows its load balancer's attribute, off by default (E6). Classic: CrossZoneLoadBalancing,
    off by default when made through the API (E6)."""
    for attrs, protocol, lb_attrs in target_groups:
        value = attrs.get("load_balancing.cross_zone.enabled", "use_load_balancer_configuration")
        if value == "false":
            return True
        if value != "true" and protocol in NLB_PROTOCOLS and \
                (lb_attrs or {}).get("load_balancing.cross_zone.enabled", "false") != "true":
            return True
    return any(not (c.get("CrossZoneLoadBalancing") or {}).get("Enabled", False) for c in classic)


def zone_needs(old, want, cross_zone_off):
    """Per zone the old fleet serves: how many new healthy instances the flip needs there (finding 6, E6).

    Always at least 1: a zone left with no target answers 503 (ALB, cross-zone off) or leaves DNS with its
    clients' cached addresses failing (NLB). With cross-zone load balancing off anywhere on the pair, each zone's
    node sends its share of the traffic to its own zone's targets only, so the zone also needs the share a
    balanced group of `want` instances gives it, floor(want / zones): what AWS's AZ balancing puts in every zone
    when capacity is there (A19), so an even spread always passes and an uneven-but-fair one is not blocked.
    """
    zones = sorted({i.zone for i in old.in_state("InService") if i.zone})
    share = want // len(zones) if zones and cross_zone_off else 0
    return {z: max(1, share) for z in zones}


def verdict_gate(group, health, seen, facts):
    """Right before Standby: the launch verdict, and no zone the old fleet serves left short (finding 6)."""
    state, detail = verdict_launch(group, health, seen, facts)
    if state != OK or facts.old is None:
        return state, detail
    keys = lb_keys(group)
    have = {}
    for inst in group.in_state("InService"):
        if inst.health_status != "Unhealthy" and all(state_in(health, inst.id, k) == "healthy" for k in keys) \
                and counts_as_version(facts, inst.id):
            have[inst.zone] = have.get(inst.zone, 0) + 1
    needs = zone_needs(facts.old, group.desired, facts.cross_zone_off)
    short = [(z, have.get(z, 0), n) for z, n in needs.items() if have.get(z, 0) < n]
    if short:
        zone, got, need = short[0]
        served = len(facts.old.in_state("InService"))
        return WAIT, (f"zone {zone} would be left with {got} healthy {facts.version or 'new'} instances of "
                      f"{group.name}, it needs {need} ({served} of {facts.old.name} serve "
                      f"{len(needs)} zones{', cross-zone off' if facts.cross_zone_off else ''})"
                      + (f"; and {len(short) - 1} more zones" if len(short) > 1 else ""))
    return OK, detail


# The waits a plan can name. Each is the verdict of one kind; the runner calls it on every poll.
HEALTHY = Verdict("healthy", verdict_launch, facts_needed=True)
GATE = Verdict("gate", verdict_gate, facts_needed=True)
RESTORED = Verdict("restored", lambda group, health, seen, facts: verdict_healthy(group, health))
DEREGISTERED = Verdict("deregistered", lambda group, health, seen, facts: verdict_deregistered(group, health))
DRAINED = Verdict("drained", lambda group, health, seen, facts: verdict_drained(group, health))
SETTLED = Verdict("settled", lambda group, health, seen, facts: verdict_settled(group))
SCALED_IN = Verdict("scaled-in", lambda group, health, seen, facts: verdict_scaled_in(group))
DETACHED = Verdict("detached", lambda group, health, seen, facts: verdict_detached(group))


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


OUT_OF_TRAFFIC = Verdict("out-of-traffic", lambda group, health, seen, facts: verdict_out_of_traffic(group, health))
EMPTIED = Verdict("emptied", lambda group, health, seen, facts: verdict_emptied(group, health))


# ---- the workers' end states (issue 16) ---------------------------------------------------------------------


def verdict_workers(group, facts, want):
    """The marked services (`bluegreen.when: in-service`, docs/agent.md) of `group` as a step leaves them: stopped
    on every instance in or entering Standby once the flip took them out of the load balancers, running on every
    InService instance once a rollback returned them. Read from each instance's `bluegreen:workers` tag, which
    the instance's `bluegreen-agent watch` keeps current (I2: it follows IMDS's target lifecycle state).

    An instance without the tag is not waited for: its bundle marks no service, or its agent predates the tag.
    One that EC2 no longer runs is not either (A4: a group lists an instance terminated in Standby for good).
    X1: a tag just written may read stale for a moment; the wait only ever polls again on what it reads."""
    states = ("Standby", "EnteringStandby") if want == WORKERS_STOPPED else ("InService",)
    late = [i for i in group.in_state(*states) if facts.workers.get(i.id) not in (None, want)
            and facts.ec2_states.get(i.id, "running") == "running"]
    if late:
        shown = ", ".join(f"{i.id} {facts.workers[i.id]}" for i in late[:3])
        return WAIT, (f"{len(late)} {'/'.join(states)} instances of {group.name} do not report workers {want} yet: "
                      f"{shown} (their bluegreen-agent-watch unit keeps the {TAG_WORKERS} tag current: "
                      "`systemctl status bluegreen-agent-watch` there; to stop waiting for an instance, delete its "
                      f"tag: aws ec2 delete-tags --resources ID --tags Key={TAG_WORKERS}"
                      + (", accepting that its workers may still consume)" if want == WORKERS_STOPPED else ")"))
    tagged = sum(1 for i in group.in_state(*states) if i.id in facts.workers)
    if not tagged:
        return OK, f"no instance of {group.name} runs marked services"
    return OK, f"the workers of {tagged} instances of {group.name} are {want}"


STOPPED_WORKERS = Verdict("workers-stopped", lambda group, health, seen, facts: verdict_workers(
    group, facts, WORKERS_STOPPED), workers_needed=WORKERS_STOPPED)
RUNNING_WORKERS = Verdict("workers-running", lambda group, health, seen, facts: verdict_workers(
    group, facts, WORKERS_RUNNING), workers_needed=WORKERS_RUNNING)
