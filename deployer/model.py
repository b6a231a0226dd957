"""What the deployer knows about a service, built from plain describe results (no AWS calls here).

A service is two Auto Scaling groups tagged `bluegreen:service=<name>` and `bluegreen:color=blue|green`.
The operation in progress lives in the state store (store.py: S3, with compare-and-set), mirrored to the
groups' tags (STYLE.md point 8), so that a rerun from any machine finds it: `bluegreen:operation` on both groups,
and on the group that was live when it started its original sizes and the processes that were already
suspended. Without a store the tags are the record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from agent import contract
from agent.contract import (  # noqa: F401 (re-exported: the deployer imports the tag keys from here)
    TAG_BOOTSTRAP,
    TAG_COLOR,
    TAG_DIGEST,
    TAG_OPERATION,
    TAG_RETIRED_FROM,
    TAG_RUNNING,
    TAG_SAVED_SIZES,
    TAG_SAVED_SUSPENDED,
    TAG_SERVICE,
    TAG_VALUE_MAX,
    TAG_VERSION,
    VERSION_RE,
)

from .errors import UsageError

COLORS = ("blue", "green")
# The lifecycle transition of a launch hook (A6): what pre-flight, doctor and the launch wait look for.
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
# Suspended on the old group while it waits in Standby, so no scale-out or rebalancing can launch
# old-version instances into the load balancer (the seed's complaint about scale-outs during the flip), and no
# instance refresh started meanwhile (IaC starts them on a launch template change) terminates the Standby fleet
# a rollback needs: suspending InstanceRefresh pauses a refresh (A16, audit finding 9). Never `Launch`: with
# Launch suspended ExitStandby is refused, and rollback with it (A13).
HOLD_PROCESSES = ("AlarmNotification", "ScheduledActions", "AZRebalance", "InstanceRefresh")

HEALTH_ORDER = ("unhealthy", "initial", "draining", "unused", "healthy")


def other(color):
    return "green" if color == "blue" else "blue"


def check_version(version):
    """The contract's version rule (a Docker tag, what the agent pulls as repo:<version>), as a usage error."""
    try:
        return contract.check_version(version)
    except contract.ContractError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Instance:
    id: str
    lifecycle: str
    health_status: str = "Healthy"  # the group's own health check
    zone: str = ""                  # its Availability Zone (A19, E6)
    protected: bool = False         # ProtectedFromScaleIn (A14)
    weight: int | None = None       # WeightedCapacity, when the group weighs its instances (A18)


@dataclass(frozen=True)
class Group:
    name: str
    color: str
    min: int
    desired: int
    max: int
    tags: dict[str, str]
    instances: tuple[Instance, ...]
    suspended: tuple[str, ...]
    target_groups: tuple[str, ...]
    classic_lbs: tuple[str, ...]
    # What pre-flight, the gates and doctor compare (A14, A18, A19, A20); defaults are AWS's.
    zones: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    health_check_type: str = "EC2"
    grace_period: int = 0
    new_protected: bool = False                 # NewInstancesProtectedFromScaleIn
    capacity_type: str = "units"                # DesiredCapacityType
    mixed_weights: tuple[str, ...] = ()         # WeightedCapacity values in a MixedInstancesPolicy's overrides

    @property
    def version(self):
        return self.tags.get(TAG_VERSION)

    @property
    def digest(self):
        return self.tags.get(TAG_DIGEST)

    @property
    def bootstrap(self):
        return self.tags.get(TAG_BOOTSTRAP)

    @property
    def sizes(self):
        return (self.min, self.desired, self.max)

    def in_state(self, *states):
        return [i for i in self.instances if i.lifecycle in states]

    @property
    def saved_sizes(self):
        raw = self.tags.get(TAG_SAVED_SIZES)
        if not raw:
            return None
        lo, want, hi = (int(x) for x in raw.split("/"))
        return (lo, want, hi)

    @property
    def saved_suspended(self):
        raw = self.tags.get(TAG_SAVED_SUSPENDED, "")
        return tuple(p for p in raw.split(",") if p and p != "none")

    def load_balancers(self):
        return [("tg", arn) for arn in self.target_groups] + [("elb", name) for name in self.classic_lbs]


