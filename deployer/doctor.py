"""`bluegreen doctor SERVICE`: every pre-flight check, the doctor's own checks and the expected times, read only.

The same Facts and the same check functions as pre-flight (preflight.py); doctor adds what helps someone who sets
up a pair: HealthCheckType ELB, a launch hook with a sane heartbeat, cross-zone settings, the IAM actions the
deployer calls, and the times the pair's own settings imply.
"""

from __future__ import annotations

from datetime import datetime

from agent import contract
from agent.contract import TAG_LIFECYCLE_HOOK
from agent.settings import LOCAL_DEFAULTS

from .model import COLORS
from .preflight import (
    EXIT_STANDBY_S,
    FAIL,
    LAUNCH_S,
    LAUNCHING,
    MAX_DRAIN_S,
    PASS,
    WARN,
    Check,
    drains,
    refusal_checks,
)

# Every AWS action the deployer calls (iam/deployer-policy.json grants exactly these:
# tests/deployer/test_deployer_doctor.py holds the two to each other, and test_deployer_iam.py the policy to the code).
IAM_ACTIONS = (
    "autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags", "autoscaling:DeletePolicy",
    "autoscaling:DeleteScheduledAction", "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeInstanceRefreshes", "autoscaling:DescribeLifecycleHooks", "autoscaling:DescribePolicies",
    "autoscaling:DescribeScalingActivities", "autoscaling:DescribeScheduledActions", "autoscaling:DescribeWarmPool",
    "autoscaling:DetachInstances", "autoscaling:EnterStandby", "autoscaling:ExitStandby",
    "autoscaling:PutScalingPolicy", "autoscaling:PutScheduledUpdateGroupAction", "autoscaling:ResumeProcesses",
    "autoscaling:SetInstanceProtection", "autoscaling:SuspendProcesses", "autoscaling:UpdateAutoScalingGroup",
    "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm",
    "ec2:CreateTags", "ec2:DescribeInstances", "ec2:DescribeTags", "ec2:TerminateInstances",
    "ecr:DescribeImages",
    "events:PutEvents",  # deployment events (events.py), only with a bus named
    "elasticloadbalancing:DescribeInstanceHealth", "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer",  # a rollback during the drain (E8)
    "elasticloadbalancing:RegisterTargets",
    "s3:GetObject", "s3:ListBucket", "s3:PutObject",
    "sns:Publish",  # deployment events, only with a topic named
)


def health_runs(facts):
    """{load balancer: seconds a new target needs to turn healthy}: healthy threshold x interval (E1, E3)."""
    out = {}
    for arn, tg in facts.target_groups.items():
        out[arn.rsplit(":", 1)[-1]] = int(tg.get("HealthyThresholdCount", 5)) * int(tg.get("HealthCheckIntervalSeconds", 30))
    for name, lb in facts.classic.items():
        hc = lb.get("HealthCheck") or {}
        out[name] = int(hc.get("HealthyThreshold", 10)) * int(hc.get("Interval", 30))
    return out


def rollback_times(health_s, drain_s, poll_s, standby, drain_left_s):
    """A rollback's two stages, in seconds from its start, each with its parts (issue 13). `standby`: some old
    instances are already in Standby; `drain_left_s`: how long the old instances still drain (0: drained).

    restored = ExitStandby's Pending (EXIT_STANDBY_S for instances in Standby; 0 for instances that still drain,
    which the rollback registers with the load balancers directly) + the worst health-check run (E1, E3) + one poll.
    settled = restored + the drain + one poll: the new group's instances, scaled in at `restored`, drain for the
    whole delay before they terminate (E2, A5). The old instances still draining reach Standby and return with
    ExitStandby before that (their drain left is at most the delay, ExitStandby's Pending less than `restored`,
    which holds a health run of at least 10 s, E1). The drain counts in full: that it ends early when a target
    has no connections is unverified (A1)."""
    pending = EXIT_STANDBY_S if standby else 0
    restored = pending + health_s + poll_s
    return {"restored_s": restored, "settled_s": restored + drain_s + poll_s,
            "restored": {"exit_standby_s": pending, "health_run_s": health_s, "poll_s": poll_s},
            "settled": {"restored_s": restored, "drain_s": drain_s, "old_drain_left_s": drain_left_s,
                        "poll_s": poll_s}}


def _s(seconds):
    return f"{seconds:g} s"


