"""After the point of no return: put the previous version back when activation fails on a running instance
(audit F11, issue 11 part 5), and prune the app images older than the previous version (audit F18).

A failed activation during a launch (a hook engaged) is not restored: the launch is ABANDONed and the
instance replaced (A6). On a running instance (an operator's canary re-run on an InService instance, or a
re-run without a hook) nothing would replace it: the old version must serve again.
"""

import logging
import os
from dataclasses import dataclass

from agent import bundle, compose, images
from agent.errors import AgentError

log = logging.getLogger(__name__)

# Image ids status.json remembers as pulled by this agent (newest first), enough to find what to prune.
HISTORY_MAX = 10


@dataclass(frozen=True)
class Before:
    """What served before `activate`: the image id each fixed tag named (None: the tag did not exist), the
    current release (None: the first deployment), and what status.json said served (version, digest)."""

    images: dict
    release: object
    served: object


def restore(exc, docker_client, settings, before, command, compose_env, status):
    """Put the fixed tags and `current` back, and run compose on the old release. Returns the error to raise:
    `exc`'s class, step and exit code, its message followed by what the restore did."""
    # Without a previous release nothing ran here before. Fixed tags that did not exist before (a new bundle
    # naming a new fixed tag) are untagged: the old release's compose file names its own, untouched.
    if before.release is None:
        status.update(restore={"result": "nothing", "reason": "first deployment on this instance"})
        return _with_note(exc, "nothing to restore: no earlier version ran here")
    try:
        with status.step("restore"):
            for ref, image_id in sorted(before.images.items()):
                if image_id is None:
                    images.untag(docker_client, ref)
                else:
                    images.retag(docker_client, image_id, ref)
            bundle.activate(settings.workdir, before.release, settings.keep_releases)
            folder = os.path.realpath(os.path.join(settings.workdir, bundle.CURRENT))
            compose.Compose(command, settings.compose_project, folder, compose_env, settings.compose_timeout).up()
    except AgentError as again:
        status.update(restore={"result": "failed", "release": before.release, "error": str(again)})
        log.error("restoring release %s failed: %s", before.release, again)
        return _with_note(exc, f"restoring the previous version failed too: {again}")
    version = (before.served or {}).get("version")
    # `release` names what is current again; the release that failed stays on record beside it.
    status.update(release=before.release, failed_release=status.data.get("release"))
    status.update(served=before.served, restore={"result": "restored", "release": before.release,
                                                 "images": before.images, "version": version})
    what = f"version {version}" if version else f"release {before.release}"
    log.warning("activation failed; the previous %s is restored and running again", what)
    return _with_note(exc, f"the previous {what} was restored")


def _with_note(exc, note):
    error = type(exc)(f"{exc}; {note}", step=exc.step)
    error.exit_code = exc.exit_code
    return error


def prune_old(docker_client, settings, pulled, before, status):
    """Keep the current and the previous version of the app image; prune the others this agent pulled."""
    history = [pulled.image_id] + [i for i in status.data.get("image_history") or [] if i != pulled.image_id]
    previous = [i for i in before.images.values() if i and i != pulled.image_id]
    keep = {pulled.image_id} | set(previous or history[1:2])
    for image_id in previous:  # an older version the fixed tags named, pulled before history was kept
        if image_id not in history:
            history.append(image_id)
    gone = set(images.prune(docker_client, settings.image, [i for i in history if i not in keep]))
    history = [i for i in history if i not in gone][:HISTORY_MAX]
    status.update(image_history=history, kept_images=sorted(keep), pruned_images=sorted(gone))
