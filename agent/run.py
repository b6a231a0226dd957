"""`bluegreen-agent run` and `show`: the steps in order, each checking the world before it acts.

Everything up to and including the pulls only reads, or writes beside what is running (a new release folder,
the pulled `repo:<version>` and every other image the compose model names). Only after all of it succeeded does
the agent re-tag, swap the bundle and run compose (`--pull never`): a failed validation, download, checksum or
pull leaves the running stack exactly as it was. A failure after that point on a running instance (no launch
hook engaged) puts the previous images and release back (audit F11).
"""

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from agent import asg, bundle, compose, contract, ec2, health, images, restore
from agent.contract import TAG_LIFECYCLE_HOOK, TAG_VERSION
from agent.errors import AgentError
from agent.settings import HOOK_RE, local_number, resolve, tags_to_settings
from agent.status import AgentLock, Status

log = logging.getLogger(__name__)


@dataclass
class Discovery:
    identity: object
    membership: asg.Membership
    tags: dict[str, str]


def discover(clients, flags, config):
    """Identity (IMDS), the group and the group's tags: read-only."""
    identity = clients.imds(local_number(config, "imds_deadline")).identity()
    autoscaling = clients.autoscaling(identity.region)
    membership = asg.find_group(autoscaling, identity.instance_id, deadline=local_number(config, "group_deadline"))
    return Discovery(identity, membership, asg.group_tags(autoscaling, membership.group))


