"""`bluegreen-agent run` and `show`: the steps in order, each checking the world before it acts.

Everything up to and including the pulls only reads, or writes beside what is running (a new release folder,
the pulled `repo:<version>` and every other image the compose model names). Only after all of it succeeded does
the agent re-tag, swap the bundle and run compose (`--pull never`): a failed validation, download, checksum or
pull leaves the running stack exactly as it was. A failure after that point on a running instance (no launch
hook engaged) puts the previous images and release back (audit F11).
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from agent import asg, bundle, compose, contract, ec2, health, images, restore, secrets
from agent.contract import TAG_LIFECYCLE_HOOK, TAG_VERSION
from agent.deadline import Clipped, Deadline
from agent.errors import AgentError
from agent.settings import HOOK_RE, local_number, resolve, tags_to_settings
from agent.status import AgentLock, Status, previous_run_killed, read_status

log = logging.getLogger(__name__)


@dataclass
class Discovery:
    identity: object
    membership: asg.Membership
    tags: dict[str, str]


def discover(clients, flags, config, deadline=None):
    """Identity (IMDS), the group and the group's tags: read-only. `deadline` (the run's) clips both waits."""
    def wait(name):
        return deadline.clip(local_number(config, name)) if deadline else local_number(config, name)

    identity = clients.imds(wait("imds_deadline")).identity()
    autoscaling = clients.autoscaling(identity.region)
    membership = asg.find_group(autoscaling, identity.instance_id, deadline=wait("group_deadline"))
    return Discovery(identity, membership, asg.group_tags(autoscaling, membership.group))


def make_plan(found, settings, environ, launch_hook=None):
    """What `run` would do, as plain data (printed by --dry-run). `launch_hook`: find_launch_hook's answer, when
    the caller asked the group (else only a named hook is shown)."""
    if settings.s3_unsigned:
        reader = "unsigned GET " + bundle.unsigned_base_url(settings.bucket, found.identity.region, environ)
    else:
        reader = "signed GetObject"
    hook = launch_hook.name if launch_hook else settings.lifecycle_hook
    engaged = bool(hook) and found.membership.lifecycle_state in asg.HOOK_WAIT_STATES
    return {
        "instance_id": found.identity.instance_id,
        "region": found.identity.region,
        "group": found.membership.group,
        "lifecycle_state": found.membership.lifecycle_state,
        "version": settings.version,
        "version_source": settings.sources.get("version"),
        "steps": [
            *([{"step": "settings", "resolve_secrets": {k: str(ref) for k, ref in sorted(settings.compose_secrets.items())}}]
              if settings.compose_secrets else []),
            {"step": "bundle", "from": settings.bootstrap + bundle.MANIFEST, "reader": reader,
             "into": os.path.join(settings.workdir, bundle.RELEASES)},
            {"step": "image", "pull": (f"{settings.image}@{settings.digest}" if settings.digest
                                       else f"{settings.image}:{settings.version}"),
             "ecr": images.ecr_registry(settings.image) is not None,
             "also": "every other image docker-compose.yml names (its pull_policy), before anything switches",
             "retag_as": f"the tag docker-compose.yml names for {settings.image}"},
            {"step": "activate", "retag": "the fixed tags to the pulled image", "current": "the new release",
             "on_failure": "ABANDON (a launch)" if engaged else "restore the previous version (F11)"},
            {"step": "compose", "project": settings.compose_project,
             "command": "up -d --remove-orphans --pull never",
             "env": sorted(settings.compose_env)},
            {"step": "health", "wait_for": settings.health_url or "compose healthchecks",
             "timeout_s": settings.health_timeout, "successes": settings.health_successes,
             "stable_s": settings.health_stable_s,
             "required": "a health URL or a compose healthcheck" if engaged else None},
            {"step": "publish", "tag": contract.TAG_RUNNING, "on": "this instance (CreateTags, best effort)"},
            *([{"step": "prune", "keep": "the current and the previous version of " + settings.image}]
              if settings.prune_images else []),
            {"step": "lifecycle", "hook": hook,
             "action": "CompleteLifecycleAction CONTINUE (ABANDON on failure)" if engaged else "none"},
        ],
    }


def resolve_settings(found, flags, config):
    settings = resolve(flags, tags_to_settings(found.tags), config)
    if settings.sources.get("version") == "flag":
        log.warning("version override: running %s on this instance; group %s says %s", settings.version,
                    found.membership.group, found.tags.get(TAG_VERSION))
    return settings


def run(clients, flags, config, workdir, environ, clock=time.monotonic):
    """Deploy the group's version on this instance. Returns the final status dict; raises AgentError."""
    # audit F13: one deadline from the start, before IMDS is even asked; every step's wait is clipped to it.
    deadline = Deadline(local_number(config, "run_deadline"), clock)
    status = Status(workdir)
    with AgentLock(workdir):
        last = read_status(workdir) or {}  # one read: how the previous run ended, and what it left to carry on
        killed = previous_run_killed(last)
        if killed:
            # audit F25: status.json said "running" but no agent held the lock: SIGKILLed (TimeoutStopSec) or
            # the machine went down mid-run. Say so, here and in the new status.json.
            log.warning("the previous run (pid %s, started %s) was killed in step(s) %s", killed.get("pid"),
                        killed.get("started_at"), ", ".join(killed.get("in_progress") or []) or "(none)")
            status.update(previous_run=killed)
        # What served before this run (it still serves until `activate`), and the app images pulled before.
        status.update(served=last.get("served"), image_history=last.get("image_history") or [],
                      workers=last.get("workers"))  # the watch's record (agent/watch.py) outlives a run
        status.begin()
        try:
            _run_locked(clients, flags, config, environ, status, deadline)
        except AgentError as exc:
            explained = deadline.explain(exc, status.data.get("steps"))
            status.finish(explained)
            if explained is not exc:
                raise explained from None
            raise
        except BaseException as exc:
            status.finish(AgentError(f"{type(exc).__name__}: {exc}"))
            raise
        status.finish()
    return status.data


