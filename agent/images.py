"""The Docker engine: pull the group's version, re-tag it as the tag the compose file names, record the digest.

The seed's scheme: the bundle's compose file names a FIXED tag (e.g. `web:live`); the version actually run is
the group's `bluegreen:version` tag, pulled as `web:<version>` and tagged as `web:live`. The pull happens before
anything is re-tagged, so a failed pull leaves `live` on the old image.
"""
from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass

from agent.errors import ImageError

log = logging.getLogger(__name__)

# Every host form of a private ECR registry (audit F7), the forms the ecr-login credential helper itself knows:
# `<acct>.dkr.ecr.<region>.amazonaws.com`, FIPS `dkr.ecr-fips`, the dual-stack `<acct>.dkr-ecr[-fips].<region>.on.aws`
# (IPv6 subnets), China `amazonaws.com.cn` and `on.amazonwebservices.com.cn`, and the isolated and sovereign
# partitions. A pull-through cache repository (`<acct>.dkr.ecr.<region>.amazonaws.com/<prefix>/<upstream path>`)
# lives on the same hosts: only its IAM differs (iam/agent-ptc-policy.json).
ECR_HOST_RE = re.compile(
    r"^(\d{12})\.dkr[.-]ecr(?:-fips)?\.([a-z0-9][a-z0-9-]*)\."
    r"(?:amazonaws\.(?:com|com\.cn|eu)|on\.aws|on\.amazonwebservices\.com\.cn"
    r"|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$")


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


def docker_config_covers(host, config=None):
    """Whether the Docker config (DOCKER_CONFIG or ~/.docker/config.json, what docker-py and compose both read)
    names credentials for `host`: an `auths` entry, a `credHelpers` entry, or a `credsStore` for every host."""
    if config is None:
        from docker import auth as docker_auth

        config = docker_auth.load_config()
    if config.creds_store or host in config.cred_helpers:
        return True
    return any(_auths_host(key) == host for key in config.auths)


def _auths_host(key):
    # `auths` keys may be URLs (`https://index.docker.io/v1/`) or plain hosts.
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def registry_auth(repository, ecr_client_for, config=None):
    """The auth_config for a pull of `repository`, or None to let docker-py send the Docker config's own.

    The Docker config is the one path for every registry (audit F5): the baked `ecr-login` credential helper
    for ECR, `auths` for Docker Hub and the others; compose would read the same file. The agent's own ECR
    GetAuthorizationToken is kept only for an ECR host the config does not cover (an image baked without the
    helper, or an ECR host it was not configured for), where it is the difference between a pull and
    "no basic auth credentials"."""
    host = registry_host(repository)
    ecr = ecr_registry(repository)
    if ecr is None or docker_config_covers(host, config):
        return None
    return ecr_auth(ecr_client_for(ecr[1]), ecr[0])