def rollback_lines(times):
    """Two lines, one a stage, each with its parts."""
    r, t = times["restored"], times["settled"]
    pending = (f"ExitStandby {_s(r['exit_standby_s'])}" if r["exit_standby_s"] else
               f"ExitStandby 0 s (instances still draining are registered directly; {_s(EXIT_STANDBY_S)} once in "
               "Standby)")
    restored = (f"restored in {_s(times['restored_s'])} = {pending} + health run {_s(r['health_run_s'])} + poll "
                f"{_s(r['poll_s'])}")
    settled = (f"settled in {_s(times['settled_s'])} = restored {_s(t['restored_s'])} + drain {_s(t['drain_s'])} (the "
               f"new group's instances drain before they terminate) + poll {_s(t['poll_s'])}")
    if t["old_drain_left_s"]:
        settled += f"; the old instances finish draining after {_s(t['old_drain_left_s'])}"
    return restored, settled


def expected_times(facts, poll_s):
    """The times the pair's own settings imply (issue 10, section 3; issue 13). The deploy floor leaves out the
    agent's own work between launch and CONTINUE (pull, compose, health), which only the hook's timeout bounds.
    The rollback: one started right after a flip, while the old instances still drain (the case that matters:
    the first minutes after a deploy), with the deployer's poll `poll_s`."""
    health = max(health_runs(facts).values(), default=0)
    drain = max(drains(facts).values(), default=0)
    hooks = [int(h.get("HeartbeatTimeout", 3600)) for c in COLORS for h in facts.hooks.get(c, [])
             if h.get("LifecycleTransition") == LAUNCHING]
    # Without a drain the old instances are in Standby at once: ExitStandby then, not a direct registration.
    rollback = rollback_times(health, drain, poll_s, standby=drain == 0, drain_left_s=drain)
    # rollback_floor_s keeps its meaning for schema 1's readers (docs/contract.md): the floor of a rollback's
    # recovery time, which ends at `restored`.
    return {"deploy_floor_s": LAUNCH_S + health, "rollback_floor_s": rollback["restored_s"], "rollback": rollback,
            "drain_s": drain, "health_run_s": health, "poll_s": poll_s, "hook_timeout_s": max(hooks, default=None)}


# A flip a rollback can still undo: the deploy's phases from the first EnterStandby on, and finalize until it
# detaches (plan.plan_rollback refuses later).
OPEN_FLIP = {"deploy": ("flip", "bake", "flipped"), "finalize": ("drain",)}


def flip_open(snap):
    rec = snap.record
    return rec is not None and rec.phase in OPEN_FLIP.get(rec.action, ()) and \
        bool(snap.groups[rec.live].in_state("Standby", "EnteringStandby"))


def flip_stamp(snap):
    """When the recorded deploy's phase `flip` began (right after its first EnterStandby call, when the drain
    starts), from the state store's phase list; None without a store, or for a finalize's record."""
    rec = snap.record
    if rec is None or rec.action != "deploy" or not snap.from_store:
        return None
    for name, at in snap.stored.doc.get("phases", []):
        if name == "flip":
            return at
    return None