def find_launch_hook(autoscaling, found, settings):
    """The launch hook this run completes, or None (audit F14). Asked of the group only while the instance may
    be held by one (a re-run on an InService instance has nothing to complete), or to learn the named hook's
    HeartbeatTimeout. A named hook whose description cannot be read is still used, with the configured
    heartbeat interval."""
    named = settings.lifecycle_hook
    state = found.membership.lifecycle_state
    if not named and state not in asg.HOOK_WAIT_STATES + asg.PENDING_STATES:
        return None
    try:
        hooks = asg.launch_hooks(autoscaling, found.membership.group)
    except AgentError as exc:
        if not named and state in asg.HOOK_WAIT_STATES:
            raise  # held by a hook we cannot name: fail now (exit 11) and leave it to the OnFailure= fallback
        if not named:
            # A plain Pending (an instance profile without DescribeLifecycleHooks, say): run without a hook
            # rather than fail a group that may have none.
            log.warning("%s; going on as if the group had no launch hook", exc)
            return None
        log.warning("%s; using the configured heartbeat interval for hook %s", exc, named)
        hooks = []
    hook = asg.choose_hook(named, hooks, found.membership.group)
    if hook is not None and not named:
        log.info("lifecycle hook %s found with DescribeLifecycleHooks (no %s tag)", hook.name, TAG_LIFECYCLE_HOOK)
    return hook



