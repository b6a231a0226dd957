"""Wait for the stack to be healthy: the health URL answering 2xx, or, without one, every container of the
compose project running and healthy by its compose healthcheck. Each wait has a deadline, and its error says
what it waited for and the last state seen."""

import logging
import time

from agent.errors import HealthError

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"


def wait_for_url(session, url, timeout, interval=1.0, sleep=time.sleep, clock=time.monotonic):
    import requests

    until, last = clock() + timeout, "no answer yet"
    while True:
        try:
            resp = session.get(url, timeout=min(5.0, max(0.5, until - clock())))
            if 200 <= resp.status_code < 300:
                log.info("health: %s answered %d", url, resp.status_code)
                return
            last = f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        if clock() + interval > until:
            raise HealthError(f"{url} did not answer 2xx within {timeout:.0f}s (last: {last})")
        sleep(interval)


def container_states(docker_client, project):
    """[(name, status, health or None)] of the project's containers."""
    import docker.errors

    try:
        containers = docker_client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    except docker.errors.DockerException as exc:
        raise HealthError(f"cannot list containers of project {project}: {exc}") from None
    states = []
    for c in containers:
        state = c.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        states.append((c.name, state.get("Status", "unknown"), health))
    return sorted(states)


def judge(states):
    """'healthy', 'waiting' or 'failed' for the states of container_states. Pure."""
    if not states:
        return "waiting"
    for _, status, health in states:
        if status in ("exited", "dead") or health == "unhealthy":
            return "failed"
    if all(status == "running" and health in (None, "healthy") for _, status, health in states):
        return "healthy"
    return "waiting"


def wait_for_containers(docker_client, project, timeout, interval=1.0, sleep=time.sleep, clock=time.monotonic):
    until = clock() + timeout
    while True:
        states = container_states(docker_client, project)
        verdict = judge(states)
        shown = ", ".join(f"{n} {s}" + (f"/{h}" if h else "") for n, s, h in states) or "no containers"
        if verdict == "healthy":
            log.info("health: %s", shown)
            return
        if verdict == "failed":
            raise HealthError(f"project {project} is not healthy: {shown}")
        if clock() + interval > until:
            raise HealthError(f"project {project} was not healthy within {timeout:.0f}s (last: {shown})")
        sleep(interval)
