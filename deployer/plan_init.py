"""`bluegreen init SERVICE VERSION --capacity N [--color C]`: a new pair's first color up (issue 15). Pure planning.

A pair made by infra/cloudformation/service.yaml has two empty groups and no version: the template declares
nothing the deployer owns (X3). `init` gives one color what a deploy gives its idle group (the version, the
image digest and the bundle, in one CreateOrUpdateTags call), sizes it N/N/MaxSize as a deploy copies the live
sizes, and waits until N instances are InService and healthy in every load balancer (the deploy's wait),
under the lock. From then on the deployer owns both groups.

The record is an `init` in phase `launch` whose `live` is the other, empty, color (no color was live when it
started), so a failed wait aborts as a deploy's does: the new group back to 0, the lock cleared.

init never raises MaxSize: a stack update may set it back to the template's value (docs/localcloud.md X3a), and a
MaxSize below the desired capacity makes Auto Scaling scale the live group in (A5). N above the template's MaxSize
is refused (exit 2) before any change.
"""

from __future__ import annotations

from agent.contract import ACTION_INIT, EVENT_LAUNCHED, PHASE_LAUNCH, ContractError, parse_s3_url

from .errors import ConflictError, UsageError
from .health import HEALTHY, leaving
from .model import COLORS, Record, other
from .plan import _launch_record, _lock_steps, _resume_check, _set_version_steps, launch_values, lock_message
from .steps import ABORT, CallStep, UnlockStep, clear_record, set_sizes, sizes_text, wait_step

STORE_FOLDER = ".bluegreen/"


def bundle_base(state_url):
    """(bucket, BASE) of a state store s3://bucket/BASE/.bluegreen/ (the template's, and store.locate's default
    beside a bundle base): where push-bootstrap writes BASE/LATEST. None for any other URL."""
    try:
        bucket, prefix = parse_s3_url(state_url)
    except ContractError:
        return None
    if not prefix.endswith(STORE_FOLDER) or not (prefix == STORE_FOLDER or prefix.endswith("/" + STORE_FOLDER)):
        return None
    return bucket, prefix[:-len(STORE_FOLDER)]


def fresh_pair_conflict(snap):
    """Why `snap`'s pair already has a live color (capacity, or instances not on their way out), or None. A
    version alone is no live color: an init whose wait failed leaves its version on an empty group, and its
    rerun must be allowed."""
    used = [g for c in COLORS for g in (snap.groups[c],)
            if g.desired or any(not leaving(i) for i in g.instances)]
    if not used:
        return None
    what = "; ".join(f"{g.name} has desired {g.desired}, {sum(1 for i in g.instances if not leaving(i))} "
                     f"instance(s), version {g.version or '(none)'}" for g in used)
    return (f"{snap.service} already has a live color ({what}): `bluegreen init` only brings up a new pair's "
            f"first color; use `bluegreen deploy {snap.service} VERSION`")


def resuming(snap, version, color):
    """The recorded init this command carries on (same version and color), or None for a new one; ConflictError
    for any other recorded operation or a pair that already has a live color (exit 3)."""
    rec = snap.record
    if rec is not None:
        if rec.action == ACTION_INIT and rec.version == version and other(rec.live) == color:
            return rec
        raise ConflictError(lock_message(snap, rec))
    problem = fresh_pair_conflict(snap)
    if problem:
        raise ConflictError(problem)
    return None


def template_max(snap):
    """The template's MaxSize as the groups show it: the template declares the same on both, and the deployer
    only ever lowers a group's (an aborted init or a finalize leaves it 0/0/0), so the larger is the template's."""
    return max(snap.groups[c].max for c in COLORS)


def check_capacity(snap, capacity):
    """UsageError (exit 2) for a capacity above the template's MaxSize: init will not raise MaxSize (X3a)."""
    limit = template_max(snap)
    if capacity > limit:
        raise UsageError(f"--capacity {capacity} is above {snap.service}'s MaxSize {limit}: raise the stack's MaxSize "
                         f"parameter to at least {capacity} (a stack update sets the groups' MaxSize back to the "
                         f"template's, docs/localcloud.md X3a)"
                         + (f", or pass --capacity {limit} or less" if limit else ""))
    return limit


def plan_init(snap, ctx, version, color, capacity, launch=None):
    rec = resuming(snap, version, color)
    limit = check_capacity(snap, capacity)
    new, empty = snap.groups[color], snap.groups[other(color)]
    # What the first run resolved wins on a rerun: every instance of the init gets the same (launch_values).
    digest, bootstrap = launch_values(rec, new, version, launch)
    if rec is not None:
        _resume_check(snap, rec, ctx)
        record = rec.moved(holder=ctx.me)
        steps = _lock_steps(snap, rec, record)
    else:
        record = _launch_record(Record(ACTION_INIT, PHASE_LAUNCH, version, empty.color, ctx.stamp, ctx.me),
                                digest, bootstrap)
        steps = _lock_steps(snap, None, record)
    steps += _set_version_steps(new, version, digest, bootstrap)
    # As a deploy copies the live group's sizes: MinSize = desired, so a scale-in cannot go below the capacity
    # the operator chose; MaxSize the template's (check_capacity), never raised (X3a).
    sizes = (capacity, capacity, limit)
    if new.sizes != sizes:
        steps.append(CallStep("size-new", f"size {new.name} min/desired/max {sizes_text(sizes)}",
                              (set_sizes(new, sizes),)))
    steps.append(wait_step(snap, "wait-new-healthy", f"wait until {capacity} {version} instances of {new.name} are "
                           "InService and healthy in every load balancer", color, HEALTHY, on_failure=ABORT,
                           # nothing to record after it but the unlock, which follows in the same round
                           gate=True))
    steps.append(UnlockStep("unlock", "clear the operation record",
                            (clear_record(snap, empty.color, EVENT_LAUNCHED),)))
    return steps