def _run_locked(clients, flags, config, environ, status, deadline):
    with status.step("identity"):
        found = discover(clients, flags, config, deadline)
    status.update(instance_id=found.identity.instance_id, group=found.membership.group)
    autoscaling = clients.autoscaling(found.identity.region)
    try:
        settings = Clipped(resolve_settings(found, flags, config), deadline)
    except AgentError as exc:
        # A6: a bad tag must not leave a new instance waiting in Pending:Wait for the hook's whole timeout.
        explained = deadline.explain(exc, status.data.get("steps"))
        explained.report()  # the reason on the console before the ABANDON ends the instance (F16)
        _abandon_unresolved(autoscaling, found, config)
        if explained is not exc:
            raise explained from None  # run() explains it again: the same error, already printed
        raise
    status.update(version=settings.version, version_source=settings.sources.get("version"))
    launch_hook = find_launch_hook(autoscaling, found, settings)
    hook = launch_hook.name if launch_hook else None
    if hook:
        found.membership = asg.settle_pending(autoscaling, found.identity.instance_id, found.membership,
                                              deadline=settings.group_deadline)
    state = found.membership.lifecycle_state
    engaged = bool(hook) and state in asg.HOOK_WAIT_STATES
    status.update(lifecycle_state=state, lifecycle_hook=hook if engaged else None)
    if hook and not engaged:
        log.info("lifecycle hook %s, but the instance is %s: nothing to complete", hook, state)
    if engaged and state == asg.WARMED_PENDING_WAIT:
        # A17: entering the warm pool. Prepare the whole stack now (bundle, images, compose, health) and let the
        # pool keep it; when the instance leaves a Stopped pool it boots again, and that run re-reads the group's
        # version (it may have changed meanwhile) and completes the hook at Pending:Wait.
        log.info("instance is entering the warm pool (%s): preparing the stack before it is pooled", state)
    with ExitStack() as stack:
        if engaged:
            interval = asg.heartbeat_interval(launch_hook, settings.heartbeat_interval)
            stack.enter_context(asg.Heartbeat(autoscaling, found.membership.group, hook,
                                              found.identity.instance_id, interval))
        try:
            _deploy(clients, settings, found, environ, status, engaged)
        except BaseException as exc:  # any failure, our own or not, must release the launch (A6)
            explained = deadline.explain(exc, status.data.get("steps")) if isinstance(exc, AgentError) else exc
            if engaged and isinstance(exc, AgentError):
                # The reason on the console first (F16): once the ABANDON lands the instance is terminated, and
                # a slow CreateTags below must not hold the line back either.
                explained.report()
            if isinstance(exc, AgentError):
                _publish(clients, found, status, f"{contract.RESULT_FAILED}:{_step_of(exc)}")
            if engaged:
                _abandon(autoscaling, found, hook)
            if explained is not exc:
                raise explained from None  # run() explains it again: the same error, already printed
            raise
        # Before CONTINUE and while the heartbeat still runs (a slow EC2 endpoint must not let a short hook lapse):
        # the deployer's gate reads the tag once the instance is InService.
        _publish(clients, found, status, contract.RESULT_SUCCESS)
    if engaged:
        with status.step("lifecycle"):
            asg.complete_lifecycle(autoscaling, found.membership.group, hook, found.identity.instance_id,
                                   "CONTINUE")


def _step_of(exc):
    return exc.step if exc.step in contract.AGENT_ERROR_STEPS else "agent"


def _publish(clients, found, status, result):
    """`bluegreen:running` on this instance: the version that serves now (none when unknown) and this result.
    Never raises: on the failure path the ABANDON comes after it, and a tag is not worth a launch held until
    its timeout."""
    try:
        served = status.data.get("served")
        served = served if isinstance(served, dict) else {}
        running = contract.Running(version=served.get("version"), digest=served.get("digest"),
                                   agent=contract.__version__, result=result)
        published = ec2.publish_running(clients.ec2(found.identity.region), found.identity.instance_id, running)
    except Exception as exc:  # noqa: BLE001 (best effort by design, see the docstring)
        log.warning("could not publish %s: %s: %s", contract.TAG_RUNNING, type(exc).__name__, exc)
        published = False
    status.update(published=published)


def _abandon_unresolved(autoscaling, found, config):
    """ABANDON the launch when the settings themselves are bad, if a well-formed hook name can be found, or the
    group's one launch hook while the instance may be held by it (audit F14)."""
    hook = found.tags.get(TAG_LIFECYCLE_HOOK) or config.get("lifecycle_hook")
    try:
        if not isinstance(hook, str) or not HOOK_RE.match(hook):
            if found.membership.lifecycle_state not in asg.HOOK_WAIT_STATES + asg.PENDING_STATES:
                return
            discovered = asg.choose_hook(None, asg.launch_hooks(autoscaling, found.membership.group),
                                         found.membership.group)
            if discovered is None:
                return
            hook = discovered.name
        found.membership = asg.settle_pending(autoscaling, found.identity.instance_id, found.membership,
                                              deadline=local_number(config, "group_deadline"))
    except AgentError as exc:  # the settings error is the one to report
        log.error("%s", exc)
        return
    if found.membership.lifecycle_state in asg.HOOK_WAIT_STATES:
        _abandon(autoscaling, found, hook)


