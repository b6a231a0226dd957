"""`push-bootstrap`: upload a bootstrap bundle and its SHA-256 manifest to S3, the manifest last.

The agent reads `manifest.json` under the prefix and verifies every file against it (S2: an ETag is no
checksum), so uploading the manifest last means no reader ever trusts half a bundle: until the new
manifest lands, readers see the old one, and a file that changed under it fails their checksum check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

from botocore.exceptions import BotoCoreError, ClientError

from .aws import translate
from .errors import UsageError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url):
    """s3://bucket/prefix/ -> (bucket, "prefix/"); the prefix always ends with "/" (or is empty)."""
    if not url.startswith("s3://"):
        raise UsageError(f"{url!r} is not an s3://bucket/prefix/ URL")
    bucket, _, prefix = url[5:].partition("/")
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise UsageError(f"{bucket!r} in {url!r} is not a valid S3 bucket name")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix.startswith("/") or "//" in prefix:
        raise UsageError(f"prefix {prefix!r} in {url!r} has an empty path segment")
    return bucket, prefix


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def collect(directory):
    """[(relative posix path, absolute path)] of the bundle's regular files, sorted; the manifest excluded."""
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
    if not any(rel == "docker-compose.yml" for rel, _ in files):
        raise UsageError(f"{directory} has no docker-compose.yml at its top: the agent needs one")
    return files


def build_manifest(files):
    """The manifest the agent verifies, in exactly this form: {"files": [{"path": ..., "sha256": ...}]}."""
    return {"files": [{"path": rel, "sha256": sha256_of(full)} for rel, full in files]}


def plan_push(directory, url):
    bucket, prefix = parse_s3_url(url)
    files = collect(directory)
    manifest = build_manifest(files)
    uploads = [(full, prefix + rel) for rel, full in files]
    return bucket, prefix, uploads, manifest


def push(s3, bucket, prefix, uploads, manifest):
    """Upload every file, then the manifest. Returns the number of objects written."""
    try:
        for full, key in uploads:
            log.info("upload s3://%s/%s", bucket, key)
            with open(full, "rb") as body:
                s3.put_object(Bucket=bucket, Key=key, Body=body)
        body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        log.info("upload s3://%s/%s%s (last, %d files)", bucket, prefix, MANIFEST, len(manifest["files"]))
        s3.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=body, ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "PutObject") from exc
    return len(uploads) + 1
