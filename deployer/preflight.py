"""Pre-flight: what must hold before `deploy` or `canary` starts, and what `bluegreen doctor` reports.

`gather` reads everything once (the pair, the record, refreshes, warm pools, hooks, load balancer settings, the
image, the bootstrap manifest) into plain `Facts`; every check is a pure function of Facts returning Check
results (STYLE.md point 1). A `fail` refuses a new operation (exit 2, nothing changed), a `warn` is printed and
the command goes on. The check ids are stable: docs/deployer.md lists them with what to do about each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent import contract
from agent.contract import MANIFEST, TAG_BOOTSTRAP, TAG_IMAGE, TAG_VERSION, ContractError
from agent.images import ecr_registry, registry_host

from . import registry
from .alarms import MARKER, NAME_MAX, linked_alarm_names, too_long
from .errors import AwsError, PreflightRefused
from .health import NLB_PROTOCOLS
from .model import COLORS, HOLD_PROCESSES, LAUNCHING, Snapshot, check_same_load_balancers, other, pair_from_describe

log = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"

# A8, A13, A16: with Launch suspended ExitStandby is refused (no rollback), with Terminate suspended scale-in
# leaves the new version serving (A14), with AddToLoadBalancer suspended new instances never register, and a
# suspended InstanceRefresh resumes replacing instances whenever someone resumes it.
REFUSED_PROCESSES = ("Launch", "Terminate", "AddToLoadBalancer", "InstanceRefresh")
# A16: DescribeInstanceRefreshes statuses of a refresh that is still replacing (or about to replace) instances.
ACTIVE_REFRESH = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")
# The drain (deregistration delay, Classic ELB connection draining) above which pre-flight warns: AWS's own
# default (E2), so a pair made with defaults is quiet. A warning, no longer a refusal (issue 13): a rollback
# registers instances that still drain directly, so its `restored` stage takes a health-check run whatever the
# drain; the drain delays only `settled` (the Standby instances return, and the new group's instances drain
# before they terminate) and finalize, which waits for it.
MAX_DRAIN_S = 300
# Not settings of the pair, so stated here: an EC2 launch until the agent starts (unverified: AWS publishes no
# figure; the emulator uses 30 s), and the ExitStandby calls of a rollback.
LAUNCH_S = 60
EXIT_STANDBY_S = 5

CHECK_IDS = {
    # refusals of deploy and canary (fail) and what doctor reports
    "same-load-balancers": "both groups attached to the same target groups / Classic ELBs (E4)",
    "suspended-processes": "Launch, Terminate, AddToLoadBalancer, InstanceRefresh not suspended (A8, A13, A16)",
    "instance-refresh": "no instance refresh active on either group (A16)",
    "warm-pool": "no warm pool on either group (A17)",
    "capacity-units": "capacity counted in instances: DesiredCapacityType units, no weights (A18)",
    "scale-in-protection": "no scale-in protection on the idle group (A14)",
    "standby-unexplained": "no Standby instance the deployer did not put there",
    "zones-match": "the same Availability Zones and subnets on both groups (A19)",
    "health-check-type-match": "the same HealthCheckType on both groups (A20)",
    "launch-hooks-match": "the same launch lifecycle hooks on both groups (A6)",
    "drain-bound": "deregistration delay / Classic ELB draining within --max-drain (warning only; E2, E3)",
    "image-exists": "IMAGE:VERSION exists in its registry",
    "bootstrap-manifest": "the bootstrap manifest the agent reads is readable",
    "copy-names": "every copy the deploy names (alarm, policy, scheduled action) fits 255 characters (W1, A7)",
    "predictive-scaling": "no predictive scaling policy that scales (warning only; audit finding 16)",
    "nlb-connection-termination": "NLB target groups end old flows at deregistration (warning only; E7)",
    # doctor adds
    "operation": "no operation in progress",
    "health-check-type": "HealthCheckType ELB (A20)",
    "launch-hook": "a launch hook the agent completes, with a sane heartbeat (A6)",
    "cross-zone": "cross-zone load balancing on, or the per-zone gate matters (E6)",
    "iam-actions": "the AWS actions the deployer calls (listed; IAM is not simulated)",
}
REFUSALS = ("same-load-balancers", "suspended-processes", "instance-refresh", "warm-pool", "capacity-units",
            "scale-in-protection", "standby-unexplained", "zones-match", "health-check-type-match",
            "launch-hooks-match", "image-exists", "bootstrap-manifest", "copy-names")
# Checked before every deploy and canary too, but only ever warn.
WARNINGS = ("predictive-scaling", "nlb-connection-termination", "drain-bound")


@dataclass(frozen=True)
class Check:
    id: str
    status: str  # PASS | WARN | FAIL
    message: str
    fix: str = ""

    def as_json(self):
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Probe:
    """What asking the registry or S3 gave: state (registry.FOUND/MISSING/UNKNOWN) and one line."""

    subject: str
    state: str
    detail: str
    digest: str | None = None  # the image's, when the registry said (bluegreen:digest, audit F8)


@dataclass(frozen=True)
class Facts:
    """Everything the checks look at, read once."""

    snap: Snapshot
    refreshes: dict = field(default_factory=dict)    # color -> DescribeInstanceRefreshes records
    warm_pools: dict = field(default_factory=dict)   # color -> WarmPoolConfiguration or None
    hooks: dict = field(default_factory=dict)        # color -> DescribeLifecycleHooks records
    target_groups: dict = field(default_factory=dict)  # arn -> DescribeTargetGroups record
    tg_attributes: dict = field(default_factory=dict)  # arn -> {key: value}
    classic: dict = field(default_factory=dict)      # name -> DescribeLoadBalancers record
    classic_attributes: dict = field(default_factory=dict)  # name -> LoadBalancerAttributes
    policies: list = field(default_factory=list)     # the live group's DescribePolicies records
    scheduled: list = field(default_factory=list)    # the live group's DescribeScheduledActions records
    image: Probe | None = None
    bootstrap: Probe | None = None

    @property
    def groups(self):
        return self.snap.groups

    @property
    def live(self):
        return self.snap.live

    @property
    def idle(self):
        """The group a deploy launches into (None when the live color cannot be told)."""
        return self.groups[other(self.live)] if self.live else None


# ---- reading -----------------------------------------------------------------------------------------


LAUNCH_VERSION = object()  # gather's `version` for doctor: the version the idle group's tags name


def gather(aws, service, store=None, version=None, s3=None, ecr_for=None, opener=None, bundle=None):
    """One read of everything the checks need. `version`: the image tag to look for (deploy, canary; doctor:
    LAUNCH_VERSION); `s3`: the client the manifest is read with; `ecr_for(region)`: an ECR client of that Region;
    `bundle(snap)`: the bundle URL the operation will set on the idle group (None: the group's own), whose
    manifest is the one read (issue 11: the deploy's bundle is checked before anything changes)."""
    records = aws.describe_service_groups(service)
    groups = pair_from_describe(service, records, same_load_balancers=False)
    stored = store.read() if store is not None else None
    snap = Snapshot(service, groups, store_url=store.url if store is not None else None, stored=stored)
    facts = {"refreshes": {}, "warm_pools": {}, "hooks": {}}
    for color, group in groups.items():
        facts["refreshes"][color] = aws.describe_instance_refreshes(group.name)
        facts["warm_pools"][color] = aws.describe_warm_pool(group.name)
        facts["hooks"][color] = aws.describe_lifecycle_hooks(group.name)
    facts.update(read_load_balancers(aws, groups))
    if snap.live is not None:
        facts["policies"] = aws.describe_policies(groups[snap.live].name)
        facts["scheduled"] = aws.describe_scheduled_actions(groups[snap.live].name)
    tags = launch_tags(snap)
    default_url = tags.get(TAG_BOOTSTRAP)
    if version is LAUNCH_VERSION:
        # doctor: what the idle group would launch. A pair `bluegreen init` brought up (issue 15) names a version
        # and a bundle on its live group only until its first deploy: those are then what a launch would run.
        named = tags if tags.get(TAG_VERSION) or snap.live is None else snap.groups[snap.live].tags
        version, default_url = named.get(TAG_VERSION), named.get(TAG_BOOTSTRAP)
    if version is not None and tags.get(TAG_IMAGE):
        facts["image"] = probe_image(aws, tags[TAG_IMAGE], version, ecr_for, opener)
    url = (bundle(snap) if bundle is not None else None) or default_url
    if s3 is not None and url:
        facts["bootstrap"] = probe_manifest(aws, s3, url)
    return Facts(snap, **facts)


def read_load_balancers(aws, groups):
    """The pair's load balancers' own settings, as Facts holds them: each target group's record (its health
    check) and attributes (its deregistration delay), each Classic ELB's record and attributes. `status` reads
    only these, for the expected rollback times (doctor.rollback_times)."""
    arns = sorted({a for g in groups.values() for a in g.target_groups})
    names = sorted({n for g in groups.values() for n in g.classic_lbs})
    return {"target_groups": {t["TargetGroupArn"]: t for t in aws.describe_target_groups(arns)} if arns else {},
            "tg_attributes": {arn: aws.describe_target_group_attributes(arn) for arn in arns},
            "classic": {d["LoadBalancerName"]: d for d in aws.describe_classic_load_balancers(names)} if names else {},
            "classic_attributes": {name: aws.describe_classic_attributes(name) for name in names}}


def launch_tags(snap):
    """The tags the new instances' agent will read: the idle group's (A12), else blue's."""
    live = snap.live
    return snap.groups[other(live) if live else "blue"].tags


def probe_image(aws, image, version, ecr_for=None, opener=None):
    subject = f"{image}:{version}"
    ecr = ecr_registry(image)
    if ecr is not None:
        account, region = ecr
        repository = image[len(registry_host(image)) + 1:]
        if ecr_for is None:
            return Probe(subject, registry.UNKNOWN, "no ECR client")
        try:
            digest = aws.describe_ecr_image(ecr_for(region), account, repository, version)
        except AwsError as exc:  # refused (IAM) or unreachable: the launch will tell; say so and go on
            return Probe(subject, registry.UNKNOWN, f"ECR DescribeImages: {exc}")
        if digest is None:
            return Probe(subject, registry.MISSING, f"ECR DescribeImages in {region}: no such image or repository")
        return Probe(subject, registry.FOUND, f"ECR DescribeImages in {region}: {digest or 'found'}",
                     digest if registry.DIGEST_RE.match(digest) else None)
    state, detail, digest = registry.probe(image, version, **({"opener": opener} if opener else {}))
    return Probe(subject, state, detail, digest)


def probe_manifest(aws, s3, url):
    """Read the manifest the agent reads (`<prefix>manifest.json`) and check it as the agent would."""
    try:
        bucket, prefix = contract.parse_s3_url(url)
    except ContractError as exc:
        return Probe(url, registry.MISSING, str(exc))
    subject = f"s3://{bucket}/{prefix}{MANIFEST}"
    try:
        data = aws.describe_object(s3, bucket, prefix + MANIFEST)
    except AwsError as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "AccessDenied", "403", "404"):
            # S3: without s3:ListBucket a missing key answers 403, so both mean "not readable" here.
            return Probe(subject, registry.MISSING, f"GetObject {subject}: {exc.code}")
        raise
    try:
        files = contract.parse_manifest(data)
        contract.check_bundle_address(prefix, data)  # F10: what the agent checks before it trusts the manifest
    except ContractError as exc:
        return Probe(subject, registry.MISSING, f"{subject} is not a manifest the agent accepts: {exc}")
    return Probe(subject, registry.FOUND, f"{subject}: {len(files)} files")


# ---- the checks (pure) ---------------------------------------------------------------------------------


def _ok(check_id, message):
    return Check(check_id, PASS, message)


def check_load_balancers(facts):
    try:
        check_same_load_balancers(facts.snap.service, facts.groups)
    except Exception as exc:  # noqa: BLE001 - the model's UsageError, reported as a check
        return Check("same-load-balancers", FAIL, str(exc),
                     "attach both groups to the same target groups and Classic ELBs (aws autoscaling "
                     "attach-load-balancer-target-groups / attach-load-balancers)")
    return _ok("same-load-balancers", "both groups are attached to the same load balancers")


def check_suspended(facts, resuming=None):
    found = []
    for color in COLORS:
        group = facts.groups[color]
        # Resuming its own deploy: the processes that deploy holds on the old group are its own doing.
        own = set(HOLD_PROCESSES) if resuming is not None and color == resuming.live else set()
        bad = [p for p in REFUSED_PROCESSES if p in group.suspended and p not in own]
        if bad:
            found.append((group.name, bad))
    if not found:
        return _ok("suspended-processes", "none of " + ", ".join(REFUSED_PROCESSES) + " is suspended")
    text = "; ".join(f"{name} has {', '.join(bad)} suspended" for name, bad in found)
    fixes = " && ".join(f"aws autoscaling resume-processes --auto-scaling-group-name {name} --scaling-processes "
                        + " ".join(bad) for name, bad in found)
    return Check("suspended-processes", FAIL, text + " (A13: with Launch suspended no rollback can return the old "
                 "fleet; A8)", f"resume them once nobody needs them suspended: {fixes}")


def check_refreshes(facts):
    active = [(facts.groups[c].name, r) for c in COLORS for r in facts.refreshes.get(c, [])
              if r.get("Status") in ACTIVE_REFRESH]
    if not active:
        return _ok("instance-refresh", "no instance refresh is active")
    name, r = active[0]
    return Check("instance-refresh", FAIL, f"instance refresh {r.get('InstanceRefreshId', '?')} on {name} is "
                 f"{r.get('Status')} (A16: it replaces instances under the flip, and may terminate Standby ones)",
                 f"wait for it to end, or `aws autoscaling cancel-instance-refresh --auto-scaling-group-name {name}`")


def check_warm_pools(facts):
    pools = [facts.groups[c].name for c in COLORS if facts.warm_pools.get(c)]
    if not pools:
        return _ok("warm-pool", "no warm pool")
    return Check("warm-pool", FAIL, f"{', '.join(pools)} has a warm pool (A17: pool instances enter service "
                 "without a fresh boot, keeping the version they had)",
                 "`aws autoscaling delete-warm-pool --auto-scaling-group-name NAME --force-delete`: bluegreen "
                 "does not handle warm pools")


def check_capacity_units(facts):
    bad = []
    for color in COLORS:
        g = facts.groups[color]
        weights = set(g.mixed_weights) | {str(i.weight) for i in g.instances if i.weight is not None}
        if g.capacity_type != "units":
            bad.append(f"{g.name} counts capacity in {g.capacity_type}")
        elif weights - {"1"}:
            bad.append(f"{g.name} weighs its instances ({', '.join(sorted(weights))})")
    if not bad:
        return _ok("capacity-units", "capacity is counted in instances")
    return Check("capacity-units", FAIL, "; ".join(bad) + " (A18: sizes are capacity units, not instances, and the "
                 "deployer compares instance counts)",
                 "set DesiredCapacityType units and remove WeightedCapacity from the mixed instances policy")


def check_protection(facts):
    findings, fixes = [], []
    for color in COLORS:
        g = facts.groups[color]
        protected = [i.id for i in g.instances if i.protected]
        if not g.new_protected and not protected:
            continue
        what = []
        if g.new_protected:
            what.append("NewInstancesProtectedFromScaleIn")
            fixes.append(f"aws autoscaling update-auto-scaling-group --auto-scaling-group-name {g.name} "
                         "--no-new-instances-protected-from-scale-in")
        if protected:
            what.append(f"{len(protected)} protected instances")
            fixes.append(f"aws autoscaling set-instance-protection --auto-scaling-group-name {g.name} "
                         f"--instance-ids {' '.join(protected)} --no-protected-from-scale-in")
        findings.append((color, f"{g.name} has {' and '.join(what)}"))
    if not findings:
        return _ok("scale-in-protection", "no scale-in protection")
    idle = other(facts.live) if facts.live else None
    status = FAIL if idle is None or any(c == idle for c, _ in findings) else WARN
    why = (" (A14: a rollback or abort that scales it in leaves the new version serving)" if status == FAIL else
           " (A14: the live group becomes the idle one after the next flip; the deploy after that refuses)")
    return Check("scale-in-protection", status, "; ".join(t for _, t in findings) + why, " && ".join(fixes))


def check_standby(facts, resuming=None):
    waiting = []
    for color in COLORS:
        g = facts.groups[color]
        if resuming is not None and resuming.action in ("deploy", "rollback", "finalize") and color == resuming.live:
            continue  # the recorded deploy put them there (a rollback or finalize of it works on them)
        ids = [i.id for i in g.in_state("Standby", "EnteringStandby")]
        if ids:
            waiting.append((g.name, ids))
    if not waiting:
        return _ok("standby-unexplained", "no Standby instance outside an operation")
    name, ids = waiting[0]
    return Check("standby-unexplained", FAIL, f"{name} has {len(ids)} Standby instances no operation recorded here "
                 "put there (a flip would count them, a rollback return them)",
                 f"return them (`aws autoscaling exit-standby --auto-scaling-group-name {name} --instance-ids "
                 f"{' '.join(ids[:20])}`) or detach them; if a deploy's record was lost, `bluegreen rollback "
                 f"{facts.snap.service}`")


def check_zones(facts):
    blue, green = facts.groups["blue"], facts.groups["green"]
    if (blue.zones, blue.subnets) == (green.zones, green.subnets):
        return _ok("zones-match", f"both groups span {', '.join(blue.zones) or 'the same zones'}")
    return Check("zones-match", FAIL, f"{blue.name} spans {', '.join(blue.zones) or '-'} (subnets "
                 f"{', '.join(blue.subnets) or '-'}), {green.name} spans {', '.join(green.zones) or '-'} (subnets "
                 f"{', '.join(green.subnets) or '-'}) (A19: a zone the new fleet does not reach loses its targets)",
                 "give both groups the same VPCZoneIdentifier (aws autoscaling update-auto-scaling-group "
                 "--vpc-zone-identifier)")


def check_health_check_types(facts):
    blue, green = facts.groups["blue"], facts.groups["green"]
    if blue.health_check_type == green.health_check_type:
        return _ok("health-check-type-match", f"both groups use HealthCheckType {blue.health_check_type}")
    return Check("health-check-type-match", FAIL, f"{blue.name} uses HealthCheckType {blue.health_check_type}, "
                 f"{green.name} {green.health_check_type} (A20: only ELB replaces instances the load balancer "
                 "finds unhealthy)", "set --health-check-type ELB on both (aws autoscaling update-auto-scaling-group)")


def _launch_hooks(facts, color):
    return {(h["LifecycleHookName"], int(h.get("HeartbeatTimeout", 3600)), h.get("DefaultResult", "ABANDON"))
            for h in facts.hooks.get(color, []) if h.get("LifecycleTransition") == LAUNCHING}


def check_hooks_match(facts):
    blue, green = _launch_hooks(facts, "blue"), _launch_hooks(facts, "green")
    if blue == green:
        return _ok("launch-hooks-match", f"both groups have the same {len(blue)} launch hook(s)")

    def text(hooks):
        return ", ".join(f"{n} ({t} s, {r})" for n, t, r in sorted(hooks)) or "none"

    return Check("launch-hooks-match", FAIL, f"launch hooks differ: {facts.groups['blue'].name} has {text(blue)}, "
                 f"{facts.groups['green'].name} has {text(green)} (A6: without the hook new targets register while "
                 "they boot and turn unhealthy, E5)",
                 "put the same hook on both groups (aws autoscaling put-lifecycle-hook)")


def drains(facts):
    """{load balancer: drain seconds}: each target group's deregistration delay (E2), each Classic ELB's
    connection-draining timeout when enabled (E3)."""
    out = {}
    for arn, attrs in facts.tg_attributes.items():
        out[arn.rsplit(":", 1)[-1]] = int(attrs.get("deregistration_delay.timeout_seconds", 300))
    for name, attrs in facts.classic_attributes.items():
        draining = attrs.get("ConnectionDraining") or {}
        out[name] = int(draining.get("Timeout", 300)) if draining.get("Enabled") else 0
    return out


def check_drain(facts, max_drain=MAX_DRAIN_S):
    """A warning only (issue 13): a long drain no longer delays a rollback's `restored` stage, which registers the
    draining instances directly, but it does delay `settled` and finalize, and that is worth saying."""
    found = drains(facts)
    over = {lb: s for lb, s in found.items() if s > max_drain}
    if not over:
        return _ok("drain-bound", f"drain at most {max(found.values(), default=0)} s (bound {max_drain} s)")
    lb, seconds = max(over.items(), key=lambda kv: kv[1])
    return Check("drain-bound", WARN, f"{lb} drains for {seconds} s, above {max_drain} s (E2): a rollback still "
                 "reaches restored after one health-check run, but its settled stage and a finalize wait for the "
                 f"drain, up to {seconds} s more",
                 "lower it if settling and finalizing sooner matter (aws elbv2 modify-target-group-attributes "
                 "--attributes Key=deregistration_delay.timeout_seconds,Value=60; Classic: "
                 "modify-load-balancer-attributes ConnectionDraining), or silence this with --max-drain " + str(seconds))


def check_image(facts, version=None):
    tags = launch_tags(facts.snap)
    if not tags.get(TAG_IMAGE):
        return Check("image-exists", WARN, f"the pair names no image ({TAG_IMAGE}): the version is not checked "
                     "before launch", f"tag both groups with {TAG_IMAGE}=REPOSITORY")
    probe = facts.image
    if probe is None:
        return Check("image-exists", WARN, f"the pair names image {tags[TAG_IMAGE]} but no version to look for",
                     f"tag the groups with {TAG_VERSION}")
    if probe.state == registry.FOUND:
        # The digest is what deploy and canary set as bluegreen:digest (audit F8); none: the agents pull by tag.
        return _ok("image-exists", f"{probe.subject} exists ({probe.detail})" +
                   (f", digest {probe.digest}" if probe.digest else ", no digest given: the agents pull by tag"))
    if probe.state == registry.MISSING:
        return Check("image-exists", FAIL, f"{probe.subject} does not exist ({probe.detail}): every instance "
                     "would fail its pull and be abandoned", "push the image first, or check the version's spelling")
    return Check("image-exists", WARN, f"{probe.subject} could not be checked: {probe.detail}; its digest is "
                 "unknown, so the new instances pull it by tag (no bluegreen:digest)",
                 "check it from a machine that reaches the registry")


def check_manifest(facts):
    tags = launch_tags(facts.snap)
    probe = facts.bootstrap
    if probe is None and not tags.get(TAG_BOOTSTRAP):
        return Check("bootstrap-manifest", WARN, f"the pair names no bootstrap prefix ({TAG_BOOTSTRAP}); the agents' "
                     "own config must", f"tag both groups with {TAG_BOOTSTRAP}=s3://bucket/prefix/")
    if probe is None:
        return Check("bootstrap-manifest", WARN, f"{tags[TAG_BOOTSTRAP]} was not read", "")
    if probe.state == registry.FOUND:
        return _ok("bootstrap-manifest", f"{probe.detail}")
    return Check("bootstrap-manifest", FAIL, f"the bootstrap manifest is not readable: {probe.detail} (the agent "
                 "of every new instance would fail)",
                 f"`bluegreen push-bootstrap DIR {_base_of(probe.subject)}` (then deploy with the URL it prints, "
                 "or its base's LATEST), or grant s3:GetObject on it")


def _base_of(manifest_url):
    """s3://bucket/BASE/ of s3://bucket/BASE/[<sha256>/]manifest.json: where push-bootstrap writes."""
    try:
        bucket, prefix = contract.parse_s3_url(manifest_url[:-len(MANIFEST)])
    except ContractError:
        return manifest_url
    return contract.format_s3_url(bucket, contract.bundle_base(prefix))


def check_predictive(facts):
    """Audit finding 16. A predictive policy copied to the new group starts with no history: "your new Auto Scaling
    group needs 24 hours of historical load data before predictive scaling can start generating forecasts again"
    (predictive scaling user guide). And whether the processes held on the old group (AlarmNotification,
    ScheduledActions) stop a ForecastAndScale policy from raising its capacity while it waits in Standby is not
    documented (unverified). A warning, not a refusal: ForecastOnly is harmless, and the fix is the operator's."""
    scaling = [p["PolicyName"] for p in facts.policies if p.get("PolicyType") == "PredictiveScaling"
               and (p.get("PredictiveScalingConfiguration") or {}).get("Mode", "ForecastOnly") == "ForecastAndScale"]
    if not scaling:
        return _ok("predictive-scaling", "no predictive scaling policy scales the live group")
    return Check("predictive-scaling", WARN, f"predictive scaling policy {', '.join(scaling)} scales the live group in "
                 "ForecastAndScale mode: its copy on the new group has no history for 24 h, and it may raise the old "
                 "group's capacity while that waits in Standby (unverified)",
                 "base it on custom metrics that sum both groups, or set its Mode to ForecastOnly around deploys")


def check_nlb_termination(facts):
    """E7, audit finding 17: on an NLB, flows already open to a deregistered target go on after the flip (until the
    delay ends only with connection termination on), and new connections may still reach it for minutes; finalize's
    TerminateInstances then resets whatever is left. A warning: the flip is not atomic there."""
    keep = [arn.rsplit(":", 1)[-1] for arn, tg in facts.target_groups.items()
            if tg.get("Protocol") in NLB_PROTOCOLS and
            (facts.tg_attributes.get(arn) or {}).get("deregistration_delay.connection_termination.enabled",
                                                     "false") != "true"]
    if not keep:
        return _ok("nlb-connection-termination", "no NLB target group keeps flows on deregistered targets")
    return Check("nlb-connection-termination", WARN, f"NLB target group {', '.join(keep)} keeps open flows on old "
                 "instances after the flip (E7): long-lived connections stay on the old version until finalize "
                 "terminates them, and new ones may reach them for minutes",
                 "aws elbv2 modify-target-group-attributes --target-group-arn ARN --attributes "
                 "Key=deregistration_delay.connection_termination.enabled,Value=true")


def check_copy_names(facts):
    """W1, A7: a deploy names each copy `<original>--bluegreen-<new group>` (alarms.py); AlarmName, PolicyName and
    ScheduledActionName take at most 255 characters, and AWS would refuse the copy after the new fleet launched.
    Refused here instead (no name is cut: a shortened name could no longer tell the original it was made from).
    The alarms are those the live group's step and simple policies list: their names come with DescribePolicies."""
    if facts.idle is None:
        return _ok("copy-names", "no live group to copy from")
    names = [p["PolicyName"] for p in facts.policies]
    names += [a["ScheduledActionName"] for a in facts.scheduled]
    names += sorted(linked_alarm_names(facts.policies))
    long = too_long(names, facts.idle.name)
    if not long:
        return _ok("copy-names", f"every copy for {facts.idle.name} fits {NAME_MAX} characters")
    name, length = long[0]
    return Check("copy-names", FAIL, f"the copy of {name[:40]}... for {facts.idle.name} would be named with "
                 f"{length} characters, above AWS's {NAME_MAX}" + (f" ({len(long)} such names)" if len(long) > 1 else ""),
                 f"rename it (or the idle group) so that the name plus {len(MARKER) + len(facts.idle.name)} "
                 f"characters ({MARKER}{facts.idle.name}) fits {NAME_MAX}")


def refusal_checks(facts, version=None, resuming=None, max_drain=MAX_DRAIN_S):
    """Every check that refuses a new deploy or canary, in the order of REFUSALS, then the warnings every deploy
    prints (predictive scaling, NLB flows, a long drain), in the order of WARNINGS."""
    return [check_load_balancers(facts), check_suspended(facts, resuming), check_refreshes(facts),
            check_warm_pools(facts), check_capacity_units(facts), check_protection(facts),
            check_standby(facts, resuming), check_zones(facts), check_health_check_types(facts),
            check_hooks_match(facts), check_image(facts, version), check_manifest(facts), check_copy_names(facts),
            check_predictive(facts), check_nlb_termination(facts), check_drain(facts, max_drain)]


def refuse(service, command, checks):
    """Log every warning; raise PreflightRefused naming the first failure (one line) when any check fails."""
    for c in checks:
        if c.status == WARN:
            log.warning("pre-flight %s: %s%s", c.id, c.message, f"; {c.fix}" if c.fix else "")
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more: `bluegreen doctor {service}` lists them)" if len(failed) > 1 else ""
        raise PreflightRefused(f"{command} {service} refused before any change [{first.id}]: {first.message}; fix: "
                               f"{first.fix}{more}", checks)
