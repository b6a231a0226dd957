"""Wait for the stack to be healthy, and stay so: N consecutive passing polls spanning a stability window.

One poll looks at the containers of the compose project that belong to the current compose model, and, when a
health URL is set, at the URL too:
- the URL decides when it is set (2xx passes); the containers then only fail the wait;
- without it: every service `running` (and `healthy` by its compose healthcheck, where it has one), or a
  one-shot service `exited` with code 0 (compose's `service_completed_successfully`, audit F6);
- a container that exited non-zero, is `dead`, `unhealthy`, `restarting`, or whose RestartCount grew during the
  run (a restart loop, audit F12) fails the wait at once, naming its service;
- one-off containers (`docker compose run`, label com.docker.compose.oneoff=True) and containers of services
  the model no longer has are never judged (F6).

Healthy means `successes` passing polls in a row whose first lies at least `stable_s` seconds back (F12: one
2xx, or `running` for an instant, let a process that crashes two seconds later into service). Each wait has a
deadline, and its error says what it waited for and the last state seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agent.errors import HealthError, SettingsError

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"

OK, WAITING, FAILED = "ok", "waiting", "failed"


@dataclass(frozen=True)
class Container:
    """What one poll needs of a container (`docker inspect`)."""

    id: str
    name: str
    service: str
    status: str  # created, running, restarting, exited, dead, paused, removing
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    exit_code: int = 0
    restart_count: int = 0
    oneoff: bool = False


@dataclass(frozen=True)
class Verdict:
    state: str  # OK, WAITING or FAILED
    detail: str


@dataclass(frozen=True)
class Policy:
    timeout: float
    interval: float
    successes: int
    stable_s: float


# --- pure: the compose model ---------------------------------------------------------------------------------

def expected_services(model):
    """The services `compose up` runs at least one container of: the model's, less those scaled to 0 and those
    marked to run only while InService (agent/workers.py: the watch starts them after the launch). Pure."""
    from agent import workers

    marked = set(workers.marked_services(model))
    out = set()
    for name, service in (model.get("services") or {}).items():
        if name in marked:
            continue
        service = service or {}
        replicas = (service.get("deploy") or {}).get("replicas", service.get("scale", 1))
        if replicas != 0:
            out.add(name)
    return out


def healthcheck_services(model):
    """The services with a compose healthcheck that is not disabled. Pure.

    An image's own HEALTHCHECK is not in the model: the engaged-hook rule below only counts what the bundle
    declares, so the rule is decided before the pull and before anything switched."""
    found = []
    for name, service in sorted((model.get("services") or {}).items()):
        check = (service or {}).get("healthcheck")
        if not check or check.get("disable"):
            continue
        test = check.get("test")
        if test in (["NONE"], "NONE"):
            continue
        found.append(name)
    return found


def require_health_signal(hook, health_url, model):
    """With a launch hook engaged, CONTINUE must mean "verified healthy", not "started" (F12): refuse a stack
    that gives the agent nothing to verify, before anything switched (the caller ABANDONs, A6). Pure."""
    if health_url or healthcheck_services(model):
        return
    raise SettingsError(
        f"launch hook {hook} is engaged but there is no health URL (bluegreen:health-url) and no service in "
        "docker-compose.yml has a healthcheck: set one, so that CONTINUE means the stack is healthy")


# --- pure: one poll's verdict --------------------------------------------------------------------------------

def judged(containers, services):
    """The containers a verdict looks at: not one-off, and of a service the current model has. Pure."""
    return [c for c in containers if not c.oneoff and (services is None or c.service in services)]


def judge(containers, services, baseline):
    """One poll of the containers. services: the model's (None: every service). baseline: {container id:
    RestartCount before `compose up`}; a container not in it was created by this run and starts at 0. Pure."""
    mine = judged(containers, services)
    for c in mine:
        before = baseline.get(c.id, 0)
        if c.status == "restarting" or c.restart_count > before:
            grew = c.restart_count - before
            return Verdict(FAILED, f"service {c.service} is in a restart loop (container {c.name} {c.status}, "
                                   f"restarted {grew} time(s) during this run)")
        if c.status == "dead" or (c.status == "exited" and c.exit_code != 0):
            return Verdict(FAILED, f"service {c.service} exited with code {c.exit_code} (container {c.name})")
        if c.health == "unhealthy":
            return Verdict(FAILED, f"service {c.service} is unhealthy by its healthcheck (container {c.name})")
    shown = describe(mine)
    missing = sorted(set(services or ()) - {c.service for c in mine})
    if missing:
        return Verdict(WAITING, ", ".join([shown] * bool(mine) + [f"{s}: no container" for s in missing]))
    if not mine:
        return Verdict(WAITING, "no containers")
    for c in mine:
        done = c.status == "exited" and c.exit_code == 0  # a one-shot service that completed (F6)
        if not done and not (c.status == "running" and c.health in (None, "healthy")):
            return Verdict(WAITING, shown)
    return Verdict(OK, shown)


def describe(containers):
    def one(c):
        if c.status == "exited":
            return f"{c.service} exited({c.exit_code})"
        return f"{c.service} {c.status}" + (f"/{c.health}" if c.health else "")

    return ", ".join(one(c) for c in sorted(containers, key=lambda c: (c.service, c.name))) or "no containers"


class Streak:
    """Consecutive passing polls: satisfied after `successes` of them, the first `stable_s` seconds back or
    more. Any other poll starts it again. Pure (the caller passes the time)."""

    def __init__(self, successes, stable_s):
        self.successes, self.stable_s = successes, stable_s
        self.count, self.since = 0, None

    def observe(self, passed, now):
        if not passed:
            self.count, self.since = 0, None
            return False
        if self.count == 0:
            self.since = now
        self.count += 1
        return self.count >= self.successes and now - self.since >= self.stable_s

    def progress(self, now):
        held = 0.0 if self.since is None else now - self.since
        return (f"{self.count} passing poll(s) in a row over {held:.1f}s, "
                f"needs {self.successes} over {self.stable_s:.1f}s")


def wait_stable(probe, what, policy, sleep=time.sleep, clock=time.monotonic):
    """Poll probe() -> Verdict until a Streak is satisfied; FAILED raises at once; the deadline raises with the
    last state seen."""
    until = clock() + policy.timeout
    streak = Streak(policy.successes, policy.stable_s)
    while True:
        verdict = probe(until)
        if verdict.state == FAILED:
            raise HealthError(f"{what}: {verdict.detail}")
        now = clock()
        if streak.observe(verdict.state == OK, now):
            log.info("health: %s healthy (%s): %s", what, streak.progress(now), verdict.detail)
            return verdict
        if now + policy.interval > until:
            raise HealthError(f"{what} was not healthy within {policy.timeout:.0f}s "
                              f"({streak.progress(now)}; last: {verdict.detail})")
        sleep(policy.interval)


# --- the engine and the URL ----------------------------------------------------------------------------------

def containers(docker_client, project):
    """Every container of the compose project, one-off ones included (judge() drops them)."""
    import docker.errors

    try:
        found = docker_client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    except docker.errors.DockerException as exc:
        raise HealthError(f"cannot list containers of project {project}: {exc}") from None
    out = []
    for c in found:
        attrs = c.attrs
        state, labels = attrs.get("State") or {}, (attrs.get("Config") or {}).get("Labels") or {}
        out.append(Container(
            id=c.id, name=c.name, service=labels.get(SERVICE_LABEL, c.name), status=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status"), exit_code=int(state.get("ExitCode") or 0),
            restart_count=int(attrs.get("RestartCount") or 0), oneoff=labels.get(ONEOFF_LABEL) == "True"))
    return out


def restart_baseline(docker_client, project):
    """{container id: RestartCount} before `compose up`: a restart after it is one this run caused or saw."""
    return {c.id: c.restart_count for c in containers(docker_client, project)}


def _url_state(session, url, until, clock):
    import requests

    try:
        resp = session.get(url, timeout=min(5.0, max(0.5, until - clock())))
    except requests.RequestException as exc:
        return WAITING, type(exc).__name__
    return (OK if 200 <= resp.status_code < 300 else WAITING), f"HTTP {resp.status_code}"


def wait(docker_client, project, services, baseline, policy, session=None, url=None, sleep=time.sleep,
         clock=time.monotonic):
    """The health step: the URL (when given) plus the containers, until stable; raises HealthError."""
    def probe(until):
        verdict = judge(containers(docker_client, project), services, baseline)
        if url is None or verdict.state == FAILED:
            return verdict
        state, shown = _url_state(session, url, until, clock)
        return Verdict(state, f"{url} {shown}; containers: {verdict.detail}")

    what = url if url is not None else f"project {project}"
    return wait_stable(probe, what, policy, sleep=sleep, clock=clock)
