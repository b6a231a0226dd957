"""The bootstrap bundle: manifest.json plus the files it lists, fetched from S3, verified, swapped in atomically.

Layout under the work folder:
    releases/<manifest sha256[:16]>/   one verified bundle each (the current one and the previous are kept)
    current -> releases/<id>           a relative symlink, replaced with one rename

Fetching stages into a folder beside the releases and renames it into place only once every checksum matched
(aws-rules.md S2: our own SHA-256, never the ETag), so a failed download never touches `current`.
"""

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from urllib.parse import quote

from agent import contract
from agent.contract import COMPLETE_MARKER, MANIFEST, ContractError
from agent.errors import BundleError

log = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"


@dataclass(frozen=True)
class Bundle:
    release_id: str
    path: str
    files: tuple[tuple[str, str], ...]  # (relative path, sha256)
    reused: bool


# -- the manifest (its rules are the contract's) -----------------------------------------------------------
def parse_manifest(data) -> list[tuple[str, str]]:
    """manifest.json's bytes -> [(path, sha256)], or BundleError."""
    try:
        return contract.parse_manifest(data)
    except ContractError as exc:
        raise BundleError(str(exc)) from None


def check_path(path):
    """A relative path that stays inside the bundle, or BundleError."""
    try:
        return contract.check_bundle_path(path)
    except ContractError as exc:
        raise BundleError(str(exc)) from None


# -- S3 readers -----------------------------------------------------------------------------------------------
class SignedReader:
    """GetObject with the instance profile (S1), through a boto3 "s3" client made in the CLI entry."""

    def __init__(self, client, bucket):
        self.client, self.bucket = client, bucket

    def read(self, key):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BundleError(f"missing object s3://{self.bucket}/{key}") from None
            raise BundleError(f"GetObject s3://{self.bucket}/{key} failed: {exc}") from None
        except BotoCoreError as exc:
            raise BundleError(f"GetObject s3://{self.bucket}/{key} failed: {exc}") from None


def unsigned_base_url(bucket, region, environ):
    """Where an unsigned GET goes (S1). On AWS: https://BUCKET.s3.REGION.amazonaws.com/ (virtual-hosted, through
    the VPC gateway endpoint), or https://s3.REGION.amazonaws.com/BUCKET/ (path-style) for a bucket with dots,
    whose name breaks the wildcard certificate (S3); China Regions end in amazonaws.com.cn. With
    AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL set (C1, e.g. the emulator): ENDPOINT/BUCKET/ (path-style, since a
    local endpoint has no per-bucket host names)."""
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return endpoint.rstrip("/") + "/" + bucket + "/"
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    if "." in bucket:
        return f"https://s3.{region}.{domain}/{bucket}/"
    return f"https://{bucket}.s3.{region}.{domain}/"


class UnsignedReader:
    """A plain HTTPS GET with no credentials, as the seed's curl through the VPC endpoint (S1)."""

    def __init__(self, session, base_url, bucket, timeout=30.0):
        self.session, self.base_url, self.bucket, self.timeout = session, base_url, bucket, timeout

    def read(self, key):
        import requests

        url = self.base_url + quote(key, safe="/~")
        try:
            resp = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise BundleError(f"GET {url} failed: {exc}") from None
        if resp.status_code == 404:
            raise BundleError(f"missing object s3://{self.bucket}/{key} (GET {url} answered 404)")
        if resp.status_code == 403:
            raise BundleError(f"GET {url} answered 403: the bucket policy does not allow unsigned reads here")
        if resp.status_code != 200:
            raise BundleError(f"GET {url} answered HTTP {resp.status_code}")
        return resp.content


# -- fetch, verify, swap ------------------------------------------------------------------------------------
def releases_dir(workdir):
    return os.path.join(workdir, RELEASES)


def current_release(workdir):
    """The id of the current release, or None before the first one."""
    link = os.path.join(workdir, CURRENT)
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def fetch(reader, prefix, workdir):
    """Download and verify the bundle into releases/<id>; `current` is not touched."""
    raw = reader.read(prefix + MANIFEST)
    files = parse_manifest(raw)
    release_id = hashlib.sha256(raw).hexdigest()[:16]
    final = os.path.join(releases_dir(workdir), release_id)
    if os.path.exists(os.path.join(final, COMPLETE_MARKER)) and _verified(final, files):
        log.info("bundle %s already fetched and verified", release_id)
        return Bundle(release_id, final, tuple(files), reused=True)
    os.makedirs(releases_dir(workdir), exist_ok=True)
    _remove_stale_staging(workdir)
    staging = tempfile.mkdtemp(prefix=f".staging-{release_id}-", dir=releases_dir(workdir))
    try:
        for path, digest in files:
            data = reader.read(prefix + path)
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise BundleError(f"checksum mismatch for s3://{reader.bucket}/{prefix}{path}: "
                                  f"manifest says {digest}, object has {actual}")
            target = os.path.join(staging, path)
            if not os.path.realpath(target).startswith(os.path.realpath(staging) + os.sep):
                raise BundleError(f"path {path!r} escapes the bundle")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        with open(os.path.join(staging, MANIFEST), "wb") as f:
            f.write(raw)
        open(os.path.join(staging, COMPLETE_MARKER), "w").close()
        if os.path.exists(final):  # an incomplete or corrupted earlier copy
            shutil.rmtree(final)
        os.rename(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"could not write the bundle under {releases_dir(workdir)}: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle %s fetched: %d file(s) verified", release_id, len(files))
    return Bundle(release_id, final, tuple(files), reused=False)


def _remove_stale_staging(workdir):
    # The caller holds the agent lock, so any staging folder left here is from a run that crashed.
    root = releases_dir(workdir)
    for entry in os.listdir(root):
        if entry.startswith(".staging-"):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _verified(folder, files):
    for path, digest in files:
        try:
            with open(os.path.join(folder, path), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    return False
        except OSError:
            return False
    return True


def activate(workdir, release_id, keep=2):
    """Point `current` at the release with one atomic rename; keep the newest `keep` releases (incl. current)."""
    link = os.path.join(workdir, CURRENT)
    previous = current_release(workdir)
    if previous != release_id:
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join(RELEASES, release_id), tmp)
        os.replace(tmp, link)
        log.info("bundle %s is now current (was %s)", release_id, previous)
    _prune(workdir, keep, {release_id, previous})
    return previous


def _prune(workdir, keep, protected):
    root = releases_dir(workdir)
    entries = [e for e in os.listdir(root) if not e.startswith(".")]
    entries.sort(key=lambda e: os.path.getmtime(os.path.join(root, e)), reverse=True)
    kept = [e for e in entries if e in protected]
    for entry in entries:
        if entry in protected:
            continue
        if len(kept) < keep:
            kept.append(entry)
        else:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
