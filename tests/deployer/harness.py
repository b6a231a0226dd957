"""The in-process deployer test layer: the real `bluegreen` CLI, planners and runner, called as a function, against
the in-process emulated AWS (still real HTTP and real botocore), with the emulator and the runner on ONE fake
clock: a wait's sleep moves the emulated world on at once, so a 300 s drain costs a few polls, not 300 s.

A failure points at a function and its traceback, not at a subprocess's stderr. What it cannot show: the
console script's packaging and a real SIGKILL; tests/deployer/test_deployer_smoke.py keeps those as subprocess
smoke tests.

    harness = make_harness(capacity=3)          # a service created as an operator would, serving
    out = harness.bluegreen("deploy", "demo", "2.0", crash_at="enter-standby:2")
    expect_exit(out, -9)                        # "killed" just before the second EnterStandby batch
"""

from __future__ import annotations

import contextlib
import io
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime

from deployer import cli
from deployer.aws import DeployerAws
from deployer.runner import Runner
from tests.deployer.fleet import Fleet
from tests.helpers import Outcome

# AWS's own defaults, in AWS seconds on the fake clock: a 5 s poll, a 600 s deadline per wait.
ENV = {"BLUEGREEN_POLL_INTERVAL": "5", "BLUEGREEN_TIMEOUT": "600"}
MUTATING = {"CreateOrUpdateTags", "DeleteTags", "UpdateAutoScalingGroup", "EnterStandby", "ExitStandby",
            "DetachInstances", "SuspendProcesses", "ResumeProcesses", "PutScalingPolicy",
            "PutScheduledUpdateGroupAction", "DeletePolicy", "DeleteScheduledAction", "TerminateInstances",
            "CreateTags"}


class Killed(BaseException):
    """`kill -9` at a step boundary, in process: a BaseException, so no handler of the deployer's runs."""


def crash_hook(point):
    """A Seams.before_step that raises Killed just before the n-th step named `point` ("name" or "name:n")."""
    name, _, nth = (point or "").partition(":")
    seen = []

    def before_step(step):
        if step.name == name:
            seen.append(step)
            if len(seen) == int(nth or 1):
                raise Killed(point)

    return before_step if name else None


