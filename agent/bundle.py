"""The bootstrap bundle: manifest.json plus the files it lists, fetched from S3, verified, swapped in atomically.

Layout under the work folder:
    releases/<manifest sha256[:16]>/   one verified bundle each (the current one and the previous are kept), 0755
    current -> releases/<id>           a relative symlink, replaced with one rename

Fetching stages into a folder beside the releases and renames it into place only once every checksum matched
(aws-rules.md S2: our own SHA-256, never the ETag), so a failed download never touches `current`. Objects are
streamed to disk and hashed as they arrive, within the contract's size limits (audit F24). A content-addressed
prefix (`BASE/<sha256>/`, what push-bootstrap writes) must hold the manifest it is named by (audit F10).
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import quote

from agent import contract
from agent.contract import BUNDLE_FILE_MAX, BUNDLE_MAX, COMPLETE_MARKER, MANIFEST, MANIFEST_MAX, ContractError
from agent.errors import BundleError

log = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
RELEASE_DIR_MODE = 0o755  # F24: not mkdtemp's 0700; compose and the containers' users read it
CHUNK = 1 << 16

# S3: a GetObject refused with AccessDenied is either refused or missing (without s3:ListBucket S3 answers 403
# for a missing key), or a KMS key the reader may not use (S4). One line that names them all.
DENIED_CAUSES = ("no s3:GetObject on it, the object is missing (without s3:ListBucket S3 answers 403 for a "
                 "missing key, S3), or it is SSE-KMS encrypted with a key the instance role may not use "
                 "(kms:Decrypt, S4; iam/agent-policy-kms.json)")


@dataclass(frozen=True)
class Bundle:
    release_id: str
    path: str
    files: tuple[tuple[str, str], ...]  # (relative path, sha256)
    reused: bool


# -- the manifest (its rules are the contract's) -----------------------------------------------------------
def parse_manifest(data) -> list[tuple[str, str]]:
    """manifest.json's bytes -> [(path, sha256)], or BundleError."""
    return [(e.path, e.sha256) for e in parse_entries(data)]


def parse_entries(data):
    """manifest.json's bytes -> [contract.ManifestEntry] (path, sha256, mode), or BundleError."""
    try:
        return contract.parse_manifest_entries(data)
    except ContractError as exc:
        raise BundleError(str(exc)) from None


def check_path(path):
    """A relative path that stays inside the bundle, or BundleError."""
    try:
        return contract.check_bundle_path(path)
    except ContractError as exc:
        raise BundleError(str(exc)) from None


class _Sink:
    """Where a streamed object goes: hashed as it arrives, refused past `limit` bytes (F24)."""

    def __init__(self, out, limit, what, which="the limit"):
        self.out, self.limit, self.what, self.which = out, limit, what, which
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, chunk):
        self.size += len(chunk)
        if self.size > self.limit:
            raise BundleError(f"{self.what} is larger than {self.limit} bytes, {self.which} (F24)")
        self.digest.update(chunk)
        if self.out is not None:
            self.out.write(chunk)


class _Bytes(_Sink):
    def __init__(self, limit, what):
        super().__init__(None, limit, what)
        self.chunks = []

    def write(self, chunk):
        super().write(chunk)
        self.chunks.append(chunk)

    def data(self):
        return b"".join(self.chunks)


# -- S3 readers -----------------------------------------------------------------------------------------------
class Reader(ABC):
    """What fetch needs of a reader: `copy(key, sink)` streams one object into a sink (sink.write(chunk)) or raises
    BundleError; `bucket` names where for messages. SignedReader and UnsignedReader are the two."""

    bucket = ""

    @abstractmethod
    def copy(self, key, sink):
        """Stream s3://bucket/key into sink; BundleError naming the cause."""

    def read(self, key, limit=MANIFEST_MAX):
        sink = _Bytes(limit, f"s3://{self.bucket}/{key}")
        self.copy(key, sink)
        return sink.data()


