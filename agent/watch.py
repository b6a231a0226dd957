"""`bluegreen-agent watch`: the marked services (agent/workers.py) run while the instance is InService, and only
then (issue 16). Started by its own systemd unit after the boot run; reconciles every `interval` seconds.

One reconcile (`Watch.once`):
1. the target lifecycle state from IMDS (IMDSv2, the client refreshes its token on a 401: I1); None when IMDS
   does not answer (I3), which keeps whatever runs: a hiccup never flaps the workers;
2. whether the launch is done, from the boot run's status.json (a run in progress holds the work folder's
   lock: this round is skipped, so the watch never fights the boot run);
3. the containers of the compose project whose `bluegreen.when` label is `in-service`, read from the Docker
   engine (docker-py), running or not: no compose file or environment is needed, the boot run created them;
4. start the stopped ones, or stop the running ones with their own stop timeout (compose's
   stop_grace_period), as workers.plan says. Never an unmarked container.
A change is logged, recorded in status.json ("workers") and published as the instance tag bluegreen:workers.
"""

import logging
import threading
import time

from agent import contract, workers
from agent.errors import AgentError, IdentityError, LockedError
from agent.status import STATUS_FILE, AgentLock, read_status

log = logging.getLogger(__name__)

TARGET_STATE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_INTERVAL = 5.0


ONEOFF_LABEL = "com.docker.compose.oneoff"
# Docker states in which a container's process does not run; any other (running, restarting, paused, removing)
# counts as running, so that a crash-looping worker under a restart policy is stopped too.
NOT_RUNNING = ("created", "exited", "dead")


def marked_containers(docker_client, project):
    """The project's service containers marked bluegreen.when: in-service, running or not. Not the one-off ones
    `docker compose run` leaves behind (they carry the service's labels): those are never started again."""
    found = docker_client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    return [c for c in found if c.labels.get(ONEOFF_LABEL, "False") != "True"
            and workers.labels_of({"labels": c.labels}).get(workers.LABEL, "").strip().lower() == workers.IN_SERVICE]


def _stop(container):
    """docker stop with the container's own StopTimeout (compose's stop_grace_period; 0 is 0), else 10 s."""
    timeout = (container.attrs.get("Config") or {}).get("StopTimeout")
    container.stop(timeout=10 if timeout is None else timeout)


def launched(status):
    """The boot run completed the launch: it succeeded, or a later run failed and put the served release back."""
    if not status:
        return False
    return status.get("result") == contract.RESULT_SUCCESS or bool(status.get("served"))


class Watch:
    def __init__(self, imds, docker_client, project, workdir, publish=None, interval=DEFAULT_INTERVAL,
                 clock=time.time):
        self.imds = imds
        self.docker = docker_client
        self.project = project
        self.workdir = workdir
        self.publish = publish  # callable(value) -> bool: the bluegreen:workers tag; None: not published
        self.interval = interval
        self._clock = clock
        self.state = None  # what the marked services were last made: RUNNING, STOPPED or None (not yet)
        self.published = None

    def target_state(self):
        try:
            return self.imds.get(TARGET_STATE_PATH, missing_ok=True) or "NotInAGroup"
        except IdentityError as exc:  # I3: no answer now; keep what runs
            log.warning("IMDS did not give the target lifecycle state: %s; the workers stay as they are", exc)
            return None

    def once(self):
        """One reconcile; returns what it did: {"want", "target_state", "started", "stopped"} or None (skipped).

        IMDS is asked before the work folder's lock is taken: a slow IMDS (up to the client's deadline) must not
        hold the lock, or an operator's `bluegreen-agent run` meanwhile would fail on it."""
        target = self.target_state()
        try:
            with AgentLock(self.workdir):
                return self._once_locked(target)
        except LockedError:
            log.info("a bluegreen-agent run holds the work folder: the workers are left to it this round")
            return None

    def _once_locked(self, target):
        want = workers.wanted(target, launched(read_status(self.workdir)))
        containers = marked_containers(self.docker, self.project)
        running = {c.labels.get(SERVICE_LABEL, c.name) for c in containers if c.status not in NOT_RUNNING}
        marked = sorted({c.labels.get(SERVICE_LABEL, c.name) for c in containers})
        action = workers.plan(want, marked, running)
        done = {"want": want, "target_state": target, "started": [], "stopped": []}
        if action is not None:
            verb, services = action
            chosen = [c for c in containers if c.labels.get(SERVICE_LABEL, c.name) in services]
            if verb == "start":
                # Only those Docker can start (a `dead` one cannot); all are tried before an error is raised.
                starting = [c for c in chosen if c.status in ("created", "exited")]
                _all_at_once(lambda c: c.start(), starting)
                done["started"] = [c.name for c in starting]
            else:
                # All at once, as `compose stop` does: N replicas take one grace period, not N of them (the
                # deployer's wait-workers-stopped waits for the slowest).
                stopping = [c for c in chosen if c.status not in NOT_RUNNING]
                _all_at_once(_stop, stopping)
                done["stopped"] = [c.name for c in stopping]
            log.info("workers %s (target lifecycle state %s): %s", "started" if verb == "start" else "stopped",
                     target, ", ".join(done["started"] or done["stopped"]))
        if want is not None and marked and want != self.state:
            self.state = want
            self._record(want, target, marked)
        if (self.publish is not None and self.state is not None and self.state != self.published
                and self.publish(self.state)):
            self.published = self.state
        return done

    def _record(self, want, target, marked):
        import json

        data = read_status(self.workdir) or {}
        data["workers"] = {"state": want, "target_lifecycle_state": target, "services": marked,
                           "changed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))}
        contract.atomic_write(f"{self.workdir}/{STATUS_FILE}", json.dumps(data, indent=2, sort_keys=True) + "\n")

    def run(self, stopping, sleep=None):
        """Reconcile every interval until `stopping` (a threading.Event) is set; an error in one round is logged
        and the next round tries again (the unit's Restart= covers a crash)."""
        while not stopping.is_set():
            try:
                self.once()
            except (AgentError, OSError) as exc:
                log.warning("workers: %s", exc)
            except Exception as exc:  # noqa: BLE001 -- docker-py's own errors: logged, retried next round
                log.warning("workers: %s: %s", type(exc).__name__, exc)
            stopping.wait(self.interval)


def _all_at_once(fn, items):
    """fn(item) for every item in its own thread; the first error is raised once all have ended."""
    errors = []

    def one(item):
        try:
            fn(item)
        except Exception as exc:  # noqa: BLE001 -- docker-py's own errors: raised below, after the others ended
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
