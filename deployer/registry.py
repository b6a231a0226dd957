"""Whether IMAGE:VERSION exists in a Docker registry that is not ECR: one HEAD on the manifest (the registry's
HTTP API V2), anonymous, or with the anonymous bearer token the registry's 401 names (Docker Hub's flow).

ECR repositories are asked through the deployer's AWS credentials instead (aws.DeployerAws.describe_ecr_image).
A registry that cannot be reached from where the deployer runs, or that wants credentials the deployer does not
have, gives UNKNOWN: pre-flight warns and goes on (issue 10, "Decisions pinned").
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request

from agent.images import normalize_repository

FOUND, MISSING, UNKNOWN = "found", "missing", "unknown"
TIMEOUT_S = 5.0
# Every manifest kind a pull may resolve to: without them a registry may answer 404 for an OCI-only image.
ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
_BEARER_RE = re.compile(r'(\w+)="([^"]*)"')
# bluegreen:digest's value (the contract's registry): what deploy sets, and what the agent pulls.
DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


def manifest_url(repository, tag):
    """The V2 manifest URL of repository:tag. Docker talks plain HTTP to registries on the loopback interface
    (its default insecure registries), HTTPS to every other; Docker Hub's API host is registry-1.docker.io."""
    host, _, path = normalize_repository(repository).partition("/")
    bare = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    scheme = "http" if bare in ("localhost", "[::1]") or bare.startswith("127.") else "https"
    if host == "docker.io":
        host = "registry-1.docker.io"
    return f"{scheme}://{host}/v2/{path}/manifests/{urllib.parse.quote(tag)}"


def _head(url, token=None, opener=urllib.request.urlopen):
    headers = {"Accept": ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with opener(urllib.request.Request(url, method="HEAD", headers=headers), timeout=TIMEOUT_S) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def _anonymous_token(challenge, opener=urllib.request.urlopen):
    """The token a `WWW-Authenticate: Bearer realm=..,service=..,scope=..` challenge hands out anonymously."""
    fields = dict(_BEARER_RE.findall(challenge))
    realm = fields.pop("realm", None)
    if not realm or not realm.startswith(("https://", "http://")):
        return None
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    with opener(realm + ("?" + query if query else ""), timeout=TIMEOUT_S) as resp:
        doc = json.loads(resp.read() or b"{}")
    return doc.get("token") or doc.get("access_token")


def probe(repository, tag, opener=urllib.request.urlopen):
    """(FOUND | MISSING | UNKNOWN, one line saying what was asked and what came back, the digest or None).

    The digest is the registry's Docker-Content-Digest for the manifest the Accept list selects: with the list
    and index types accepted, a multi-platform image answers its index's digest, which is what `docker pull`
    records and what a pull by digest names (audit F8)."""
    url = manifest_url(repository, tag)
    try:
        status, headers = _head(url, opener=opener)
        if status == 401 and (headers.get("WWW-Authenticate") or "").lower().startswith("bearer "):
            token = _anonymous_token(headers["WWW-Authenticate"][len("bearer "):], opener=opener)
            if token:
                status, headers = _head(url, token, opener=opener)
    except (OSError, ValueError) as exc:  # unreachable, refused, timed out, TLS, an unreadable token answer
        reason = getattr(exc, "reason", exc)
        return UNKNOWN, f"HEAD {url}: the registry cannot be reached from here ({reason})", None
    if 200 <= status < 300:
        digest = (headers.get("Docker-Content-Digest") or "").strip()
        return FOUND, f"HEAD {url}: {status}", digest if DIGEST_RE.match(digest) else None
    if status == 404:
        return MISSING, f"HEAD {url}: 404, no such manifest", None
    if status in (401, 403):
        return UNKNOWN, f"HEAD {url}: {status}, the registry wants credentials the deployer does not have", None
    return UNKNOWN, f"HEAD {url}: {status}", None