def pull(api, repository, tag=None, digest=None, auth=None, stall_timeout=60.0, deadline=600.0,
         clock=time.monotonic):
    """Pull repository:tag, or repository@digest and check that the engine holds exactly that digest.

    docker-py's own pull posts with timeout=None (audit F13): a registry that stops sending mid-layer would
    hang the agent until systemd kills it. Here the engine's progress stream is read with a socket timeout
    of `stall_timeout` (no progress message for that long: stalled), under one overall `deadline`; on either
    the stream is closed, and the engine cancels a pull whose client went away."""
    import docker.errors
    import requests
    import urllib3.exceptions

    ref = f"{repository}@{digest}" if digest else f"{repository}:{tag}"
    log.info("pulling %s", ref)
    until = clock() + deadline
    response = None
    try:
        response = _post_pull(api, repository, digest or tag, auth, stall_timeout)
        for event in api._stream_helper(response, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise ImageError(f"pull {ref} failed: {_short(event['error'])}")
            if clock() > until:
                raise ImageError(f"pull {ref} did not finish within {deadline:.0f}s (pull_timeout)")
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError,
            urllib3.exceptions.ReadTimeoutError) as exc:
        if _timed_out(exc):
            raise ImageError(f"pull {ref} stalled: no progress for {stall_timeout:.0f}s (pull_stall_timeout)") \
                from None
        raise ImageError(f"pull {ref} failed: {_short(exc)}") from None
    except (docker.errors.DockerException, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise ImageError(f"pull {ref} failed: {_short(exc)}") from None
    finally:
        if response is not None:
            response.close()
    try:
        image = api.inspect_image(ref)
    except docker.errors.DockerException as exc:
        raise ImageError(f"pull {ref} ended but the engine has no such image: {_short(exc)}") from None
    found = repo_digests(image, repository)
    if digest and digest not in found:
        # The engine resolves repo@digest by content, so this means a broken registry or engine: never run it.
        raise ImageError(f"pulled {ref} but the engine reports digest(s) {', '.join(found) or 'none'} for it")
    return Pulled(reference=ref, image_id=image["Id"], digest=digest or (found[0] if found else None))


def _post_pull(api, repository, tag, auth, stall_timeout):
    """docker-py's APIClient.pull (docker/api/image.py) with a read timeout instead of timeout=None: the same
    request, the same X-Registry-Auth (the Docker config's credentials when auth is None)."""
    from docker import auth as docker_auth

    headers = {}
    if auth is None:
        registry, _ = docker_auth.resolve_repository_name(repository)
        header = docker_auth.get_config_header(api, registry)
        if header:
            headers["X-Registry-Auth"] = header
    else:
        headers["X-Registry-Auth"] = docker_auth.encode_header(auth)
    response = api._post(api._url("/images/create"), params={"fromImage": repository, "tag": tag},
                         headers=headers, stream=True, timeout=(30, stall_timeout))
    api._raise_for_status(response)
    return response


def _timed_out(exc):
    text = f"{type(exc).__name__} {exc}"
    return "timed out" in text or "Timeout" in text


def repo_digests(image_attrs, repository):
    """The digests the engine lists for `repository` in an image's RepoDigests."""
    wanted = normalize_repository(repository)
    return [d.split("@", 1)[1] for d in image_attrs.get("RepoDigests") or []
            if normalize_repository(d.split("@", 1)[0]) == wanted]


def ensure(api, ref, policy, auth_for, stall_timeout, deadline):
    """One image the compose model names besides the app's, present before the point of no return (audit F5):
    compose's own pull policy, applied here so that `up --pull never` finds everything. Returns the Pulled
    image, or None when it was present and the policy does not pull (nothing asked of the registry)."""
    name, _, digest = ref.partition("@")
    repository, tag = split_reference(name)
    present = _inspect_id(api, ref)
    if policy == "never":
        if present is None:
            raise ImageError(f"{ref} is not on this instance and its compose pull_policy is never")
        return None
    if present is not None and policy != "always":
        return None
    return pull(api, repository, tag=tag, digest=digest or None, auth=auth_for(repository),
                stall_timeout=stall_timeout, deadline=deadline)


def _inspect_id(api, ref):
    import docker.errors

    try:
        return api.inspect_image(ref)["Id"]
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise ImageError(f"inspect {ref} failed: {_short(exc)}") from None


def local_image_id(docker_client, ref):
    return _inspect_id(docker_client.api, ref)


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


def untag(docker_client, ref):
    """Remove the tag `ref` (a restore to an instance where the fixed tag did not exist before)."""
    import docker.errors

    try:
        docker_client.images.remove(ref, noprune=True)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.DockerException as exc:
        raise ImageError(f"untag {ref} failed: {_short(exc)}") from None


def prune(docker_client, repository, image_ids):
    """Remove this repository's references to `image_ids` (images this agent pulled for older versions, beyond
    the current and the previous one: audit F18), except any image a container uses, running or not. Only
    this repository's references go: an image also tagged elsewhere keeps those tags. Returns the ids whose
    references are all gone; a failure is logged, never raised (a full disk is the next deploy's problem, and
    must not fail this one)."""
    import docker.errors

    wanted = normalize_repository(repository)
    try:
        used = {c.attrs.get("Image") for c in docker_client.containers.list(all=True)}
    except docker.errors.DockerException as exc:
        log.warning("image pruning skipped: %s", _short(exc))
        return []
    done = []
    for image_id in image_ids:
        if image_id in used:
            continue
        try:
            attrs = docker_client.api.inspect_image(image_id)
        except docker.errors.ImageNotFound:
            done.append(image_id)
            continue
        except docker.errors.DockerException as exc:
            log.warning("could not inspect %s: %s", image_id[:19], _short(exc))
            continue
        refs = [r for r in (attrs.get("RepoTags") or []) + (attrs.get("RepoDigests") or [])
                if normalize_repository(_ref_repository(r)) == wanted]
        try:
            for ref in refs:
                docker_client.images.remove(ref)
            done.append(image_id)
            log.info("pruned %s (%s)", image_id[:19], ", ".join(refs) or "no references left")
        except docker.errors.ImageNotFound:
            done.append(image_id)
        except docker.errors.DockerException as exc:
            log.warning("could not prune %s: %s", image_id[:19], _short(exc))
    return done


def _ref_repository(ref):
    return split_reference(ref.split("@", 1)[0])[0]


def _short(exc):
    text = str(exc).strip().replace("\n", " ")
    return text[:400]