class Harness(Fleet):
    """One service in the emulated AWS, driven in process on a fake clock (AWS seconds = fake seconds)."""

    def __init__(self, cloud, session, svc, clock):
        super().__init__(session, svc)
        self.cloud, self.clock = cloud, clock
        self.clock_start = clock.now()
        self.alive = set()  # holders (user@host:pid) whose process is still running
        self.floor = None  # a Floor while one is watched: healthy targets after every mutating call
        self.asked = None  # while requests() records: ("service.Operation", params) of every call, in order
        self.agents = []  # callables run whenever the deployer sleeps: what instances' agents do meanwhile
        self.runs = 0
        # The wall clock the commands see (Seams.now): the real one, unless a test makes it follow the fake clock
        # (follow_clock: a bake's deadline is a wall-clock time in the record).
        self.wall_start = datetime.now(timezone.utc)
        self.now = None

    # -- time ----------------------------------------------------------------------------------------

    def follow_clock(self):
        """From now on the commands' wall clock moves with the fake clock (AWS seconds)."""
        self.now = self.wall_now
        return self

    def wall_now(self):
        return self.wall_start + timedelta(seconds=self.clock.now() - self.clock_start)

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.cloud.tick()
        for agent in self.agents:
            agent()

    def _sleep(self, seconds):
        self.clock.sleep(seconds)
        for agent in self.agents:
            agent()

    def wait_for(self, predicate, what, timeout=600.0, step=5.0):
        """Advance the fake clock `step` AWS seconds at a time until `predicate` is true (at most `timeout`)."""
        for _ in range(int(timeout / step) + 1):
            value = predicate()
            if value:
                return value
            self.advance(step)
        raise AssertionError(f"not reached after {timeout} AWS seconds on the fake clock: {what}")

    def assert_flipped(self, live, n, version):
        """As Fleet's, once the old instances have drained into Standby: a deploy returns when they have left
        the load balancers (draining is enough, E2), and the fake clock stands still after it."""
        old = "green" if live == "blue" else "blue"
        self.wait_for(lambda: set(self.lifecycles(old).values()) <= {"Standby"}, f"{old}'s instances in Standby")
        super().assert_flipped(live, n, version)

    # -- the command ---------------------------------------------------------------------------------

    def bluegreen(self, *argv, crash_at=None, me=None, env=None, meanwhile=None):
        """`bluegreen ARGV` as holder `me` (default: a new process each time); returncode -9 when `crash_at`
        killed it. `meanwhile(step)`: what the world does just before each step (an operator's or an IaC
        apply's change in the middle of an operation, after pre-flight passed)."""
        self.runs += 1
        me = me or f"ci@runner:{1000 + self.runs}"
        crash = crash_hook(crash_at)

        def before_step(step):
            if meanwhile is not None:
                meanwhile(step)
            if crash is not None:
                crash(step)

        seams = cli.Seams(sleep=self._sleep, clock=self.clock.now, me=me, holder_alive=self.alive.__contains__,
                          before_step=before_step if (crash or meanwhile) else None, make_clients=self._clients,
                          **({"now": self.now} if self.now is not None else {}))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in argv], environ=dict(ENV, **(env or {})), seams=seams)
            except Killed:
                code = -9
        return Outcome(code, out.getvalue(), err.getvalue())

    def run_planner(self, planner, me="ci@runner:1"):
        """Apply any planner (a test's own, e.g. a naive one the floor must catch) through the real Runner."""
        clients = self._clients(None)
        aws = DeployerAws(clients["autoscaling"], clients["elbv2"], clients["elb"], clients["ec2"],
                          cloudwatch=clients["cloudwatch"])
        context = cli.context_factory(False, cli.Seams(now=cli.Seams().now, me=me))
        runner = Runner(aws, self.svc["service"], context, poll_interval=5.0, timeout=600.0, sleep=self._sleep,
                        clock=self.clock.now)
        return runner.run(planner)

    def _clients(self, args):
        clients = cli.make_clients(args, session=self.session)
        for client in clients.values():
            client.meta.events.register("after-call", self._after_call)
            client.meta.events.register("provide-client-params", self._on_params)
        clients["s3"].meta.events.register("after-call.s3", self._s3_date_on_the_fake_clock)
        return clients

    def _s3_date_on_the_fake_clock(self, parsed=None, **_):
        """S3's clock (the `Date` a lease is judged by, X2) moves with the fake clock too: one clock for all."""
        headers = (parsed or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if "date" in headers:
            moved = parsedate_to_datetime(headers["date"]) + timedelta(seconds=self.clock.now() - self.clock_start)
            headers["date"] = format_datetime(moved, usegmt=True)

    def _on_params(self, params=None, event_name="", **_):
        if self.asked is not None:
            self.asked.append((event_name.split(".", 1)[1], dict(params or {})))

    @contextlib.contextmanager
    def requests(self):
        """Record what the deployer asks meanwhile: ("service.Operation", its parameters) per call (each page of a
        paginator is one), in order; a test may add its own markers to the same list."""
        self.asked = asked = []
        try:
            yield asked
        finally:
            self.asked = None

    def _after_call(self, model=None, **_):
        if self.floor is not None and model is not None and model.name in MUTATING:
            self.floor.samples.append(len(self.healthy()))

    @contextlib.contextmanager
    def health_floor(self):
        """Sample the healthy targets after EVERY mutating call the deployer makes meanwhile (the emulator
        serialises requests and its time stands still between them, so no state between two calls is missed)."""
        self.floor = floor = Floor()
        try:
            yield floor
        finally:
            self.floor = None


class Floor:
    """Healthy-target counts, one after each mutating call; the same `minimum` as fleet.HealthSampler."""

    def __init__(self):
        self.samples = []

    @property
    def minimum(self):
        assert self.samples, "no mutating call was sampled"
        return min(self.samples)