class SignedReader(Reader):
    """GetObject with the instance profile (S1), through a boto3 "s3" client made in the CLI entry."""

    def __init__(self, client, bucket):
        self.client, self.bucket = client, bucket

    def copy(self, key, sink):
        """Stream s3://bucket/key into sink (hashing it); BundleError naming the cause."""
        from botocore.exceptions import BotoCoreError, ClientError

        url = f"s3://{self.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                for chunk in body.iter_chunks(CHUNK):
                    sink.write(chunk)
            finally:
                body.close()  # also when the sink refused it half way: the rest is not read
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BundleError(f"missing object {url}") from None
            if code in ("AccessDenied", "403"):
                raise BundleError(self._denied(key, exc)) from None
            raise BundleError(f"GetObject {url} failed: {exc}") from None
        except BotoCoreError as exc:
            raise BundleError(f"GetObject {url} failed: {exc}") from None

    def _denied(self, key, exc):
        """AccessDenied: ask the prefix-scoped listing (iam/agent-policy.json grants s3:ListBucket for the bundle
        prefix, which a GetObject does not carry) whether the key exists, so a typo reads as missing (S3)."""
        from botocore.exceptions import BotoCoreError, ClientError

        url = f"s3://{self.bucket}/{key}"
        try:
            listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except (ClientError, BotoCoreError):
            return f"GetObject {url} failed: AccessDenied: {DENIED_CAUSES}"
        if not any(obj.get("Key") == key for obj in listing.get("Contents", [])):
            return f"missing object {url} (GetObject answered AccessDenied; the listing has no such key)"
        return f"GetObject {url} failed: AccessDenied although the object exists: no s3:GetObject on it, or " \
               f"SSE-KMS with a key the instance role may not use (kms:Decrypt, S4): {exc}"


# S3's DNS suffix per partition (S3): botocore's own partitions.json (botocore/data, 7 KB) when it is installed;
# else this copy of it (botocore 1.40, partitions.json "outputs.dnsSuffix"), first match wins.
_PARTITIONS_FALLBACK = (
    (r"^cn\-\w+\-\d+$", "amazonaws.com.cn"),
    (r"^eusc\-(de)\-\w+\-\d+$", "amazonaws.eu"),
    (r"^us\-iso\-\w+\-\d+$", "c2s.ic.gov"),
    (r"^us\-isob\-\w+\-\d+$", "sc2s.sgov.gov"),
    (r"^eu\-isoe\-\w+\-\d+$", "cloud.adc-e.uk"),
    (r"^us\-isof\-\w+\-\d+$", "csp.hci.ic.gov"),
    (r"^us\-gov\-\w+\-\d+$", "amazonaws.com"),
)
_partitions = None