def _abandon(autoscaling, found, hook):
    try:
        asg.complete_lifecycle(autoscaling, found.membership.group, hook, found.identity.instance_id, "ABANDON")
    except AgentError as exc:  # the original failure is the one to report
        log.error("%s", exc)


def _plan(status, command, settings, bundle_path, compose_env, engaged_hook):
    """From the bundle's compose model, as compose resolves it: the fixed tags to point at the pulled image, every
    other image it names, and the services the health step judges (only these: not an older release's
    leftovers, F6)."""
    with status.step("plan"):
        model = compose.Compose(command, settings.compose_project, bundle_path, compose_env, 60).config()
        if engaged_hook:  # F12: CONTINUE must mean verified healthy; refused here, before anything switched
            health.require_health_signal(engaged_hook, settings.health_url, model)
        return (compose.fixed_references(model, settings.image), compose.other_images(model, settings.image),
                health.expected_services(model))


def _pull_everything(clients, settings, docker_client, status, command, fetched, compose_env,
                     engaged_hook):
    """The app image and every other image of the compose model, side by side; nothing switched yet (F5)."""
    api = docker_client.api

    def auth_for(repository):
        return images.registry_auth(repository, clients.ecr)

    def pull_app():
        digest = settings.digest
        return images.pull(api, settings.image, tag=None if digest else settings.version, digest=digest,
                           auth=auth_for(settings.image), stall_timeout=settings.pull_stall_timeout,
                           deadline=settings.pull_timeout)

    with status.step("image"), ThreadPoolExecutor(max_workers=PULL_WORKERS) as pool:
        app = pool.submit(pull_app)
        # `compose config` (a subprocess) runs while the app image is pulled: on AWS the pull hides it.
        try:
            fixed_refs, others, services = _plan(status, command, settings, fetched.path, compose_env,
                                                 engaged_hook)
        except AgentError:
            app.cancel()
            raise  # a broken compose file is reported before a failed pull
        extra = [pool.submit(images.ensure, api, ref, policy, auth_for, settings.pull_stall_timeout,
                             settings.pull_timeout) for ref, policy in others]
        pulled = app.result()
        for (ref, _), future in zip(others, extra):
            got = future.result()
            log.info("image %s: %s", ref, "pulled" if got else "present, not pulled (pull_policy)")
    return pulled, fixed_refs, [ref for ref, _ in others], services


# Pulls at once: the app image and the compose model's others. Layers of one pull already download in
# parallel inside the engine; a few pulls side by side hide the registries' round trips.
PULL_WORKERS = 4


