"""`bluegreen`: standby-based blue/green deployment between two Auto Scaling groups on one load balancer.

The only place that reads flags and the environment, configures logging, and makes AWS clients. `main(argv,
environ, seams)` runs in-process too: tests pass `Seams` (time, the step hook, who this process is) instead of
anything a stray environment variable could switch on in an installed `bluegreen`.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Callable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from agent import contract

from . import bake as bake_mod
from . import bootstrap, doctor, events, plan, plan_init, preflight, render, steps, userdata
from . import store as store_mod
from .aws import CallCounter, DeployerAws, translate
from .errors import Aborted, BlueGreenError, RolledBack, UsageError
from .health import ReplacementBudget
from .model import COLORS, TAG_OPERATION, check_version, other, pair_from_describe
from .runner import Runner, observe

log = logging.getLogger(__name__)

EXIT_CODES = """exit codes:
  0  done
  1  failed and safely aborted (or stopped safely: rerun the command, or `bluegreen rollback`); doctor: a check fails
  2  usage or bad input (unknown service, bad version, bad S3 URL, ...), or pre-flight refused (nothing changed)
  3  conflict: another operation holds the lock, or the command does not fit the current phase
  4  AWS or credentials error
"""

# Precedence, in this one place: flag > environment > default (STYLE.md point 7).
DEFAULTS = {"poll_interval": ("BLUEGREEN_POLL_INTERVAL", 5.0), "timeout": ("BLUEGREEN_TIMEOUT", 600.0),
            "lease": ("BLUEGREEN_LEASE", store_mod.LEASE_S)}


def resolve(args, environ):
    for name in DEFAULTS:
        if getattr(args, name, None) is None:
            setattr(args, name, setting(name, environ))
    if getattr(args, "lease", None) is not None and args.lease < store_mod.LEASE_MIN_S:
        raise UsageError(f"BLUEGREEN_LEASE={args.lease:g} is below {store_mod.LEASE_MIN_S:g} s: a lease must outlast "
                         "two AWS calls with their retries, or a holder that is only slow would lose it")
    return args


def setting(name, environ):
    """One of DEFAULTS without its flag: the environment, else the default (doctor and status, which have no
    --poll-interval, state a rollback's times with the poll it would use)."""
    env, default = DEFAULTS[name]
    raw = environ.get(env)
    try:
        return _seconds(raw) if raw else default
    except ValueError:
        raise UsageError(f"{env}={raw!r} is not a positive number of seconds") from None


def _seconds(text):
    value = float(text)
    # nan compares false with everything: without isfinite a poll interval of nan would poll without pause.
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def positive_float(text):
    try:
        return _seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a positive, finite number of seconds") from None


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def replacement_budget(text):
    try:
        return ReplacementBudget.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a count (0, 3) or a percentage of the capacity (10%)") from None


def add_bake_flags(parser, finalize):
    parser.add_argument("--bake", type=positive_float, metavar="SECONDS",
                        help="after the flip (canary: once healthy), watch the alarms and the new fleet's health for "
                             "SECONDS; an alarm in ALARM or a fleet short of healthy capacity beyond the replacement "
                             "budget " + ("rolls back at once (exit 1)" if finalize else "removes the canary (exit 1)"))
    parser.add_argument("--alarm", action="append", default=[], metavar="NAME",
                        help=f"a CloudWatch alarm the bake watches (repeatable; with the groups' {contract.TAG_ALARMS} "
                             "tag, the union)")
    if finalize:
        parser.add_argument("--finalize", action="store_true", help="finalize once the bake has passed")


MAX_REPLACEMENTS_HELP = ("new instances that may fail and be replaced during the launch wait before the deploy "
                         "aborts: a count or N%% of the capacity (default: 10%%, at least 2; 0 aborts on the first)")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", help="AWS Region (default: the standard AWS chain, C1)")
    common.add_argument("--profile", help="AWS profile (default: the standard AWS chain)")
    common.add_argument("--output", choices=("text", "json"), default="text", help="stdout format")
    common.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    mutating = argparse.ArgumentParser(add_help=False)
    mutating.add_argument("--dry-run", action="store_true", help="print the plan and the AWS calls; change nothing")
    mutating.add_argument("--timeout", type=positive_float,
                          help="seconds each wait may take (env BLUEGREEN_TIMEOUT, default 600)")
    mutating.add_argument("--poll-interval", type=positive_float,
                          help="seconds between polls (env BLUEGREEN_POLL_INTERVAL, default 5)")
    mutating.add_argument("--force-unlock", action="store_true",
                          help="take over the lock even if its holder still looks alive")
    # Issue 12, events: flag > the groups' tag; nothing else names a sink.
    mutating.add_argument("--event-bus", metavar="NAME",
                          help=f"put an EventBridge event per transition on this bus (name or ARN; default: the "
                               f"groups' {contract.TAG_EVENT_BUS} tag, else none)")
    mutating.add_argument("--sns-topic", metavar="ARN",
                          help=f"publish an SNS message per transition to this topic (default: the groups' "
                               f"{contract.TAG_SNS_TOPIC} tag, else none)")
    # Rollback done has two stages (issue 10): `restored` (the old fleet serves, the new one takes no new
    # requests: recovery ends) and `settled` (sizes restored, the new group empty, processes resumed, unlocked).
    undoing = argparse.ArgumentParser(add_help=False)
    undoing.add_argument("--wait", choices=plan.ROLLBACK_WAITS, default="settled",
                         help="rollback (and a deploy's or canary's abort): exit once `restored`, leaving the record "
                              "in phase restored for a rerun of `bluegreen rollback` to settle, or once `settled` "
                              "(default)")
    stateful = argparse.ArgumentParser(add_help=False)
    stateful.add_argument("--state", metavar="s3://bucket/prefix/",
                          help="the state store (env BLUEGREEN_STATE; default: the groups' bluegreen:state tag, else "
                               "<bluegreen:bootstrap prefix>.bluegreen/)")
    checked = argparse.ArgumentParser(add_help=False)
    checked.add_argument("--max-drain", type=non_negative_int, default=preflight.MAX_DRAIN_S, metavar="SECONDS",
                         help="warn (no longer refuse) when a load balancer drains longer than this (default "
                              f"{preflight.MAX_DRAIN_S}): a long drain delays a rollback's settled stage and "
                              "finalize, not its restored stage")

    # Issue 11, "the bundle belongs to the version": deploy and canary set the idle group's bluegreen:bootstrap with
    # its version, in one call.
    launching = argparse.ArgumentParser(add_help=False)
    launching.add_argument("--bootstrap", metavar="s3://bucket/prefix/<sha256>/",
                           help="the bundle the new instances run (what push-bootstrap printed); default: the latest "
                                "pushed under the pair's base (its LATEST) when a group names a content-addressed "
                                "bundle, else the idle group's bluegreen:bootstrap as it is (an old-style prefix)")
    parser = argparse.ArgumentParser(
        prog="bluegreen", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bluegreen {contract.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_text, parents):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES, parents=parents,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("status", "which color is live, versions, sizes, instances and the operation in progress", [common, stateful])
    p.add_argument("service")
    p = add("deploy", "launch VERSION in the idle group, then move the live group to Standby",
            [common, mutating, stateful, checked, undoing, launching])
    p.add_argument("service")
    p.add_argument("version")
    p.add_argument("--max-replacements", type=replacement_budget, metavar="N|N%", help=MAX_REPLACEMENTS_HELP)
    add_bake_flags(p, finalize=True)
    p = add("rollback", "return the old group to service, then empty the new one (from any phase)",
            [common, mutating, stateful, undoing])
    p.add_argument("service")
    p = add("finalize", "after a flip: detach and terminate the old Standby instances", [common, mutating, stateful])
    p.add_argument("service")
    p = add("canary", "serve VERSION from N instances of the idle group beside the live fleet",
            [common, mutating, stateful, checked, undoing, launching])
    p.add_argument("service")
    p.add_argument("version")
    p.add_argument("--count", type=positive_int, default=1, help="canary instances (default 1)")
    p.add_argument("--max-replacements", type=replacement_budget, metavar="N|N%", help=MAX_REPLACEMENTS_HELP)
    add_bake_flags(p, finalize=False)
    # issue 15: a pair the template made has no version and no capacity; init brings its first color up.
    p = add("init", "bring a new pair's first color up: set VERSION (with its digest and bundle) on it, size it to N "
            "and wait until N instances are healthy; from then on `deploy` owns the pair",
            [common, mutating, stateful, checked])
    p.add_argument("service")
    p.add_argument("version")
    p.add_argument("--capacity", type=positive_int, required=True, help="the instances to start (MinSize and "
                   "desired; MaxSize is raised to it if below)")
    p.add_argument("--color", choices=COLORS, default="blue", help="the color to bring up (default blue)")
    p.add_argument("--bootstrap", metavar="s3://bucket/prefix/<sha256>/",
                   help="the bundle the instances run (what push-bootstrap printed); default: the latest pushed "
                        f"under the base beside the groups' {contract.TAG_STATE} store (s3://B/SERVICE/ for "
                        "s3://B/SERVICE/.bluegreen/)")
    p = add("doctor", "check a pair read-only: every pre-flight check with its fix, and the expected times "
            "(exit 0 nothing fails, 1 a check fails)", [common, stateful, checked])
    p.add_argument("service")
    p = add("history", "the operations journaled in the state store, newest first", [common, stateful])
    p.add_argument("service")
    p.add_argument("--limit", type=positive_int, default=20, help="entries (default 20)")
    p = add("push-bootstrap", "upload a bootstrap folder under s3://bucket/prefix/<manifest sha256>/, its SHA-256 "
            "manifest last, then prefix/LATEST; print the bundle's URL", [common])
    p.add_argument("directory")
    p.add_argument("url", metavar="s3://bucket/prefix/")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded; upload nothing")
    # boot (issue 11): the instance's cloud-init user-data, rendered strictly; no AWS call.
    p = sub.add_parser("user-data", help="print the cloud-init user-data for a group's launch template",
                       description=userdata.__doc__.splitlines()[0], epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compose-project", required=True, help="the compose project name on the instances")
    p.add_argument("--bucket", required=True, help="the only bucket the agent may read bundles from")
    p.add_argument("--s3-unsigned", action="store_true", help="read bundles with unsigned GETs (S1)")
    p.add_argument("--template", help="the template (default: cloud-init/user-data.yaml.tmpl of this checkout)")
    p.add_argument("--debug", action="store_true", help="tracebacks")
    p.set_defaults(output="text")
    return parser


def configure_logging(debug):
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for noisy in ("botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def make_clients(args, session=None):
    """Every client the deployer uses, from one session (a caller that makes many, the tests, passes its own:
    a session caches the service models its clients load)."""
    # A10: all Auto Scaling calls share one token bucket; botocore backs off and retries Throttling for us. The
    # standard mode, not adaptive: adaptive's client-side rate limiter may hold a request back for an unbounded
    # while, and a call must end within store.MAX_CALL_S, retries included (4 attempts of at most 5 s connect +
    # 10 s read, plus the backoff): a rollback that takes over waits that long for the displaced holder's last
    # call (issue 9, "No late writes").
    config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=10,
                    user_agent_extra="asg-bluegreen")
    try:
        session = session or boto3.session.Session(profile_name=args.profile, region_name=args.region)
        clients = {name: session.client(name, config=config)
                   for name in ("autoscaling", "elbv2", "elb", "ec2", "s3", "ecr", "cloudwatch")}
        # Events are notifications: a sink that does not answer must cost the command seconds, not the minute and
        # a half an operation's call may take (events.py), so fewer attempts and shorter timeouts.
        notify = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=3, read_timeout=5,
                        user_agent_extra="asg-bluegreen")
        clients.update({name: session.client(name, config=notify) for name in ("events", "sns")})
        return clients
    except BotoCoreError as exc:
        raise translate(exc, "configure") from exc


def holder_alive(holder):
    """Whether the process named by a lock holder (user@host:pid) may still run.

    Knowable only on the same host; a holder on another host is assumed alive (the lock's documented
    limit), so taking its lock over needs --force-unlock.
    """
    user_host, _, pid = holder.rpartition(":")
    host = user_host.rpartition("@")[2]
    if host != socket.gethostname():
        return bool(host)
    if not pid.isdigit():
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":  # killed, not yet reaped
                return False
    except OSError:
        pass
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Seams:
    """What an in-process caller (the tests) may replace: time, who this process is, and a hook called with each
    step just before it is applied. The defaults are the real ones."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    me: str | None = None
    holder_alive: Callable[[str], bool] = holder_alive
    before_step: Callable | None = None
    make_clients: Callable | None = None
    lease_s: float | None = None  # the tests' short leases; BLUEGREEN_LEASE has a floor (store.LEASE_MIN_S)


def context_factory(force, seams):
    me = seams.me or f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"
    return lambda: steps.Context(me=me, now=seams.now(), holder_alive=seams.holder_alive, force_unlock=force)


class Cli:
    def __init__(self, args, clients, seams, environ=None, argv=()):
        self.args = args
        self.seams = seams
        self.environ = environ or {}
        self.argv = list(argv)
        self.runner = None
        self.counter = CallCounter()
        self.aws = DeployerAws(clients["autoscaling"], clients["elbv2"], clients["elb"], clients["ec2"], self.counter,
                               sleep=seams.sleep, clock=seams.clock, cloudwatch=clients.get("cloudwatch"))
        self.s3 = clients["s3"]
        self.counter.attach(self.s3)
        self.ecr = clients.get("ecr")
        for client in (self.ecr, clients.get("events"), clients.get("sns")):
            if client is not None:
                self.counter.attach(client)
        self.clients = clients
        self.groups = None  # the pair as store() last read it: what the event sinks' tags are read from
        self.started = time.monotonic()
        self.bake = None  # bake.Bake: what deploy or canary --bake asked for, checked before anything changes

    def summary(self, **fields):
        out = {"schema_version": contract.SCHEMA_VERSION, "command": self.args.command,
               "aws_calls": self.counter.calls, "aws_attempts": self.counter.attempts,
               "aws_calls_by_op": dict(sorted(self.counter.by_op.items())),
               "elapsed_s": round(time.monotonic() - self.started, 3)}
        if self.runner is not None and self.runner.journal_key and "journal" not in fields:
            out["journal"] = self.runner.journal_key
        out.update(fields)
        return out

    def store(self, me=None):
        """The service's StateStore, or None (with the one warning naming the race) when none is named."""
        a = self.args
        # Only the tags locate the store: the load balancers are pre-flight's and the runner's to check.
        groups = pair_from_describe(a.service, self.aws.describe_service_groups(a.service), same_load_balancers=False)
        self.groups = groups
        found = store_mod.locate(a.service, groups, a.state, self.environ)
        if found is None:
            log.warning(store_mod.NO_STORE_WARNING.format(service=a.service, tag=TAG_OPERATION))
            return None
        bucket, prefix, source = found
        log.debug("state store s3://%s/%s (from %s)", bucket, prefix, source)
        lease = self.seams.lease_s or getattr(a, "lease", None) or store_mod.LEASE_S
        return store_mod.StateStore(self.s3, bucket, prefix, a.service, me or "", self.seams.clock, lease_s=lease)

    def sinks(self):
        """events.Sinks for this command: each sink from its flag, else the groups' tag (both groups must agree)."""
        a = self.args
        named = {}
        for flag, key in (("event_bus", contract.TAG_EVENT_BUS), ("sns_topic", contract.TAG_SNS_TOPIC)):
            value = getattr(a, flag, None)
            if not value and self.groups:
                values = {g.tags[key] for g in self.groups.values() if g.tags.get(key)}
                if len(values) > 1:
                    fix = (f"the groups of {a.service} name different {key} tags ({', '.join(sorted(values))}); "
                           f"make them agree, or pass --{flag.replace('_', '-')}")
                    if a.command != "rollback":
                        raise UsageError(fix)
                    # Rollback is the escape hatch: a notification setting never holds it back.
                    log.warning("%s (this rollback sends its events to neither)", fix)
                    values = set()
                value = values.pop() if values else None
            named[flag] = value
        return events.Sinks(self.clients.get("events"), self.clients.get("sns"), bus=named["event_bus"],
                            topic=named["sns_topic"], json_lines=a.output == "json")

    def status(self):
        store = self.store()
        snap = observe(self.aws, self.args.service, health_of=("blue", "green"), store=store)
        now = self.seams.now()
        data = render.status_data(snap, now=now)
        # Issue 16: whether each instance's in-service-only services run, as its agent's watch last tagged it.
        ids = [i["id"] for g in data["groups"].values() for i in g["instances"]]
        workers = self.aws.describe_instance_tag(ids, contract.TAG_WORKERS) if ids else {}
        for g in data["groups"].values():
            for inst in g["instances"]:
                inst["workers"] = workers.get(inst["id"])
        data["rollback_now"] = None
        if doctor.flip_open(snap):
            # Issue 13: what a rollback started now would take, from the pair's own load balancer settings (read
            # only during an open flip: a status at rest costs no more calls).
            facts = preflight.Facts(snap, **preflight.read_load_balancers(self.aws, snap.groups))
            data["rollback_now"] = doctor.rollback_now(facts, setting("poll_interval", self.environ), now)
        return data, render.status_text(data)

    def history(self):
        store = self.store()
        if store is None:
            raise UsageError(f"history needs a state store for {self.args.service}: set the groups' "
                             f"{contract.TAG_STATE} tag, or --state / BLUEGREEN_STATE")
        entries = store.history(self.args.limit)
        return (self.summary(service=self.args.service, state=store.url, entries=entries),
                render.history_text(self.args.service, entries))

    def ecr_for(self, region):
        """An ECR client of `region` (an image may live in another Region than the pair), made like the others."""
        if self.ecr is not None and self.ecr.meta.region_name == region:
            return self.ecr
        try:
            client = boto3.session.Session(profile_name=self.args.profile, region_name=region).client(
                "ecr", config=self.ecr.meta.config if self.ecr is not None else None)
        except BotoCoreError as exc:
            raise translate(exc, "configure") from exc
        self.counter.attach(client)
        return client

    def facts(self, store, version=None, bundle=None):
        return preflight.gather(self.aws, self.args.service, store, version=version, s3=self.s3,
                                ecr_for=self.ecr_for, bundle=bundle)

    def bundle_for(self, snap):
        """The bundle URL deploy or canary sets on the idle group (issue 11), or None to leave its tag as it is:
        --bootstrap; else the latest pushed (BASE/LATEST) under the base of the idle group's bundle when that is
        content-addressed; an old-style (mutable) prefix is left as it is, as before bundles were versioned."""
        a = self.args
        rec = snap.record
        current = preflight.launch_tags(snap).get(contract.TAG_BOOTSTRAP)
        if rec is not None and rec.action in ("deploy", "canary") and rec.version == a.version and \
                (rec.bootstrap is not None or rec.digest is not None):
            # Recorded when the operation started (plan.launch_values): what its rerun sets, whatever is latest.
            recorded = rec.bootstrap or None
            if a.bootstrap and a.bootstrap != recorded:
                raise UsageError(f"the {rec.action} of {a.version} in progress set the bundle {recorded or '(none)'}; "
                                 f"finish it with that one (drop --bootstrap), or `bluegreen rollback {a.service}` "
                                 "first")
            return recorded
        if a.bootstrap:
            self._check_store_stays(snap, current, a.bootstrap)
            return a.bootstrap
        # The pair's base: the idle group's bundle, or the live group's when only that one is content-addressed
        # (a pair moved to content-addressed bundles by one deploy --bootstrap: its other group still names the
        # old-style prefix until its next deploy, this one; or a pair `init` brought up, whose idle group names
        # no bundle yet).
        addressed = [(b, p) for b, p in (_parsed(u) for u in (current, *(g.bootstrap for g in snap.groups.values())))
                     if p is not None and contract.bundle_address(p) is not None]
        if not current and not addressed:
            return None
        if not addressed:
            log.info("%s is an old-style (mutable) bundle prefix: the deploy leaves it as it is; pass --bootstrap "
                     "with what push-bootstrap printed to give the version its own bundle", current)
            return None
        bucket, prefix = addressed[0]
        found = bootstrap.latest(self.s3, bucket, contract.bundle_base(prefix))
        if found is None:
            log.warning("nothing pushed under %s (no %s): the deploy leaves %s as it is",
                        contract.format_s3_url(bucket, contract.bundle_base(prefix)), contract.LATEST, current)
        return found

    def _check_store_stays(self, snap, current, url):
        """Without a bluegreen:state tag (or --state, BLUEGREEN_STATE) the state store sits beside the bundle's
        base: a bundle under another base would move the lock of the pair, so it is refused."""
        a = self.args
        if a.state or self.environ.get("BLUEGREEN_STATE") or not current or \
                any(g.tags.get(contract.TAG_STATE) for g in snap.groups.values()):
            return
        here, there = (store_mod.bundle_base_url(u, "--bootstrap") for u in (current, url))
        if here != there:
            raise UsageError(f"--bootstrap {url} is not under {here}, beside which the state store of {a.service} "
                             f"lives (no {contract.TAG_STATE} tag): push it under {here}, or give both groups a "
                             f"{contract.TAG_STATE} tag first")

    def launch_facts(self, store, choose_bundle):
        """The pre-flight facts of a launch of self.args.version, and self.launch: what the set-version step puts on
        the group with the version (issue 11; audit F8, F9), the image's digest and the bundle `choose_bundle(snap)`
        decides from the same observation the checks read (its manifest is then checked)."""
        chosen = {}

        def bundle(snap):
            chosen["url"] = choose_bundle(snap)
            return chosen["url"]

        facts = self.facts(store, self.args.version, bundle=bundle)
        image = facts.image
        self.launch = plan.Launch(digest=image.digest if image is not None and image.state == "found" else None,
                                  bootstrap=chosen.get("url"))
        return facts

    def preflight(self, store):
        """Refuse a new deploy or canary the pair cannot carry safely, before the lock is taken (exit 2, nothing
        changed). A rerun of the recorded operation of this same command and version skips the refusals its own
        earlier steps cause; another recorded operation is the planner's to refuse (exit 3) or resume."""
        a = self.args
        facts = self.launch_facts(store, self.bundle_for)
        rec = facts.snap.record
        resuming = None
        if rec is not None:
            if rec.action == a.command and rec.version == a.version:
                resuming = rec
            elif not (a.command == "deploy" and rec.action == "canary" and rec.version == a.version):
                return
        preflight.refuse(a.service, a.command,
                         preflight.refusal_checks(facts, a.version, resuming, max_drain=a.max_drain))
        self.bake = self.bake_for(facts.snap, store, resuming)

    def bake_for(self, snap, store, resuming):
        """The bake asked for (bake.Bake) or None, refused before anything changes when it cannot work (bake.refuse:
        an unknown alarm, one already in ALARM, a bake too short for the slowest). A rerun of an operation that
        recorded its bake goes on with the recorded one: no refusal, its alarm may be the reason to roll back."""
        a = self.args
        if a.bake is None:
            return None
        if store is None:
            raise UsageError(f"--bake needs a state store for {a.service} (its deadline and alarms are recorded "
                             f"there, for a rerun to resume): set the groups' {contract.TAG_STATE} tag, or --state / "
                             "BLUEGREEN_STATE")
        if resuming is not None and resuming.bake:
            recorded = bake_mod.Bake.from_state(resuming.bake)
            if (recorded.seconds, recorded.alarms) != (a.bake, tuple(bake_mod.alarm_names(a.alarm, snap.groups))):
                log.info("the %s of %s in progress recorded its bake (%g s, alarms %s): going on with that one",
                         a.command, a.version, recorded.seconds, ", ".join(recorded.alarms) or "none")
            return recorded
        names = bake_mod.alarm_names(a.alarm, snap.groups)
        bake_mod.refuse(a.bake, names, self.aws.describe_named_alarms(names) if names else [])
        return bake_mod.Bake(a.bake, tuple(names), a.poll_interval)

    def init_bundle(self, snap):
        """The bundle init sets (issue 11's rule: the bundle belongs to the version): the one a recorded init of
        this version chose; --bootstrap; else the latest pushed under the base the state tag sits in."""
        a = self.args
        rec = snap.record
        if rec is not None and rec.action == contract.ACTION_INIT and rec.version == a.version and \
                rec.bootstrap is not None:
            recorded = rec.bootstrap or None
            if a.bootstrap and a.bootstrap != recorded:
                raise UsageError(f"the init of {a.version} in progress set the bundle {recorded or '(none)'}; finish "
                                 "it with that one (drop --bootstrap)")
            return recorded
        if a.bootstrap:
            return a.bootstrap
        tagged = {g.tags.get(contract.TAG_STATE) for g in snap.groups.values()} - {None, ""}
        base = plan_init.bundle_base(tagged.pop()) if len(tagged) == 1 else None
        if base is None:
            raise UsageError(f"init {a.service}: pass --bootstrap with the URL push-bootstrap printed (the groups name "
                             f"no {contract.TAG_STATE} store s3://B/BASE/.bluegreen/ to find BASE/LATEST beside)")
        bucket, prefix = base
        found = bootstrap.latest(self.s3, bucket, prefix)
        if found is None:
            url = contract.format_s3_url(bucket, prefix)
            raise UsageError(f"nothing pushed under {url} (no {contract.LATEST}): run `bluegreen push-bootstrap DIR "
                             f"{url}` first, or pass --bootstrap")
        return found

    def init_preflight(self, store):
        """As deploy's pre-flight, for the color init brings up: a pair that is not new is refused first (exit 3),
        then every refusal of a deploy (exit 2), nothing changed."""
        a = self.args

        def bundle(snap):
            plan_init.resuming(snap, a.version, a.color)  # exit 3 before anything else is read or refused
            return self.init_bundle(snap)

        facts = self.launch_facts(store, bundle)
        preflight.refuse(a.service, a.command, preflight.refusal_checks(
            facts, a.version, plan_init.resuming(facts.snap, a.version, a.color), max_drain=a.max_drain))

    def doctor(self):
        facts = self.facts(self.store(), version=preflight.LAUNCH_VERSION)
        doc, code = doctor.report(facts, setting("poll_interval", self.environ), max_drain=self.args.max_drain)
        return doc, doctor.text(doc), code

    def planner(self):
        a = self.args
        launch = getattr(self, "launch", None)
        baking = {"bake": self.bake} if self.bake is not None else {}
        planners = {"deploy": lambda: partial(plan.plan_deploy, version=a.version, launch=launch, **baking),
                    "canary": lambda: partial(plan.plan_canary, version=a.version, count=a.count, launch=launch,
                                              **baking),
                    "rollback": lambda: partial(plan.plan_rollback, wait=a.wait),
                    "finalize": lambda: plan.plan_finalize,
                    "init": lambda: partial(plan_init.plan_init, version=a.version, color=a.color,
                                            capacity=a.capacity, launch=launch)}
        return planners[a.command]()

    def mutate(self):
        a = self.args
        ctx = context_factory(a.force_unlock, self.seams)
        title = f"{a.command} {a.service}" + (f" {a.version}" if a.command in ("deploy", "canary", "init") else "")
        store = self.store(me=ctx().me)
        sinks = self.sinks()
        if a.command in ("deploy", "canary"):
            self.preflight(store)
        elif a.command == "init":
            self.init_preflight(store)
        runner = Runner(self.aws, a.service, ctx, poll_interval=a.poll_interval, timeout=a.timeout,
                        sleep=self.seams.sleep, clock=self.seams.clock, before_step=self.seams.before_step,
                        store=store, journal={"command": " ".join(self.argv)},
                        budget=getattr(a, "max_replacements", None), sinks=None if a.dry_run else sinks)
        self.runner = runner
        if a.dry_run:
            planned = runner.plan(self.planner())
            data = self.summary(service=a.service, dry_run=True, result="planned", plan=render.plan_data(planned),
                                events={"event_bus": sinks.bus, "sns_topic": sinks.topic})
            text = render.plan_text(title, planned)
            if self.bake is not None:
                data["bake"] = bake_mod.dry_run_data(self.bake, runner.budget, a.command)
                text += "\n" + bake_mod.describe(self.bake, runner.budget, a.command) + (
                    "; then finalize" if getattr(a, "finalize", False) else "")
            return data, text
        log.info("%s: start (poll every %gs, each wait at most %gs; events: %s)", title, a.poll_interval, a.timeout,
                 sinks.describe())
        abort = partial(plan.plan_abort, wait=a.wait) if a.command in ("deploy", "canary") else \
            plan.plan_abort if a.command == "init" else None
        rollback = partial(plan.plan_rollback, wait=a.wait) if a.command == "deploy" else None
        try:
            snap = runner.run(self.planner(), abort=abort, rollback=rollback)
            if getattr(a, "finalize", False):
                # --finalize: the bake passed (or the deploy had already flipped): finalize now, in this process.
                log.info("%s: finalize", title)
                snap = runner.run(plan.plan_finalize)
        except Aborted as exc:
            raise Aborted(f"{title} {exc}", exc.cause) from exc.cause
        except RolledBack as exc:
            raise RolledBack(f"{title} {exc}", exc.cause) from exc.cause
        final = observe(self.aws, a.service, health_of=(snap.live,) if snap.live else (), store=store)
        data = self.summary(service=a.service, result="done", steps=runner.executed,
                            status=render.status_data(final), journal=runner.journal_key, **self.stages())
        return data, self.done_text(title, final, runner.executed)

    def stages(self):
        """Rollback's and abort's two stages: seconds from this run's start to each, null when this run did not
        reach it (a rerun that found the record already `restored` reports only `settled_s`)."""
        stage = self.runner.stage_s if self.runner is not None else {}
        if self.args.command != "rollback" and not any(stage.values()):
            return {}  # a deploy or canary that did not abort
        return {"restored_s": stage[contract.PHASE_RESTORED], "settled_s": stage[contract.EVENT_SETTLED]}

    def done_text(self, title, snap, executed):
        a = self.args
        live = snap.live
        rec = snap.record
        note = "" if executed else " (already done: nothing to change)"
        if a.command == "deploy" and getattr(a, "finalize", False):
            return f"{title}: done{note}; baked and finalized: {snap.groups[live].name} is live"
        if a.command == "deploy":
            old = snap.groups[other(live)]
            waiting = len(old.in_state("Standby", "EnteringStandby"))
            return (f"{title}: done{note}; {snap.groups[live].name} is live, {waiting} "
                    f"instances of {old.name} wait in Standby. Next: `bluegreen finalize {a.service}` "
                    f"or `bluegreen rollback {a.service}`")
        if a.command == "canary":
            return (f"{title}: done{note}; {a.count} canary instance(s) in {snap.groups[other(rec.live)].name} "
                    f"serve beside {snap.groups[rec.live].name}. Next: `bluegreen deploy {a.service} {a.version}`"
                    f" or `bluegreen rollback {a.service}`")
        if a.command == "init":
            return (f"{title}: done{note}; {snap.groups[a.color].name} is live with {a.capacity} instance(s). Next: "
                    f"`bluegreen doctor {a.service}`, then `bluegreen deploy {a.service} VERSION`")
        return f"{title}: done{note}; {snap.groups[live].name if live else 'no group'} is live"

    def push_bootstrap(self, planned):
        """`planned` (bootstrap.Push): what bootstrap.plan_push read and hashed before any client was made. Text
        output is the bundle's URL alone, for `URL=$(bluegreen push-bootstrap ...)`; the rest goes to stderr."""
        a = self.args
        p = planned
        fields = {"bucket": p.bucket, "base": p.base, "prefix": p.prefix, "url": p.url, "manifest": p.manifest}
        if a.dry_run:
            for line in ([f"push-bootstrap (dry run: nothing uploaded) to {p.url}:"]
                         + [f"  PutObject {key} (unless the bundle is there already)" for _, key in p.uploads]
                         + [f"  PutObject {p.prefix}{bootstrap.MANIFEST} (last)",
                            f"  PutObject {p.latest_key} (unless it names this bundle already)"]):
                log.info("%s", line)
            return self.summary(dry_run=True, result="planned", **fields), p.url
        count = bootstrap.push(self.s3, p)
        log.info("%s: %s", p.url, f"{count} object(s) written" if count else
                 "pushed before, and the latest: nothing written")
        return self.summary(result="done", objects=count, **fields), p.url


def _parsed(url):
    """(bucket, prefix) of an S3 URL, or (None, None) when there is none or it is bad (pre-flight says why)."""
    try:
        return contract.parse_s3_url(url) if url else (None, None)
    except contract.ContractError:
        return None, None


def main(argv=None, environ=None, seams=None):
    environ = os.environ if environ is None else environ
    seams = seams or Seams()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.debug)
    cli = None
    code = 0
    try:
        if args.command in ("deploy", "canary", "init"):
            check_version(args.version)
            if getattr(args, "bake", None) is None and (getattr(args, "alarm", None) or getattr(args, "finalize", False)):
                raise UsageError("--alarm and --finalize need --bake SECONDS: alarms are watched, and finalize "
                                 "follows, only during a bake")
            if args.bootstrap:
                args.bootstrap = bootstrap.canonical_url(args.bootstrap)
        if args.command not in ("status", "history", "push-bootstrap", "doctor"):
            resolve(args, environ)
        if args.command == "push-bootstrap":
            pushed = bootstrap.plan_push(args.directory, args.url)  # bad input fails before any client is made
        if args.command == "user-data":
            print(userdata.render(userdata.read_template(args.template), {
                "COMPOSE_PROJECT": args.compose_project, "BOOTSTRAP_BUCKET": args.bucket,
                "S3_UNSIGNED": "true" if args.s3_unsigned else "false"}), end="")
            return 0
        cli = Cli(args, (seams.make_clients or make_clients)(args), seams, environ,
                  ["bluegreen"] + list(sys.argv[1:] if argv is None else argv))
        if args.command == "status":
            data, text = cli.status()
        elif args.command == "history":
            data, text = cli.history()
        elif args.command == "doctor":
            data, text, code = cli.doctor()
        elif args.command == "push-bootstrap":
            data, text = cli.push_bootstrap(pushed)
        else:
            data, text = cli.mutate()
    except BlueGreenError as exc:
        if args.debug:
            log.exception("failed")
        print(f"bluegreen: error: {exc}", file=sys.stderr)
        if args.output == "json":
            fields = {"service": getattr(args, "service", None), "result": "error", "exit_code": exc.exit_code,
                      "error": str(exc), **exc.details(), **(cli.stages() if cli is not None else {})}
            print(render.dumps(cli.summary(**fields) if cli is not None else
                               dict(fields, schema_version=contract.SCHEMA_VERSION, command=args.command,
                                    aws_calls=0, aws_attempts=0)))
        return exc.exit_code
    except KeyboardInterrupt:
        print("bluegreen: interrupted; rerun the same command to resume, or `bluegreen rollback`", file=sys.stderr)
        return 130
    print(render.dumps(data) if args.output == "json" else text)
    return code


if __name__ == "__main__":
    sys.exit(main())