def rollback_now(facts, poll_s, now):
    """The expected times of a rollback started `now` during an open flip (`status`), or None when no flip is
    open. What the old instances still drain: the delay minus the time since the recorded flip; without that
    stamp, the whole delay, an upper bound (`drain_left_bound`)."""
    snap = facts.snap
    if not flip_open(snap):
        return None
    old = snap.groups[snap.record.live]
    health = max(health_runs(facts).values(), default=0)
    drain = max(drains(facts).values(), default=0)
    at, bound, left = flip_stamp(snap), False, 0
    if old.in_state("EnteringStandby"):
        if at is None:
            left, bound = drain, True
        else:
            # The stamp is the deploying machine's clock: a skewed one may put it ahead of `now`, never past the delay.
            since = (now - datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds()
            left = min(drain, max(0, round(drain - since)))
    times = rollback_times(health, drain, poll_s, standby=bool(old.in_state("Standby")), drain_left_s=left)
    return dict(times, flip_at=at, drain_left_bound=bound)


def rollback_now_lines(times):
    """`status`: the two lines of a rollback started now, and where the drain left came from."""
    restored, settled = rollback_lines(times)
    if times["drain_left_bound"]:
        settled += " (the flip's time is not recorded: the whole delay, an upper bound)"
    elif times["flip_at"] and times["settled"]["old_drain_left_s"]:
        settled += f" (the flip at {times['flip_at']})"
    return f"rollback now: {restored}", f"rollback now: {settled}"


def check_operation(facts):
    rec = facts.snap.record
    if rec is None:
        live = facts.live
        if live is None and not any(g.desired for g in facts.groups.values()):
            # A pair the template made (issue 15): no version and no capacity until `bluegreen init`.
            return Check("operation", WARN, "neither group has capacity: a new pair, which `deploy` refuses until "
                         "one color serves", f"bluegreen init {facts.snap.service} VERSION --capacity N")
        if live is None:
            return Check("operation", WARN, "no operation is recorded and both groups have capacity: which color is "
                         "live cannot be told", "scale the group that should not serve to 0")
        return Check("operation", PASS, f"no operation in progress; {facts.groups[live].name} is live")
    return Check("operation", WARN, f"{rec.action} {rec.version} is in progress (phase {rec.phase}, by "
                 f"{rec.holder or '?'} since {rec.started or '?'}): checks read the pair mid-operation",
                 f"finish it, or `bluegreen rollback {facts.snap.service}`")


def check_health_check_type(facts):
    types = {g.name: g.health_check_type for g in facts.groups.values()}
    ec2 = sorted(n for n, t in types.items() if t != "ELB")
    if not ec2:
        return Check("health-check-type", PASS, "HealthCheckType ELB on both groups")
    return Check("health-check-type", WARN, f"{', '.join(ec2)} uses HealthCheckType EC2 (A20: an instance the load "
                 "balancer finds unhealthy is never replaced, and a dead Standby instance stalls a rollback)",
                 "aws autoscaling update-auto-scaling-group --health-check-type ELB --health-check-grace-period 300")


# boot (issue 11): the launch hook is the last resort when an agent never starts and its OnFailure= fallback
# cannot ABANDON either (audit F2, F14). The agent heartbeats every min(60 s, HeartbeatTimeout / 3), so a short
# timeout costs nothing while it works; a long one is how long such an instance waits before DefaultResult.
RECOMMENDED_HOOK_TIMEOUT_S = 300
# The agent's own run deadline (agent/settings.py run_deadline): a HeartbeatTimeout above it waits longer for a
# dead agent than a live one may ever take.
AGENT_RUN_DEADLINE_S = int(LOCAL_DEFAULTS["run_deadline"])  # the agent's own default, one number for both


def check_launch_hook(facts):
    problems, warnings = [], []
    for color in COLORS:
        g = facts.groups[color]
        hooks = [h for h in facts.hooks.get(color, []) if h.get("LifecycleTransition") == LAUNCHING]
        named = g.tags.get(TAG_LIFECYCLE_HOOK)
        if not hooks:
            warnings.append(f"{g.name} has no launch hook (E5: new targets register while they boot; the deploy "
                            "tolerates unhealthy only within the grace period)")
            continue
        if named and named not in {h["LifecycleHookName"] for h in hooks}:
            problems.append(f"{g.name}'s {TAG_LIFECYCLE_HOOK} names {named}, which is not one of its launch hooks")
        if not named and len(hooks) > 1:
            # The agent finds a single launch hook with DescribeLifecycleHooks; of several it completes none.
            problems.append(f"{g.name} has {len(hooks)} launch hooks and no {TAG_LIFECYCLE_HOOK} tag: the agent "
                            "cannot tell which one is its own")
        for h in hooks:
            beat = int(h.get("HeartbeatTimeout", 3600))
            if h.get("DefaultResult", "ABANDON") == "CONTINUE":
                warnings.append(f"{g.name}'s hook {h['LifecycleHookName']} defaults to CONTINUE: an instance whose "
                                "agent died joins the load balancer")
            if beat > AGENT_RUN_DEADLINE_S:
                warnings.append(f"{g.name}'s hook {h['LifecycleHookName']} times out after {beat} s, above the "
                                f"agent's whole run ({AGENT_RUN_DEADLINE_S} s): an instance whose agent never starts "
                                f"waits that long before it is replaced ({RECOMMENDED_HOOK_TIMEOUT_S} s is enough: "
                                "the agent's heartbeats keep the hook alive while it works)")
    fix = ("put a launch hook on both groups: aws autoscaling put-lifecycle-hook --lifecycle-transition "
           f"{LAUNCHING} --heartbeat-timeout {RECOMMENDED_HOOK_TIMEOUT_S} --default-result ABANDON (the agent finds "
           f"a group's only launch hook; tag {TAG_LIFECYCLE_HOOK}=NAME when there are several)")
    if problems:
        return Check("launch-hook", FAIL, "; ".join(problems), fix)
    if warnings:
        return Check("launch-hook", WARN, "; ".join(warnings), fix)
    return Check("launch-hook", PASS, "a launch hook on both groups that the agent finds, defaulting to ABANDON, "
                 "with a short HeartbeatTimeout")


def check_cross_zone(facts):
    zones = set(facts.groups["blue"].zones) | set(facts.groups["green"].zones)
    off = []
    for arn, attrs in facts.tg_attributes.items():
        value = attrs.get("load_balancing.cross_zone.enabled", "use_load_balancer_configuration")
        protocol = (facts.target_groups.get(arn) or {}).get("Protocol", "HTTP")
        # E6: an ALB's own cross-zone is always on; an NLB's is off by default.
        if value == "false" or (value == "use_load_balancer_configuration" and protocol not in ("HTTP", "HTTPS")):
            off.append(arn.rsplit(":", 1)[-1])
    for name, attrs in facts.classic_attributes.items():
        if not (attrs.get("CrossZoneLoadBalancing") or {}).get("Enabled"):
            off.append(name)
    if not off:
        return Check("cross-zone", PASS, "cross-zone load balancing is on")
    status = WARN if len(zones) > 1 else PASS
    return Check("cross-zone", status, f"cross-zone load balancing is off (or the NLB's default) for {', '.join(off)}"
                 f" across {len(zones)} zone(s) (E6: each zone serves only its own targets, so a flip must leave "
                 "every served zone new healthy targets)", "" if status == PASS else
                 "turn it on (load_balancing.cross_zone.enabled=true), or mind the per-zone gate's refusals")


def check_iam(_facts):
    return Check("iam-actions", PASS, f"the deployer calls {len(IAM_ACTIONS)} actions: {', '.join(IAM_ACTIONS)}",
                 "grant them as iam/deployer-policy.json does (doctor lists them; it cannot simulate IAM)")


def doctor_checks(facts, max_drain=MAX_DRAIN_S):
    # A recorded operation explains what its own steps did to the old group (the processes a deploy holds, its
    # Standby instances): between a deploy and its finalize those are expected, not failures.
    return ([check_operation(facts)] + refusal_checks(facts, resuming=facts.snap.record, max_drain=max_drain)
            + [check_health_check_type(facts), check_launch_hook(facts), check_cross_zone(facts), check_iam(facts)])


def report(facts, poll_s, max_drain=MAX_DRAIN_S):
    """(the JSON document, exit code): 1 when a check fails, else 0. `poll_s`: the deployer's poll interval."""
    checks = doctor_checks(facts, max_drain)
    doc = {"schema_version": contract.SCHEMA_VERSION, "service": facts.snap.service,
           "checks": [c.as_json() for c in checks], "expected": expected_times(facts, poll_s),
           "iam_actions": list(IAM_ACTIONS)}
    return doc, (1 if any(c.status == FAIL for c in checks) else 0)


def text(doc):
    lines = [f"bluegreen doctor {doc['service']}:"]
    for c in doc["checks"]:
        lines.append(f"  {c['status'].upper():4}  {c['id']}: {c['message']}")
        if c["status"] != PASS and c["fix"]:
            lines.append(f"        fix: {c['fix']}")
    e = doc["expected"]
    lines.append(f"expected: deploy at least {e['deploy_floor_s']} s (launch {LAUNCH_S} s + health run "
                 f"{e['health_run_s']} s, plus the agent's own work"
                 + (f", bounded by the hook's {e['hook_timeout_s']} s" if e["hook_timeout_s"] else "") + "); "
                 f"drain {e['drain_s']} s")
    restored, settled = rollback_lines(e["rollback"])
    lines.append(f"expected rollback right after a flip: {restored}")
    lines.append(f"expected rollback right after a flip: {settled}")
    failed = sum(1 for c in doc["checks"] if c["status"] == FAIL)
    warned = sum(1 for c in doc["checks"] if c["status"] == WARN)
    lines.append(f"{failed} failed, {warned} warnings, {len(doc['checks']) - failed - warned} passed")
    return "\n".join(lines)