def _deploy(clients, settings, found, environ, status, engaged=False):
    region = found.identity.region
    resolved = {}
    if settings.compose_secrets:
        # F15: read first, before anything is fetched or switched; the values go to compose's environment only.
        with status.step("settings"):  # the contract's step vocabulary (AGENT_STEPS): part of the settings
            resolved = secrets.resolve(settings.compose_secrets, region, clients.ssm, clients.secretsmanager)
    with status.step("bundle"):
        if settings.s3_unsigned:
            base_url = bundle.unsigned_base_url(settings.bucket, region, environ)
            log.info("bundle: unsigned GET %s%s%s (S1)", base_url, settings.prefix, bundle.MANIFEST)
            reader = bundle.UnsignedReader(clients.http(), base_url, settings.bucket)
        else:
            reader = bundle.SignedReader(clients.s3(region), settings.bucket)
        fetched = bundle.fetch(reader, settings.prefix, settings.workdir)
    status.update(release=fetched.release_id)

    command = compose.detect_command(settings.compose_command, environ=environ)
    compose_env = dict(environ)
    compose_env.update(settings.compose_env)
    compose_env.update(resolved)
    docker_client = clients.docker(settings.pull_timeout)
    engaged_hook = (status.data.get("lifecycle_hook") or settings.lifecycle_hook or "?") if engaged else None
    pulled, fixed_refs, others, services = _pull_everything(clients, settings, docker_client, status, command,
                                                            fetched, compose_env, engaged_hook)
    status.update(image_digest=pulled.digest, image_id=pulled.image_id, other_images=others)

    # What a restore puts back (F11): the images the fixed tags name now, and the current release.
    before = restore.Before(images={ref: images.local_image_id(docker_client, ref) for ref in fixed_refs},
                            release=bundle.current_release(settings.workdir), served=status.data.get("served"))
    status.update(previous_images=before.images, previous_release=before.release)

    # The point of no return: everything above only read or wrote beside the running stack. From here on a
    # failure on a running instance puts `before` back (F11), even a half-done activate or an interrupt.
    try:
        with status.step("activate"):
            retagged = [ref for ref in fixed_refs if images.retag(docker_client, pulled.image_id, ref)]
            bundle.activate(settings.workdir, fetched.release_id, settings.keep_releases)
        status.update(retagged=retagged, served=None)  # until health passes, nobody knows what serves

        # The release folder itself, not the `current` link: compose resolves relative bind mounts from it, so
        # a bundle that changes only mounted files changes the services' config and recreates them, and a
        # pruned old release is never still mounted.
        current = os.path.realpath(os.path.join(settings.workdir, bundle.CURRENT))
        with status.step("compose"):
            # F12: restarts counted from here on; a container compose creates starts at 0.
            baseline = health.restart_baseline(docker_client, settings.compose_project)
            compose.Compose(command, settings.compose_project, current, compose_env, settings.compose_timeout).up()

        with status.step("health"):
            policy = health.Policy(settings.health_timeout, settings.health_interval, settings.health_successes,
                                   settings.health_stable_s)
            health.wait(docker_client, settings.compose_project, services, baseline, policy,
                        session=clients.http() if settings.health_url else None, url=settings.health_url)
    except (AgentError, OSError, KeyboardInterrupt) as exc:
        if engaged:
            raise  # A6: the launch is ABANDONed and the instance replaced; nothing to put back
        _restore_and_raise(exc, docker_client, settings, before, command, compose_env, status)
    status.update(served={"version": settings.version, "digest": pulled.digest})
    log.info("version %s is up on %s (%s)", settings.version, found.identity.instance_id, pulled.digest)
    if settings.prune_images:
        restore.prune_old(docker_client, settings, pulled, before, status)


def _restore_and_raise(exc, docker_client, settings, before, command, compose_env, status):
    """On a running instance nothing replaces a failed activation: put the previous version back (F11), with
    the settings as resolved, not cut to what remains of the run (the restore must finish even when the run's
    time is gone). An interrupt (SIGTERM, SIGHUP: an operator's shell that disconnected) is restored too, then
    re-raised, so systemd and the shell still see an interrupted run."""
    raw = getattr(settings, "unclipped", settings)
    if isinstance(exc, KeyboardInterrupt):
        failed = AgentError("interrupted (SIGINT, SIGTERM or SIGHUP) after the point of no return",
                            step=_current_step(status))
        restored = restore.restore(failed, docker_client, raw, before, command, compose_env, status)
        log.error("%s", restored)
        raise exc
    if isinstance(exc, OSError):  # a failed rename or write in activate: report it as that step's error
        exc = AgentError(f"{type(exc).__name__}: {exc}", step=_current_step(status))
    raise restore.restore(exc, docker_client, raw, before, command, compose_env, status) from None


def _current_step(status):
    """The step that was running when the failure came: the last one to finish (steps record themselves on their
    way out, a failing one included)."""
    done = [name for name in (status.data.get("steps") or {}) if name in ("activate", "compose", "health")]
    return done[-1] if done else "activate"