@dataclass(frozen=True)
class Record:
    """The operation in progress, as stored in the `bluegreen:operation` tag."""

    action: str  # deploy | canary | rollback | finalize
    phase: str
    version: str
    live: str  # the color that was live when the operation started
    started: str
    holder: str
    # What deploy and canary put on the idle group with the version (issue 11): the image digest and the bundle
    # URL, resolved once when the operation starts. Kept in the state store's record, so a rerun after a crash
    # sets the same; not in the tag (a tag value holds 256 characters, A12): without a store the idle group's own
    # tags, written in the same call as its version, are the record. Not compared: the tag mirror lacks them.
    digest: str | None = field(default=None, compare=False)
    bootstrap: str | None = field(default=None, compare=False)
    # The bake (bake.py, issue 12): {"seconds", "alarms", "poll_s"} from the start of a deploy or canary asked to
    # bake, "until" (its absolute deadline) once it starts, "watched" (the watcher's last poll). `reason`: why a
    # rollback or abort started on its own ("alarm NAME", "unhealthy i-..."). In the state store's record only
    # (--bake needs a store): the tag mirror lacks them, so they are not compared either.
    bake: dict | None = field(default=None, compare=False)
    reason: str | None = field(default=None, compare=False)
    # Whether the operation names its copies with the marker (alarms.MARKER; `"copies": "marked"` in the store):
    # an operation an older version started made unmarked same-name copies, which its rollback must still find.
    marked: bool = field(default=False, compare=False)

    def encode(self):
        value = (f"action={self.action};phase={self.phase};version={self.version};live={self.live};"
                 f"started={self.started};holder={self.holder}")
        if len(value) > TAG_VALUE_MAX:
            # Cutting it would cut the holder, and the lock would no longer recognise its own holder (A12).
            raise UsageError(f"the operation record for version {self.version!r} by {self.holder} is "
                             f"{len(value)} characters; a tag value holds {TAG_VALUE_MAX} (use a shorter version)")
        return value

    @classmethod
    def decode(cls, value):
        fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
        try:
            return cls(fields["action"], fields["phase"], fields.get("version", ""), fields["live"],
                       fields.get("started", ""), fields.get("holder", ""))
        except KeyError as exc:
            raise UsageError(f"unreadable {TAG_OPERATION} tag {value!r} (missing {exc}); "
                             "delete the tag by hand after checking both groups")

    def moved(self, **changes):
        values = dict(self.__dict__)
        values.update(changes)
        return Record(**values)

    @classmethod
    def from_state(cls, op, holder):
        """From the state store's `operation` (store.py)."""
        return cls(op["action"], op["phase"], op.get("version", ""), op["live"], op.get("started", ""), holder,
                   digest=op.get("digest"), bootstrap=op.get("bootstrap"), bake=op.get("bake"),
                   reason=op.get("reason"), marked=op.get("copies") == "marked")

    def as_state(self):
        out = {"action": self.action, "phase": self.phase, "version": self.version, "live": self.live,
               "started": self.started}
        # "" is recorded too: resolved as none (the registry could not be asked; no bundle tag), not to resolve again.
        out.update({k: v for k, v in (("digest", self.digest), ("bootstrap", self.bootstrap)) if v is not None})
        out.update({k: v for k, v in (("bake", self.bake), ("reason", self.reason)) if v})
        if self.marked:
            out["copies"] = "marked"
        return out

    def as_json(self):
        return {"action": self.action, "phase": self.phase, "version": self.version, "live": self.live,
                "started": self.started, "holder": self.holder, "digest": self.digest, "bootstrap": self.bootstrap,
                "bake": self.bake, "reason": self.reason}


