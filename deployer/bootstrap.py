"""`push-bootstrap`: upload a bootstrap bundle and its SHA-256 manifest to S3, the manifest last.

The agent reads `manifest.json` under the prefix and verifies every file against it (S2: an ETag is no
checksum), so uploading the manifest last means no reader ever trusts half a bundle: until the new
manifest lands, readers see the old one, and a file that changed under it fails their checksum check.
"""

from __future__ import annotations

import hashlib
import logging
import os

from botocore.exceptions import BotoCoreError, ClientError

from agent import contract
from agent.contract import MANIFEST, ContractError

from .aws import translate
from .errors import UsageError

log = logging.getLogger(__name__)


def parse_s3_url(url):
    """s3://bucket/prefix/ -> (bucket, "prefix/"), by the contract's one set of rules (the agent's too)."""
    try:
        return contract.parse_s3_url(url)
    except ContractError as exc:
        raise UsageError(str(exc)) from None


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def collect(directory):
    """[(relative posix path, absolute path)] of the bundle's regular files, sorted; the manifest excluded (what
    the bundle must hold, docker-compose.yml first of all, is the manifest's rule: build_manifest)."""
    if not os.path.isdir(directory):
        raise UsageError(f"{directory!r} is not a directory")
    root = os.path.realpath(directory)
    files = []
    for here, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(here, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                raise UsageError(f"{rel} in {directory} is not a regular file (links are not uploaded)")
            files.append((rel, full))
    files.sort()
    return files


def build_manifest(directory, files):
    """The manifest the agent verifies (the contract's format): a bundle the agent would refuse is refused here."""
    try:
        return contract.build_manifest((rel, sha256_of(full)) for rel, full in files)
    except ContractError as exc:
        raise UsageError(f"{directory} cannot be pushed: {exc}") from None


def plan_push(directory, url):
    bucket, prefix = parse_s3_url(url)
    files = collect(directory)
    manifest = build_manifest(directory, files)
    uploads = [(full, prefix + rel) for rel, full in files]
    return bucket, prefix, uploads, manifest


def push(s3, bucket, prefix, uploads, manifest):
    """Upload every file, then the manifest. Returns the number of objects written."""
    try:
        for full, key in uploads:
            log.info("upload s3://%s/%s", bucket, key)
            with open(full, "rb") as body:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
        body = contract.manifest_bytes(manifest)
        log.info("upload s3://%s/%s%s (last, %d files)", bucket, prefix, MANIFEST, len(manifest["files"]))
        s3.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=body, ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "PutObject") from exc
    return len(uploads) + 1
