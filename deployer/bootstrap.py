"""`push-bootstrap`: upload a bootstrap bundle and its SHA-256 manifest to S3, content-addressed, the manifest last.

`push-bootstrap DIR s3://bucket/BASE/` writes the files under `BASE/<sha256 of manifest.json>/`, then that
prefix's `manifest.json`, then `BASE/LATEST` holding the bundle's URL (issue 11, "the bundle belongs to the
version"; audit F9). A bundle's prefix is named by its content, so it never changes once written: a push cannot
change a running fleet, and `deploy` moves a group to a new bundle by its tag (bluegreen:bootstrap), which a
rollback leaves as it was. Pushing the same folder again finds the manifest already there and uploads nothing.

The agent reads `manifest.json` under the prefix and verifies every file against it (S2: an ETag is no
checksum), and that the manifest hashes to its prefix's name (F10); the manifest goes last, so a bundle with a
manifest is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from agent import contract
from agent.contract import LATEST, MANIFEST, ContractError, bundle_address, bundle_base

from .aws import translate
from .errors import UsageError

log = logging.getLogger(__name__)


def parse_s3_url(url):
    """s3://bucket/prefix/ -> (bucket, "prefix/"), by the contract's one set of rules (the agent's too)."""
    try:
        return contract.parse_s3_url(url)
    except ContractError as exc:
        raise UsageError(str(exc)) from None


def canonical_url(url):
    """A bundle URL as the tag will carry it (s3://bucket/prefix/), or UsageError by the contract's rules."""
    return contract.format_s3_url(*parse_s3_url(url))


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


def mode_of(full):
    """The mode the agent gives the file (audit F24): 0755 when it is executable here (an entrypoint script the
    stack mounts), else the contract's default 0644."""
    return 0o755 if os.stat(full).st_mode & 0o111 else contract.DEFAULT_FILE_MODE


def check_sizes(directory, files):
    """The contract's limits (F24), refused here before any upload rather than by every agent at boot."""
    total = 0
    for rel, full in files:
        size = os.path.getsize(full)
        if size > contract.BUNDLE_FILE_MAX:
            raise UsageError(f"{directory} cannot be pushed: {rel} is {size} bytes, above the {contract.BUNDLE_FILE_MAX} "
                             "a bundle file may hold (a bundle is configuration; images go to a registry)")
        total += size
    if total > contract.BUNDLE_MAX:
        raise UsageError(f"{directory} cannot be pushed: its files hold {total} bytes, above the "
                         f"{contract.BUNDLE_MAX} a bundle may hold")


def build_manifest(directory, files):
    """The manifest the agent verifies (the contract's format): a bundle the agent would refuse is refused here."""
    check_sizes(directory, files)
    try:
        return contract.build_manifest((rel, sha256_of(full), mode_of(full)) for rel, full in files)
    except ContractError as exc:
        raise UsageError(f"{directory} cannot be pushed: {exc}") from None


@dataclass(frozen=True)
class Push:
    """What a push writes: the bundle's URL and prefix (BASE/<manifest sha256>/), its files, the manifest."""

    bucket: str
    base: str
    prefix: str
    url: str
    uploads: tuple  # (local path, key)
    manifest: dict

    @property
    def latest_key(self):
        return self.base + LATEST


def plan_push(directory, url):
    """Read and hash the folder (before any client is made); the bundle goes under `<base>/<manifest sha256>/`."""
    bucket, base = parse_s3_url(url)
    if bundle_address(base) is not None:
        raise UsageError(f"{url} already names a content-addressed bundle; push to its base "
                         f"{contract.format_s3_url(bucket, bundle_base(base))}")
    files = collect(directory)
    manifest = build_manifest(directory, files)
    try:
        bundle = contract.bundle_url(bucket, base, contract.manifest_bytes(manifest))
    except ContractError as exc:
        raise UsageError(f"the bundle's URL under {url}: {exc}") from None
    prefix = contract.parse_s3_url(bundle)[1]
    return Push(bucket, base, prefix, bundle, tuple((full, prefix + rel) for rel, full in files), manifest)


def _read(s3, bucket, key):
    """The object's bytes, or None when it is absent. S3 answers 403 for a missing key to a caller without
    s3:ListBucket (S3): taken as absent too, so the push writes it (a real refusal then fails the PutObject)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied", "403"):
            return None
        raise


def push(s3, plan):
    """Upload every file, then the manifest, then LATEST; skip what is there already. Returns the number of
    objects written (0: the same bundle was pushed before and is the latest)."""
    body = contract.manifest_bytes(plan.manifest)
    written = 0
    try:
        if _read(s3, plan.bucket, plan.prefix + MANIFEST) == body:
            log.info("%s is there already (same manifest): nothing to upload", plan.url)
        else:
            for full, key in plan.uploads:
                log.info("upload s3://%s/%s", plan.bucket, key)
                with open(full, "rb") as f:
                    s3.put_object(Bucket=plan.bucket, Key=key, Body=f)
            log.info("upload s3://%s/%s%s (last, %d files)", plan.bucket, plan.prefix, MANIFEST,
                     len(plan.manifest["files"]))
            s3.put_object(Bucket=plan.bucket, Key=plan.prefix + MANIFEST, Body=body, ContentType="application/json")
            written += len(plan.uploads) + 1
        if (_read(s3, plan.bucket, plan.latest_key) or b"").decode(errors="replace").strip() != plan.url:
            log.info("upload s3://%s/%s -> %s", plan.bucket, plan.latest_key, plan.url)
            s3.put_object(Bucket=plan.bucket, Key=plan.latest_key, Body=(plan.url + "\n").encode(),
                          ContentType="text/plain")
            written += 1
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, "PutObject") from exc
    return written


def latest(s3, bucket, base):
    """The bundle URL `BASE/LATEST` names, or None when nothing was pushed under BASE (S3 said so: 404).

    A 403 is refused, not taken as "nothing pushed": it is a missing grant (an older deployer role without the
    LATEST read) or a missing key hidden by a missing s3:ListBucket (S3), and going on would deploy the new
    version with the old bundle while a log line blamed a push that did happen."""
    try:
        data = s3.get_object(Bucket=bucket, Key=base + LATEST)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            return None
        if code in ("AccessDenied", "403"):
            raise UsageError(f"s3://{bucket}/{base}{LATEST} cannot be read (AccessDenied): grant the deployer "
                             "s3:GetObject on it (iam/deployer-policy.json, ReadBootstrapManifest), or name the "
                             "bundle with --bootstrap") from None
        raise translate(exc, "GetObject") from exc
    except BotoCoreError as exc:
        raise translate(exc, "GetObject") from exc
    if data is None:
        return None
    url = data.decode(errors="replace").strip()
    try:
        found_bucket, prefix = contract.parse_s3_url(url)
    except ContractError as exc:
        raise UsageError(f"s3://{bucket}/{base}{LATEST} does not hold a bundle URL: {exc}") from None
    if found_bucket != bucket or bundle_base(prefix) != base or bundle_address(prefix) is None:
        raise UsageError(f"s3://{bucket}/{base}{LATEST} names {url}, which is no bundle pushed under "
                         f"s3://{bucket}/{base}; push again, or pass --bootstrap")
    return url