@dataclass(frozen=True)
class Snapshot:
    """One observation of a service: the pair, plus what the next decision needed (read on demand, else None).

    `health` maps instance id -> {lb key: state}; `policies`/`scheduled` map color -> DescribePolicies /
    DescribeScheduledActions records; `retired` lists detached, not yet terminated instance ids.
    """

    service: str
    groups: dict[str, Group]
    health: dict[str, dict[str, str]] | None = None
    policies: dict[str, list] | None = None
    scheduled: dict[str, list] | None = None
    alarms: list | None = None  # DescribeAlarms MetricAlarms, read with the policies (alarms.py, W1)
    retired: list[str] | None = None
    # The state store (store.py), when one is configured: its URL, and lock.json as observed (None: absent).
    store_url: str | None = None
    stored: object | None = None
    # What a launch wait or the Standby gate reads beyond the describe (runner.observe, health.WaitFacts):
    # `reasons`, DescribeTargetHealth's reason codes (instance id -> {lb key: code}, E5), read with the health at
    # no extra call; `running`, `bluegreen:running` values of the instances asked about (id -> raw value; absent:
    # no tag); `activities`, the watched group's newest scaling activities (A15); `hooked`, whether it has a
    # launch lifecycle hook (E5); `cross_zone_off`, whether a load balancer of the pair routes within zones (E6).
    reasons: dict[str, dict[str, str]] | None = None
    running: dict[str, str] | None = None
    activities: list | None = None
    hooked: bool | None = None
    cross_zone_off: bool | None = None
    peers_publish: bool | None = None  # the other group's instances publish `bluegreen:running` (X1, finding 7)
    # Read with the target health ("health" need): EC2 state of the pair's instances in or entering Standby (A4:
    # their group keeps listing them, "Healthy", after an EC2 termination), id -> "running", "terminated", ...
    aside_states: dict[str, str] | None = None
    # A workers wait's poll (issue 16, runner.observe's `workers`): the watched group's `bluegreen:workers` tags
    # (id -> value; absent: no tag), and the EC2 state of those whose tag is not yet the wanted value.
    workers: dict[str, str] | None = None
    workers_ec2: dict[str, str] | None = None

    def has(self, need):
        """Whether the extra a step needs ("policies", "retired" or "health") was read."""
        return {"policies": self.policies is not None and self.scheduled is not None and self.alarms is not None,
                "retired": self.retired is not None, "health": self.health is not None}[need]

    @cached_property
    def tag_record(self):
        """The operation as the groups' tags record it: the lock itself without a store, its mirror with one."""
        for color in COLORS:
            value = self.groups[color].tags.get(TAG_OPERATION)
            if value:
                return Record.decode(value)
        return None

    @property
    def from_store(self):
        """Whether the store decides: configured and its lock.json exists. A store with no lock.json yet (a pair
        last run by a version without one, or a lost object) falls back to the tags, which the next lock write
        migrates into the store."""
        return self.store_url is not None and self.stored is not None

    @cached_property
    def record(self):
        if self.from_store:
            op = self.stored.operation
            return Record.from_state(op, self.stored.holder) if op else None
        return self.tag_record

    @property
    def detached(self):
        """The ids finalize detached, as the state store recorded them before each DetachInstances (finding 13);
        None without a store (the tags hold no list: finalize then searches with backoff, X1)."""
        if not self.from_store or not self.stored.operation:
            return None
        return tuple(self.stored.operation.get("detached", ()))

    @property
    def created(self):
        """What the operation's deploy created, as the state store lists it ([kind, group, name], steps.RecordWrite);
        empty without a store (the names' marker alone then tells the tool's copies, alarms.py)."""
        if not self.from_store or not self.stored.operation:
            return ()
        return tuple(tuple(c) for c in self.stored.operation.get("created", ()))

    @property
    def lease_live(self):
        """Whether the recorded holder's lease is live by S3's clock (always, without a store: today's rule)."""
        return self.stored.lease_live if self.from_store else True

    @cached_property
    def saved(self):
        """What the live group had when the operation started: (sizes, suspended processes), or None."""
        rec = self.record
        if rec is None:
            return None
        if self.from_store:
            saved = self.stored.doc.get("saved") or {}
            if "sizes" not in saved:
                return None
            return tuple(saved["sizes"]), tuple(saved.get("suspended", ()))
        old = self.groups[rec.live]
        if old.saved_sizes is None:
            return None
        return old.saved_sizes, old.saved_suspended

    @property
    def drift(self):
        """One line when the tag mirror disagrees with the store (an IaC apply wiped or reset tags, X3)."""
        if not self.from_store:
            return None
        mirror, rec = self.tag_record, self.record
        if mirror == rec:
            return None
        return (f"the groups' {TAG_OPERATION} tags say {mirror.encode() if mirror else 'nothing'}, the state store "
                f"says {rec.encode() if rec else 'nothing'}; the store wins and the next step rewrites the tags")

    @property
    def live(self):
        """The color the load balancer should be serving, or None when that cannot be told."""
        rec = self.record
        if rec is not None:
            flipped = (rec.action == "deploy" and rec.phase in ("flip", "flipped", "bake")) or rec.action == "finalize"
            return other(rec.live) if flipped else rec.live
        running = [c for c in COLORS if self.groups[c].desired > 0]
        return running[0] if len(running) == 1 else None


