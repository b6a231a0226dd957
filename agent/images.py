"""The Docker engine: pull the group's version, re-tag it as the tag the compose file names, record the digest.

The seed's scheme: the bundle's compose file names a FIXED tag (e.g. `web:live`); the version actually run is
the group's `bluegreen:version` tag, pulled as `web:<version>` and tagged as `web:live`. The pull happens before
anything is re-tagged, so a failed pull leaves `live` on the old image.
"""
from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass

from agent.errors import ImageError

log = logging.getLogger(__name__)

ECR_HOST_RE = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class Pulled:
    reference: str
    image_id: str
    digest: str | None


# -- references (pure) -------------------------------------------------------------------------------------
def split_reference(ref):
    """'127.0.0.1:5000/web:live' -> ('127.0.0.1:5000/web', 'live'); no tag -> 'latest'; a digest -> (repo, None)."""
    if "@" in ref:
        return ref.split("@", 1)[0], None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def registry_host(repository):
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first
    return "docker.io"


def normalize_repository(repository):
    """Docker Hub's implicit names spelled out, so that 'web' and 'docker.io/library/web' compare equal."""
    host = registry_host(repository)
    path = repository[len(host) + 1:] if repository.startswith(host + "/") else repository
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    return f"{host}/{path}"


def ecr_registry(repository):
    """(account, region) when the repository lives in ECR, else None."""
    match = ECR_HOST_RE.match(registry_host(repository))
    return (match.group(1), match.group(2)) if match else None


# -- engine -----------------------------------------------------------------------------------------------
def ecr_auth(ecr_client, account):
    """Pull credentials from ECR GetAuthorizationToken. The password is never logged."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        data = ecr_client.get_authorization_token(registryIds=[account])["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    except (BotoCoreError, ClientError, KeyError, IndexError, ValueError) as exc:
        raise ImageError(f"ECR GetAuthorizationToken for account {account} failed: {exc}") from None
    log.info("ECR login for account %s (user %s)", account, user)
    return {"username": user, "password": password}


def pull(docker_client, repository, tag, auth=None):
    import docker.errors
    import requests

    ref = f"{repository}:{tag}"
    log.info("pulling %s", ref)
    try:
        image = docker_client.images.pull(repository, tag=tag, auth_config=auth)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise ImageError(f"pull {ref} failed: {_short(exc)}") from None
    wanted = normalize_repository(repository)
    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests", [])
               if normalize_repository(d.split("@", 1)[0]) == wanted]
    return Pulled(reference=ref, image_id=image.id, digest=digests[0] if digests else None)


def local_image_id(docker_client, ref):
    import docker.errors

    try:
        return docker_client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise ImageError(f"inspect {ref} failed: {_short(exc)}") from None


def retag(docker_client, image_id, fixed_ref):
    """Point fixed_ref at image_id; False when it already does (a rerun changes nothing)."""
    import docker.errors

    if local_image_id(docker_client, fixed_ref) == image_id:
        return False
    repository, tag = split_reference(fixed_ref)
    try:
        ok = docker_client.images.get(image_id).tag(repository, tag=tag)
    except docker.errors.DockerException as exc:
        raise ImageError(f"tag {image_id} as {fixed_ref} failed: {_short(exc)}") from None
    if not ok:
        raise ImageError(f"the engine refused to tag {image_id} as {fixed_ref}")
    log.info("tagged %s as %s", image_id[:19], fixed_ref)
    return True


def _short(exc):
    text = str(exc).strip().replace("\n", " ")
    return text[:400]