def _load_partitions():
    """[(region regex, DNS suffix)] from botocore's partitions.json, found without importing botocore."""
    spec = importlib.util.find_spec("botocore")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            with open(os.path.join(folder, "data", "partitions.json")) as f:
                doc = json.load(f)
            return tuple((p["regionRegex"], p["outputs"]["dnsSuffix"]) for p in doc["partitions"]
                         if p.get("regionRegex") and p.get("outputs", {}).get("dnsSuffix"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return _PARTITIONS_FALLBACK


def dns_suffix(region):
    """The partition's DNS suffix of `region`: amazonaws.com, amazonaws.com.cn for cn-*, ... (S3)."""
    global _partitions
    if _partitions is None:
        _partitions = _load_partitions()
    for pattern, suffix in _partitions:
        if re.match(pattern, region):
            return suffix
    return "amazonaws.com"


def unsigned_base_url(bucket, region, environ):
    """Where an unsigned GET goes (S1). On AWS: https://BUCKET.s3.REGION.SUFFIX/ (virtual-hosted, through the VPC
    gateway endpoint), or https://s3.REGION.SUFFIX/BUCKET/ (path-style) for a bucket with dots, whose name breaks
    the wildcard certificate (S3, audit F3); SUFFIX is the partition's (amazonaws.com.cn for cn-*, dns_suffix).
    With AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL set (C1, e.g. the emulator): ENDPOINT/BUCKET/ (path-style, since
    a local endpoint has no per-bucket host names)."""
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return endpoint.rstrip("/") + "/" + bucket + "/"
    domain = dns_suffix(region)
    if "." in bucket:
        return f"https://s3.{region}.{domain}/{bucket}/"
    return f"https://{bucket}.s3.{region}.{domain}/"


_S3_CODE_RE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class UnsignedReader(Reader):
    """A plain HTTPS GET with no credentials, as the seed's curl through the VPC endpoint (S1)."""

    def __init__(self, session, base_url, bucket, timeout=30.0):
        self.session, self.base_url, self.bucket, self.timeout = session, base_url, bucket, timeout

    def copy(self, key, sink):
        import requests

        url = self.base_url + quote(key, safe="/~")
        try:
            with self.session.get(url, timeout=self.timeout, stream=True) as resp:
                if resp.status_code != 200:
                    raise BundleError(self._refused(key, url, resp.status_code, resp.raw.read(4096) or b""))
                for chunk in resp.iter_content(CHUNK):
                    sink.write(chunk)
        except requests.RequestException as exc:
            raise BundleError(f"GET {url} failed: {exc}") from None

    def _refused(self, key, url, status, body):
        match = _S3_CODE_RE.search(body)
        code = match.group(1).decode(errors="replace") if match else ""
        if status == 404:
            return f"missing object s3://{self.bucket}/{key} (GET {url} answered 404)"
        if b"KMS" in body or b"aws:kms" in body:
            # S4: an SSE-KMS object cannot be read by an unsigned request, whatever the bucket policy says.
            return (f"GET {url} answered {status} {code}: the object is SSE-KMS encrypted, which unsigned reads "
                    "cannot decrypt (S4); read it signed (s3_unsigned: false) or store the bundle with SSE-S3")
        if status == 403:
            return (f"GET {url} answered 403{' ' + code if code else ''}: the bucket policy does not allow unsigned "
                    "reads here (aws:sourceVpce, S1), or the object is missing (without s3:ListBucket S3 answers "
                    "403 for a missing key, S3), or it is SSE-KMS encrypted, which unsigned reads cannot decrypt (S4)")
        return f"GET {url} answered HTTP {status}{' ' + code if code else ''}"


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
    entries = parse_entries(raw)
    try:
        # F10: a content-addressed prefix holds exactly the manifest it is named by; then only who may write the
        # group's bluegreen:bootstrap tag (the deployer's IAM) decides what runs, not whoever may write the bucket.
        contract.check_bundle_address(prefix, raw)
    except ContractError as exc:
        raise BundleError(f"checksum mismatch for s3://{reader.bucket}/{prefix}{MANIFEST}: {exc}") from None
    files = [(e.path, e.sha256) for e in entries]
    release_id = hashlib.sha256(raw).hexdigest()[:16]
    final = os.path.join(releases_dir(workdir), release_id)
    if os.path.exists(os.path.join(final, COMPLETE_MARKER)) and _verified(final, entries):
        log.info("bundle %s already fetched and verified", release_id)
        return Bundle(release_id, final, tuple(files), reused=True)
    os.makedirs(releases_dir(workdir), exist_ok=True)
    _remove_stale_staging(workdir)
    staging = tempfile.mkdtemp(prefix=f".staging-{release_id}-", dir=releases_dir(workdir))
    total = 0
    try:
        os.chmod(staging, RELEASE_DIR_MODE)
        for entry in entries:
            target = os.path.join(staging, entry.path)
            if not os.path.realpath(target).startswith(os.path.realpath(staging) + os.sep):
                raise BundleError(f"path {entry.path!r} escapes the bundle")
            _makedirs(staging, os.path.dirname(entry.path))
            what = f"s3://{reader.bucket}/{prefix}{entry.path}"
            with open(target, "wb") as out:
                left = BUNDLE_MAX - total
                sink = _Sink(out, min(BUNDLE_FILE_MAX, left), what, "the limit" if BUNDLE_FILE_MAX <= left else
                             f"what is left of the bundle's {BUNDLE_MAX} after the files before it")
                reader.copy(prefix + entry.path, sink)
            total += sink.size
            actual = sink.digest.hexdigest()
            if actual != entry.sha256:
                raise BundleError(f"checksum mismatch for {what}: manifest says {entry.sha256}, object has {actual}")
            os.chmod(target, entry.mode)  # F24: the manifest's mode, else 0644, whatever the umask
        manifest_path = os.path.join(staging, MANIFEST)
        with open(manifest_path, "wb") as f:
            f.write(raw)
        os.chmod(manifest_path, contract.DEFAULT_FILE_MODE)
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
    log.info("bundle %s fetched: %d file(s), %d bytes verified", release_id, len(entries), total)
    return Bundle(release_id, final, tuple(files), reused=False)


def _makedirs(root, relative):
    """The bundle's folders, each 0755 whatever the umask (F24)."""
    here = root
    for part in [p for p in relative.split("/") if p]:
        here = os.path.join(here, part)
        if not os.path.isdir(here):
            os.mkdir(here)
            os.chmod(here, RELEASE_DIR_MODE)


def _remove_stale_staging(workdir):
    # The caller holds the agent lock, so any staging folder left here is from a run that crashed.
    root = releases_dir(workdir)
    for entry in os.listdir(root):
        if entry.startswith(".staging-"):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _verified(folder, entries):
    """Every file there with its checksum (streamed) and its mode: a release made before modes existed, or
    changed on disk, is fetched again."""
    for entry in entries:
        path = os.path.join(folder, entry.path)
        try:
            if os.stat(path).st_mode & 0o7777 != entry.mode:
                return False
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    digest.update(chunk)
            if digest.hexdigest() != entry.sha256:
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