def group_from_describe(record):
    """A Group from one DescribeAutoScalingGroups record."""
    tags = {t["Key"]: t["Value"] for t in record.get("Tags", [])}
    instances = tuple(
        Instance(i["InstanceId"], i["LifecycleState"], i.get("HealthStatus", "Healthy"),
                 zone=i.get("AvailabilityZone", ""), protected=bool(i.get("ProtectedFromScaleIn")),
                 weight=int(i["WeightedCapacity"]) if i.get("WeightedCapacity") else None)
        for i in sorted(record.get("Instances", []), key=lambda i: i["InstanceId"]))
    overrides = (((record.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}).get("Overrides") or [])
    return Group(
        name=record["AutoScalingGroupName"], color=tags.get(TAG_COLOR, ""),
        min=record["MinSize"], desired=record["DesiredCapacity"], max=record["MaxSize"],
        tags=tags, instances=instances,
        suspended=tuple(sorted(p["ProcessName"] for p in record.get("SuspendedProcesses", []))),
        target_groups=tuple(record.get("TargetGroupARNs", [])),
        classic_lbs=tuple(record.get("LoadBalancerNames", [])),
        zones=tuple(sorted(record.get("AvailabilityZones", []))),
        subnets=tuple(sorted(s for s in (record.get("VPCZoneIdentifier") or "").split(",") if s)),
        health_check_type=record.get("HealthCheckType", "EC2"),
        grace_period=int(record.get("HealthCheckGracePeriod") or 0),
        new_protected=bool(record.get("NewInstancesProtectedFromScaleIn")),
        capacity_type=record.get("DesiredCapacityType") or "units",
        mixed_weights=tuple(o["WeightedCapacity"] for o in overrides if o.get("WeightedCapacity")))


def pair_from_describe(service, records, same_load_balancers=True):
    """The blue and green groups of `service` among DescribeAutoScalingGroups records, or UsageError.
    `same_load_balancers=False`: leave that check to the caller (doctor reports it as a check)."""
    names = {color: [] for color in COLORS}  # every group claiming a color, to refuse two of one
    pair = {}
    for rec in records:
        group = group_from_describe(rec)
        if group.tags.get(TAG_SERVICE) != service:
            continue
        if group.color not in COLORS:
            raise UsageError(f"group {group.name} of service {service} has {TAG_COLOR}={group.color!r}; "
                             "expected blue or green")
        names[group.color].append(group.name)
        pair.setdefault(group.color, group)
    if not pair:
        raise UsageError(f"no Auto Scaling group is tagged {TAG_SERVICE}={service} in this account and Region")
    for color in COLORS:
        if not names[color]:
            raise UsageError(f"service {service} has no group tagged {TAG_COLOR}={color}; tag the idle group")
        if len(names[color]) > 1:
            raise UsageError(f"service {service} has {len(names[color])} groups tagged {TAG_COLOR}={color} "
                             f"({', '.join(sorted(names[color]))}); exactly one is allowed")
    if same_load_balancers:
        check_same_load_balancers(service, pair)
    return pair


def check_same_load_balancers(service, pair):
    """Both groups behind the same load balancers, and at least one (E4): otherwise "healthy in every load
    balancer of the group" would be true of a group attached to none, and a flip could empty the real one."""
    blue, green = pair["blue"], pair["green"]
    for what, b, g in (("target groups", blue.target_groups, green.target_groups),
                       ("Classic load balancers", blue.classic_lbs, green.classic_lbs)):
        if set(b) != set(g):
            raise UsageError(f"{blue.name} and {green.name} of service {service} are not attached to the same "
                             f"{what} (blue: {', '.join(sorted(b)) or 'none'}; green: {', '.join(sorted(g)) or 'none'})")
    if not blue.target_groups and not blue.classic_lbs:
        raise UsageError(f"{blue.name} and {green.name} of service {service} are attached to no load balancer; "
                         "blue/green needs the same target group or Classic ELB on both")


def worst_health(states):
    """One word for an instance across all its load balancers: the worst state wins.

    A state this list does not know (`unavailable`, `unhealthy.draining`, E5) ranks as the worst on purpose:
    status must never show an instance as better than the load balancer says it is.
    """
    if not states:
        return "unused"
    return min(states, key=lambda s: HEALTH_ORDER.index(s) if s in HEALTH_ORDER else 0)


def classic_state(raw, description=""):
    """E3: Classic ELB says InService / OutOfService; map it onto the target-group words.

    OutOfService also covers "registration still in progress", so it counts as `initial` unless the
    description says the health checks failed (conservative: a real failure then shows as a timeout). An
    instance whose connections drain after deregistration stays InService with the description "Instance
    deregistration currently in progress" (E3): it takes no new requests, so it is `draining`, not `healthy`.
    """
    if raw == "InService":
        return "draining" if "deregistration" in (description or "").lower() else "healthy"
    return "unhealthy" if "failed" in (description or "").lower() else "initial"