def make_plan(found, settings, environ):
    """What `run` would do, as plain data (printed by --dry-run)."""
    if settings.s3_unsigned:
        reader = "unsigned GET " + bundle.unsigned_base_url(settings.bucket, found.identity.region, environ)
    else:
        reader = "signed GetObject"
    hook = settings.lifecycle_hook
    engaged = bool(hook) and found.membership.lifecycle_state == asg.PENDING_WAIT
    return {
        "instance_id": found.identity.instance_id,
        "region": found.identity.region,
        "group": found.membership.group,
        "lifecycle_state": found.membership.lifecycle_state,
        "version": settings.version,
        "version_source": settings.sources.get("version"),
        "steps": [
            {"step": "bundle", "from": settings.bootstrap + bundle.MANIFEST, "reader": reader,
             "into": os.path.join(settings.workdir, bundle.RELEASES)},
            {"step": "image", "pull": (f"{settings.image}@{settings.digest}" if settings.digest
                                       else f"{settings.image}:{settings.version}"),
             "ecr": images.ecr_registry(settings.image) is not None,
             "also": "every other image docker-compose.yml names (its pull_policy), before anything switches",
             "retag_as": f"the tag docker-compose.yml names for {settings.image}"},
            {"step": "compose", "project": settings.compose_project,
             "command": "up -d --remove-orphans --pull never",
             "env": sorted(settings.compose_env)},
            {"step": "health", "wait_for": settings.health_url or "compose healthchecks",
             "timeout_s": settings.health_timeout},
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


def run(clients, flags, config, workdir, environ):
    """Deploy the group's version on this instance. Returns the final status dict; raises AgentError."""
    status = Status(workdir)
    with AgentLock(workdir):
        last = _last_status(status.path)
        # What served before this run (it still serves until `activate`), and the app images pulled before.
        status.update(served=last.get("served"), image_history=last.get("image_history") or [])
        status.begin()
        try:
            _run_locked(clients, flags, config, environ, status)
        except AgentError as exc:
            status.finish(exc)
            raise
        except BaseException as exc:
            status.finish(AgentError(f"{type(exc).__name__}: {exc}"))
            raise
        status.finish()
    return status.data


def _last_status(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_locked(clients, flags, config, environ, status):
    with status.step("identity"):
        found = discover(clients, flags, config)
    status.update(instance_id=found.identity.instance_id, group=found.membership.group)
    autoscaling = clients.autoscaling(found.identity.region)
    try:
        settings = resolve_settings(found, flags, config)
    except AgentError:
        # A6: a bad tag must not leave a new instance waiting in Pending:Wait for the hook's whole timeout.
        _abandon_unresolved(autoscaling, found, config)
        raise
    status.update(version=settings.version, version_source=settings.sources.get("version"))
    hook = settings.lifecycle_hook
    if hook:
        found.membership = asg.settle_pending(autoscaling, found.identity.instance_id, found.membership,
                                              deadline=settings.group_deadline)
    engaged = bool(hook) and found.membership.lifecycle_state == asg.PENDING_WAIT
    if hook and not engaged:
        log.info("lifecycle hook %s named, but the instance is %s: nothing to complete", hook,
                 found.membership.lifecycle_state)
    with ExitStack() as stack:
        if engaged:
            stack.enter_context(asg.Heartbeat(autoscaling, found.membership.group, hook,
                                              found.identity.instance_id, settings.heartbeat_interval))
        try:
            _deploy(clients, settings, found, environ, status, engaged)
        except AgentError as exc:
            _publish(clients, found, status, f"{contract.RESULT_FAILED}:{_step_of(exc)}")
            if engaged:
                _abandon(autoscaling, found, hook)
            raise
        except BaseException:  # any failure, our own or not, must release the launch (A6)
            if engaged:
                _abandon(autoscaling, found, hook)
            raise
    # Before CONTINUE: the deployer's gate reads the tag once the instance is InService.
    _publish(clients, found, status, contract.RESULT_SUCCESS)
    if engaged:
        with status.step("lifecycle"):
            asg.complete_lifecycle(autoscaling, found.membership.group, hook, found.identity.instance_id,
                                   "CONTINUE")


def _step_of(exc):
    return exc.step if exc.step in contract.AGENT_ERROR_STEPS else "agent"


def _publish(clients, found, status, result):
    """`bluegreen:running` on this instance: the version that serves now (none when unknown) and this result."""
    served = status.data.get("served") or {}
    running = contract.Running(version=served.get("version"), digest=served.get("digest"),
                               agent=contract.__version__, result=result)
    status.update(published=ec2.publish_running(clients.ec2(found.identity.region), found.identity.instance_id,
                                                running))


def _abandon_unresolved(autoscaling, found, config):
    """ABANDON the launch when the settings themselves are bad, if a well-formed hook name can be found."""
    hook = found.tags.get(TAG_LIFECYCLE_HOOK) or config.get("lifecycle_hook")
    if not isinstance(hook, str) or not HOOK_RE.match(hook):
        return
    try:
        found.membership = asg.settle_pending(autoscaling, found.identity.instance_id, found.membership,
                                              deadline=local_number(config, "group_deadline"))
    except AgentError as exc:  # the settings error is the one to report
        log.error("%s", exc)
        return
    if found.membership.lifecycle_state == asg.PENDING_WAIT:
        _abandon(autoscaling, found, hook)


def _abandon(autoscaling, found, hook):
    try:
        asg.complete_lifecycle(autoscaling, found.membership.group, hook, found.identity.instance_id, "ABANDON")
    except AgentError as exc:  # the original failure is the one to report
        log.error("%s", exc)


def _plan(status, command, settings, bundle_path, compose_env):
    """The compose model, as compose resolves it: the fixed tags to point at the pulled image, and every other
    image it names."""
    with status.step("plan"):
        model = compose.Compose(command, settings.compose_project, bundle_path, compose_env, 60).config()
        return compose.fixed_references(model, settings.image), compose.other_images(model, settings.image)


def _pull_everything(clients, settings, docker_client, status, command, fetched, compose_env):
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
            fixed_refs, others = _plan(status, command, settings, fetched.path, compose_env)
        except AgentError:
            app.cancel()
            raise  # a broken compose file is reported before a failed pull
        extra = [pool.submit(images.ensure, api, ref, policy, auth_for, settings.pull_stall_timeout,
                             settings.pull_timeout) for ref, policy in others]
        pulled = app.result()
        for (ref, _), future in zip(others, extra):
            got = future.result()
            log.info("image %s: %s", ref, "pulled" if got else "present, not pulled (pull_policy)")
    return pulled, fixed_refs, [ref for ref, _ in others]


# Pulls at once: the app image and the compose model's others. Layers of one pull already download in
# parallel inside the engine; a few pulls side by side hide the registries' round trips.
PULL_WORKERS = 4


def _deploy(clients, settings, found, environ, status, engaged=False):
    region = found.identity.region
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
    docker_client = clients.docker(settings.pull_timeout)
    pulled, fixed_refs, others = _pull_everything(clients, settings, docker_client, status, command, fetched,
                                                  compose_env)
    status.update(image_digest=pulled.digest, image_id=pulled.image_id, other_images=others)

    # What a restore puts back (F11): the images the fixed tags name now, and the current release.
    before = restore.Before(images={ref: images.local_image_id(docker_client, ref) for ref in fixed_refs},
                            release=bundle.current_release(settings.workdir), served=status.data.get("served"))
    status.update(previous_images=before.images, previous_release=before.release)

    # The point of no return: everything above only read or wrote beside the running stack.
    with status.step("activate"):
        retagged = [ref for ref in fixed_refs if images.retag(docker_client, pulled.image_id, ref)]
        bundle.activate(settings.workdir, fetched.release_id, settings.keep_releases)
    status.update(retagged=retagged, served=None)  # until health passes, nobody knows what serves

    try:
        # The release folder itself, not the `current` link: compose resolves relative bind mounts from it, so
        # a bundle that changes only mounted files changes the services' config and recreates them, and a
        # pruned old release is never still mounted.
        current = os.path.realpath(os.path.join(settings.workdir, bundle.CURRENT))
        with status.step("compose"):
            compose.Compose(command, settings.compose_project, current, compose_env, settings.compose_timeout).up()

        with status.step("health"):
            if settings.health_url:
                health.wait_for_url(clients.http(), settings.health_url, settings.health_timeout,
                                    interval=settings.health_interval)
            else:
                health.wait_for_containers(docker_client, settings.compose_project, settings.health_timeout,
                                           interval=settings.health_interval)
    except AgentError as exc:
        if engaged:
            raise  # A6: the launch is ABANDONed and the instance replaced; nothing to put back
        raise restore.restore(exc, docker_client, settings, before, command, compose_env, status) from None
    status.update(served={"version": settings.version, "digest": pulled.digest})
    log.info("version %s is up on %s (%s)", settings.version, found.identity.instance_id, pulled.digest)
    if settings.prune_images:
        restore.prune_old(docker_client, settings, pulled, before, status)
