"""The contract between the agent, the deployer and localcloud: one copy of every rule they must agree on.

The tag registry and its A12 budget, the version (Docker tag) rule, S3 URLs, the bundle manifest, atomic file
writes, what the agent publishes about itself (`bluegreen:running`, `bluegreen:workers`), the vocabulary of
operations, phases and events, and the JSON schema version. docs/contract.md is its prose.

The agent runs it on Amazon Linux 2023's system Python 3.9: standard library only, nothing imported at module
level that `bluegreen-agent --help` would not load anyway. Rules raise ContractError; each side turns it into
its own error (the agent's exit 5 or 6, the deployer's exit 2) and keeps the message.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass

DIST_NAME = "asg-bluegreen"
# The agent-only wheel an AMI gets (ami/build-agent-wheel.py): agent/ without deployer/ and localcloud/ (F2).
AGENT_DIST_NAME = "asg-bluegreen-agent"
# In every JSON document the tools print or write (`--output json`, status.json, the manifest). Bumped only
# when a field changes meaning or goes away; new fields keep it.
SCHEMA_VERSION = 1


class ContractError(ValueError):
    """A value breaks a rule of the contract; the message names the value and the rule."""


def __getattr__(name):
    # `__version__` is computed on first use: reading distribution metadata costs milliseconds at every boot.
    if name == "__version__":
        globals()["__version__"] = value = _own_version()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _own_version():
    from importlib import metadata

    for name in (DIST_NAME, AGENT_DIST_NAME):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    # a source checkout that was never installed
    import configparser

    parser = configparser.ConfigParser()
    parser.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg"))
    return parser.get("metadata", "version", fallback="0+unknown")


# -- the tag registry (A12) ---------------------------------------------------------------------------------
TAGS_PER_RESOURCE_MAX = 50
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 256
RESERVED_TAG_PREFIX = "aws:"  # reserved in any case (AWS:, Aws:, ...)

OWNER_TEMPLATE, OWNER_DEPLOYER, OWNER_AGENT = "template", "deployer", "agent"
ON_GROUP, ON_INSTANCE = "group", "instance"


@dataclass(frozen=True)
class TagSpec:
    """One `bluegreen:*` key. The owner decides its value; nobody else writes it (X3: a template that declares a
    deployer-owned tag resets it on every apply)."""

    key: str
    where: str  # ON_GROUP or ON_INSTANCE
    owner: str  # OWNER_TEMPLATE, OWNER_DEPLOYER or OWNER_AGENT
    writer: str  # who writes it, in words
    propagate: bool  # PropagateAtLaunch of the group tag (instance tags: False)
    format: str  # the value, in words


TAG_SERVICE = "bluegreen:service"
TAG_COLOR = "bluegreen:color"
TAG_VERSION = "bluegreen:version"
TAG_IMAGE = "bluegreen:image"
# The image digest `deploy` resolved for bluegreen:version (audit F8): the agent pulls IMAGE@DIGEST, so every
# instance of a version runs the same bytes however long after the deploy it launches.
TAG_DIGEST = "bluegreen:digest"
TAG_BOOTSTRAP = "bluegreen:bootstrap"
TAG_HEALTH_URL = "bluegreen:health-url"
TAG_LIFECYCLE_HOOK = "bluegreen:lifecycle-hook"
TAG_STATE = "bluegreen:state"
TAG_ALARMS = "bluegreen:alarms"
TAG_EVENT_BUS = "bluegreen:event-bus"
TAG_SNS_TOPIC = "bluegreen:sns-topic"
TAG_OPERATION = "bluegreen:operation"
TAG_SAVED_SIZES = "bluegreen:saved-sizes"
TAG_SAVED_SUSPENDED = "bluegreen:saved-suspended"
# Put on an instance just before it is detached, so that a finalize killed between detach and terminate
# still finds it: a detached instance loses its group (A3).
TAG_RETIRED_FROM = "bluegreen:retired-from"
TAG_RUNNING = "bluegreen:running"
TAG_WORKERS = "bluegreen:workers"

_OPERATOR = "the template (or the operator who creates the pair)"
TAGS = (
    # service and color propagate: the deployer's IAM policy tags and terminates only instances that carry
    # bluegreen:service. version propagates as information only; the agent reads the group's tags (A12).
    TagSpec(TAG_SERVICE, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, True, "the service name"),
    TagSpec(TAG_COLOR, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, True, "blue | green"),
    TagSpec(TAG_VERSION, ON_GROUP, OWNER_DEPLOYER, "`deploy` and `canary` (the operator once, at creation)", True,
            "a Docker tag (the version rule)"),
    TagSpec(TAG_IMAGE, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False, "an image repository, no tag or digest"),
    TagSpec(TAG_DIGEST, ON_GROUP, OWNER_DEPLOYER, "`deploy` and `canary`, with bluegreen:version", False,
            "sha256:<64 hex>, the digest of IMAGE:VERSION when it was deployed"),
    TagSpec(TAG_BOOTSTRAP, ON_GROUP, OWNER_DEPLOYER, "`deploy` and `canary`, with bluegreen:version (the operator "
            "once, at creation)", False, "s3://bucket/base/<sha256>/, a content-addressed bundle (or an old-style "
            "s3://bucket/prefix/)"),
    TagSpec(TAG_HEALTH_URL, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False,
            "an http(s) URL; may name compose_env variables as ${NAME}"),
    TagSpec(TAG_LIFECYCLE_HOOK, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False, "the launch hook's name"),
    TagSpec(TAG_STATE, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False,
            "s3://bucket/prefix/ of the deployer's state store (the S3 URL rules)"),
    TagSpec(TAG_ALARMS, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False, "CloudWatch alarm names, comma-separated"),
    TagSpec(TAG_EVENT_BUS, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False, "an EventBridge bus name or ARN"),
    TagSpec(TAG_SNS_TOPIC, ON_GROUP, OWNER_TEMPLATE, _OPERATOR, False, "an SNS topic ARN"),
    TagSpec(TAG_OPERATION, ON_GROUP, OWNER_DEPLOYER, "`deploy`, `canary`, `rollback`, `finalize` (the lock), "
            "on both groups", False,
            "action=..;phase=..;version=..;live=..;started=..;holder=.."),
    TagSpec(TAG_SAVED_SIZES, ON_GROUP, OWNER_DEPLOYER, "`deploy`, on the live group", False, "min/desired/max"),
    TagSpec(TAG_SAVED_SUSPENDED, ON_GROUP, OWNER_DEPLOYER, "`deploy`, on the live group", False,
            "process names, comma-separated, or none"),
    TagSpec(TAG_RETIRED_FROM, ON_INSTANCE, OWNER_DEPLOYER, "`finalize`, before DetachInstances", False,
            "the name of the group it leaves"),
    TagSpec(TAG_RUNNING, ON_INSTANCE, OWNER_AGENT, "the agent, on its own instance", False,
            "version=..;digest=..;agent=..;result=.. (encode_running)"),
    TagSpec(TAG_WORKERS, ON_INSTANCE, OWNER_AGENT, "the agent, on its own instance", False, "running | stopped"),
)
REGISTRY = {spec.key: spec for spec in TAGS}
GROUP_TAG_KEYS = tuple(spec.key for spec in TAGS if spec.where == ON_GROUP)
# What a group leaves for the operator's own tags once every bluegreen group tag is set.
OPERATOR_TAGS_LEFT = TAGS_PER_RESOURCE_MAX - len(GROUP_TAG_KEYS)


def check_tag(key, value):
    """One tag against A12: key 1-128 characters, value at most 256, no `aws:` prefix."""
    if not key or len(key) > TAG_KEY_MAX:
        raise ContractError(f"tag key {key[:40]!r}... must be 1-{TAG_KEY_MAX} characters (A12)")
    if key.lower().startswith(RESERVED_TAG_PREFIX):
        raise ContractError(f"tag key {key!r}: the aws: prefix is reserved (A12)")
    if len(value) > TAG_VALUE_MAX:
        raise ContractError(f"tag {key} is {len(value)} characters; a tag value holds {TAG_VALUE_MAX} (A12)")


def check_tags(tags):
    """A resource's whole tag set ({key: value}) against A12: at most 50 tags (`aws:` ones do not count)."""
    for key, value in tags.items():
        if not key.lower().startswith(RESERVED_TAG_PREFIX):
            check_tag(key, value)
    counted = [k for k in tags if not k.lower().startswith(RESERVED_TAG_PREFIX)]
    if len(counted) > TAGS_PER_RESOURCE_MAX:
        raise ContractError(f"{len(counted)} tags; a group or instance holds {TAGS_PER_RESOURCE_MAX} (A12)")


# -- the version: a Docker tag, pulled as <image>:<version> -----------------------------------------------
VERSION_PATTERN = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# \A...\Z, not ^...$: `$` also matches before a trailing newline.
VERSION_RE = re.compile(rf"\A{VERSION_PATTERN}\Z")


def is_version(value):
    return isinstance(value, str) and VERSION_RE.match(value) is not None


def check_version(version):
    if not is_version(version):
        raise ContractError(f"version {version!r} is not a valid Docker tag ({VERSION_PATTERN})")
    return version


# -- S3 URLs: s3://bucket/prefix/ -----------------------------------------------------------------------------
S3_SCHEME = "s3://"
_BUCKET_RE = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_IP_RE = re.compile(r"\A\d{1,3}(\.\d{1,3}){3}\Z")
# Reserved by S3 for access points, Object Lambda, Multi-Region Access Points, directory and table buckets.
_BUCKET_PREFIXES_RESERVED = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES_RESERVED = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(bucket):
    """Why `bucket` is not a general purpose bucket name S3 would create, or None."""
    if not _BUCKET_RE.match(bucket):
        return "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
    if ".." in bucket:
        return "two adjacent dots"
    if _IP_RE.match(bucket):
        return "formatted as an IP address"
    for reserved in _BUCKET_PREFIXES_RESERVED:
        if bucket.startswith(reserved):
            return f"the prefix {reserved} is reserved"
    for reserved in _BUCKET_SUFFIXES_RESERVED:
        if bucket.endswith(reserved):
            return f"the suffix {reserved} is reserved"
    return None


def parse_s3_url(url):
    """'s3://bucket/prefix' -> ('bucket', 'prefix/'); the prefix is '' (the bucket's top) or ends with '/'.

    The same rules for push-bootstrap, the agent and `bluegreen:state` (docs/contract.md, "S3 URLs"): the
    text is taken literally (no percent-decoding), surrounding whitespace ignored; the bucket follows S3's
    naming rules (dots allowed: readers use path-style URLs for them, S3); the prefix has no empty, '.' or
    '..' segment, since HTTP clients collapse those and a reader would fetch other keys than were written; no
    control characters; and the whole URL fits in a tag value (A12).
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text.startswith(S3_SCHEME):
        raise ContractError(f"{url!r} is not an s3://bucket/prefix/ URL")
    bucket, _, prefix = text[len(S3_SCHEME):].partition("/")
    problem = bucket_problem(bucket)
    if problem:
        raise ContractError(f"{url!r}: {bucket!r} is not a valid S3 bucket name ({problem})")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    segments = prefix.split("/")[:-1]
    if "" in segments:
        raise ContractError(f"{url!r}: the prefix has an empty path segment ('//')")
    if any(segment in (".", "..") for segment in segments):
        raise ContractError(f"{url!r}: the prefix must not contain '.' or '..' segments")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise ContractError(f"{url!r}: the prefix contains a control character")
    canonical = format_s3_url(bucket, prefix)
    if len(canonical) > TAG_VALUE_MAX:
        raise ContractError(f"{url!r} is {len(canonical)} characters; a tag value holds {TAG_VALUE_MAX} (A12)")
    return bucket, prefix


def format_s3_url(bucket, prefix):
    return f"{S3_SCHEME}{bucket}/{prefix}"


# -- the bundle manifest (S2: our own SHA-256, never the ETag) --------------------------------------------
MANIFEST = "manifest.json"
COMPOSE_FILE = "docker-compose.yml"
# The agent's marker of a complete release folder: no bundle file may take its name, nor the manifest's.
COMPLETE_MARKER = ".complete"
RESERVED_BUNDLE_PATHS = (MANIFEST, COMPLETE_MARKER)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def check_bundle_path(path):
    """A relative path that stays inside the bundle, or ContractError."""
    parts = path.split("/") if isinstance(path, str) else [""]
    if not path or path.startswith("/") or "\\" in path or "\0" in path \
            or any(p in ("", ".", "..") for p in parts):
        raise ContractError(f"{MANIFEST}: path {path!r} escapes the bundle or is not a plain relative path")
    return path


# Audit F24: a file's mode is the manifest's optional "mode" (octal text, "0755"); without one, 0644. Read,
# write and execute for the owner, read and execute for the others, nothing more: no setuid/setgid/sticky bit,
# nothing writable by group or others (the release folder is 0755, its files are the stack's config).
DEFAULT_FILE_MODE = 0o644
MODE_BITS_ALLOWED = 0o755
# Audit F24: what one file and one whole bundle may hold, checked by push-bootstrap before any upload and by the
# agent while it streams each object (it stops reading past them). A bundle is a compose stack's config, not its
# images; these bound the disk and the time one boot can spend on it.
BUNDLE_FILE_MAX = 64 * 1024 * 1024
BUNDLE_MAX = 256 * 1024 * 1024
MANIFEST_MAX = 1024 * 1024


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    mode: int = DEFAULT_FILE_MODE


def parse_mode(value, path="?"):
    """A manifest's "mode" ("0755", "644") -> int, or ContractError."""
    text = value if isinstance(value, str) else ""
    if not re.match(r"\A0?[0-7]{3}\Z", text):
        raise ContractError(f"{MANIFEST}: {path} has mode {value!r}; a mode is octal text such as \"0755\"")
    mode = int(text, 8)
    if mode & ~MODE_BITS_ALLOWED:
        raise ContractError(f"{MANIFEST}: {path} has mode {text}; at most 0755 (nothing writable by group or "
                            "others, no setuid, setgid or sticky bit)")
    return mode


def format_mode(mode):
    return f"0{mode:03o}"


def _checked_entries(entries):
    """[ManifestEntry] checked against every manifest rule; the one place those rules live. Entries may also be
    (path, sha256) or (path, sha256, mode) tuples."""
    files, seen = [], set()
    for entry in entries:
        path, digest, *rest = entry
        mode = rest[0] if rest else DEFAULT_FILE_MODE
        check_bundle_path(path)
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ContractError(f"{MANIFEST}: {path} has no valid SHA-256 ({digest!r})")
        if path in seen or path in RESERVED_BUNDLE_PATHS:
            raise ContractError(f"{MANIFEST}: {path} is listed twice or is a reserved name")
        if isinstance(mode, str):
            mode = parse_mode(mode, path)
        elif mode & ~MODE_BITS_ALLOWED:
            raise ContractError(f"{MANIFEST}: {path} has mode {format_mode(mode)}; at most 0755")
        seen.add(path)
        files.append(ManifestEntry(path, digest, mode))
    if COMPOSE_FILE not in seen:
        raise ContractError(f"{MANIFEST} does not list {COMPOSE_FILE}: a bundle needs one at its top")
    folders = {"/".join(path.split("/")[:n]) for path in seen for n in range(1, path.count("/") + 1)}
    clash = sorted(seen & (folders | set(RESERVED_BUNDLE_PATHS)))
    if clash or any(f in RESERVED_BUNDLE_PATHS for f in folders):
        raise ContractError(f"{MANIFEST}: {(clash or sorted(folders))[0]} is listed both as a file and as a folder")
    return files


def build_manifest(entries):
    """[(path, sha256[, mode])] -> the manifest document, sorted by path (the same bundle gives the same bytes, so
    the agent's release id, the manifest's hash, does not change). "mode" is written only when it is not 0644,
    so a bundle without executables has the same manifest as before modes existed."""
    files = _checked_entries(sorted(entries))
    out = []
    for e in files:
        item = {"path": e.path, "sha256": e.sha256}
        if e.mode != DEFAULT_FILE_MODE:
            item["mode"] = format_mode(e.mode)
        out.append(item)
    return {"schema_version": SCHEMA_VERSION, "files": out}


def manifest_bytes(doc):
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def parse_manifest_entries(data):
    """manifest.json's bytes -> [ManifestEntry] in the listed order; unknown top-level keys are ignored, and so
    are unknown keys of a file entry (a newer writer may add some); "mode" is optional (absent: 0644)."""
    if len(data) > MANIFEST_MAX:
        raise ContractError(f"{MANIFEST} is {len(data)} bytes; at most {MANIFEST_MAX}")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ContractError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ContractError(f'{MANIFEST} must be {{"files": [{{"path": ..., "sha256": ...}}, ...]}}')
    schema = doc.get("schema_version", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ContractError(f"{MANIFEST} has schema_version {schema!r}; this agent reads {SCHEMA_VERSION} "
                            "(upgrade the agent)")
    entries = []
    for entry in doc["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) \
                or not isinstance(entry.get("sha256"), str):
            raise ContractError(f"{MANIFEST}: every file needs a string path and sha256, got {entry!r}")
        mode = parse_mode(entry["mode"], entry["path"]) if "mode" in entry else DEFAULT_FILE_MODE
        entries.append((entry["path"], entry["sha256"], mode))
    return _checked_entries(entries)


def parse_manifest(data):
    """manifest.json's bytes -> [(path, sha256)] in the listed order (parse_manifest_entries adds the modes)."""
    return [(e.path, e.sha256) for e in parse_manifest_entries(data)]


# -- content-addressed bundles (issue 11, "the bundle belongs to the version"; audit F9, F10) ---------------
# `bluegreen push-bootstrap DIR s3://bucket/BASE/` writes the bundle under BASE/<sha256 of manifest.json>/ (the
# manifest last) and then BASE/LATEST, which holds that bundle's s3:// URL. A prefix named by its manifest's
# hash cannot change under a fleet: the agent checks that the manifest it read hashes to that name (F10).
LATEST = "LATEST"
_SHA256_HEX_RE = re.compile(r"\A[0-9a-f]{64}\Z")


def bundle_address(prefix):
    """The manifest hash a content-addressed prefix ('BASE/<64 hex>/') is named by, or None for an old-style
    (mutable) prefix."""
    last = prefix.rstrip("/").rpartition("/")[2]
    return last if _SHA256_HEX_RE.match(last) else None


def bundle_base(prefix):
    """Where a bundle's pushes go: the prefix above a content-addressed one, else the (old-style) prefix itself."""
    if bundle_address(prefix) is None:
        return prefix
    head = prefix.rstrip("/").rpartition("/")[0]
    return head + "/" if head else ""


def bundle_url(bucket, base, manifest_data):
    """The s3:// URL of the content-addressed bundle whose manifest.json is `manifest_data`, under `base`;
    ContractError when it would not fit a tag value (A12)."""
    url = format_s3_url(bucket, base + sha256_hex(manifest_data) + "/")
    parse_s3_url(url)
    return url


def check_bundle_address(prefix, manifest_data):
    """F10: a content-addressed prefix must hold the manifest it is named by. ContractError otherwise; an
    old-style prefix is not checked (it has no name to check against)."""
    want = bundle_address(prefix)
    if want is not None and sha256_hex(manifest_data) != want:
        raise ContractError(f"{MANIFEST} under {prefix} hashes to {sha256_hex(manifest_data)}, not to the name of its "
                            "prefix: it was replaced after the push (a content-addressed bundle never changes)")


# -- atomic writes ----------------------------------------------------------------------------------------
def atomic_write(path, data, mode=0o644):
    """Write a temp file in the same folder, fsync it, set `mode`, rename it over `path`, fsync the folder.

    A reader sees the old file or the new one, never half; after a power cut, one of the two. The mode is
    explicit: mkstemp's 0600 would otherwise leak into the result.
    """
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself lives in the folder: without this, a power cut can bring back the old file.
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass
    finally:
        os.close(dir_fd)


# -- what the agent publishes about itself: bluegreen:running, bluegreen:workers ----------------------------
# The steps of a run, in order, and the others an error may name. A failed run publishes `failed:<step>`.
AGENT_STEPS = ("identity", "settings", "bundle", "plan", "image", "activate", "compose", "health", "lifecycle")
AGENT_ERROR_STEPS = AGENT_STEPS + ("agent", "config", "group", "lock")
RESULT_SUCCESS = "success"
RESULT_FAILED = "failed"
WORKERS_RUNNING = "running"
WORKERS_STOPPED = "stopped"
WORKERS_VALUES = (WORKERS_RUNNING, WORKERS_STOPPED)
AGENT_VERSION_MAX = 40
DIGEST_MIN_HEX = 12  # what `docker images` shows: enough to tell images apart
_DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{12,64}\Z")
_AGENT_VERSION_RE = re.compile(r"\A[A-Za-z0-9.+!_-]+\Z")


@dataclass(frozen=True)
class Running:
    """The value of `bluegreen:running`: the app version this instance serves (set once its health passed;
    None before any did), that image's digest (maybe shortened), the agent's own version and its last result."""

    version: str | None
    digest: str | None
    agent: str
    result: str


def check_result(result):
    step = result[len(RESULT_FAILED) + 1:] if result.startswith(RESULT_FAILED + ":") else None
    if result not in (RESULT_SUCCESS, RESULT_FAILED) and step not in AGENT_ERROR_STEPS:
        raise ContractError(f"result {result!r} is not success, failed or failed:<step>")
    return result


def encode_running(running):
    """Running -> 'version=2.0;digest=sha256:ab12..;agent=0.1.0;result=success', always <= 256 characters
    (A12). The app version is never cut (the deployer's gate compares it); the digest gives way first, down
    to 12 hex digits; the agent's version is cut to 40 characters."""
    if running.version is not None:
        check_version(running.version)
    if running.digest is not None and not _DIGEST_RE.match(running.digest):
        raise ContractError(f"digest {running.digest!r} is not sha256:<hex>")
    agent = running.agent[:AGENT_VERSION_MAX]
    if not _AGENT_VERSION_RE.match(agent):
        raise ContractError(f"agent version {running.agent!r} has characters a tag value should not carry")
    fields = [("version", running.version), ("digest", running.digest), ("agent", agent),
              ("result", check_result(running.result))]
    text = ";".join(f"{k}={v}" for k, v in fields if v is not None)
    over = len(text) - TAG_VALUE_MAX
    if over > 0 and running.digest is not None:
        short = running.digest[:max(len("sha256:") + DIGEST_MIN_HEX, len(running.digest) - over)]
        text = text.replace(f"digest={running.digest}", f"digest={short}")
    assert len(text) <= TAG_VALUE_MAX, text  # the caps above make this arithmetic, not luck
    return text


def decode_running(value):
    """The inverse of encode_running; unknown fields are ignored (a newer agent may add some)."""
    fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
    if "agent" not in fields or "result" not in fields:
        raise ContractError(f"{TAG_RUNNING} value {value!r} lacks agent= or result=")
    version = fields.get("version")
    if version is not None:
        check_version(version)
    return Running(version=version, digest=fields.get("digest"), agent=fields["agent"],
                   result=check_result(fields["result"]))


def same_digest(full, published):
    """Whether a published (maybe shortened) digest names the image with digest `full`."""
    return bool(full and published and _DIGEST_RE.match(published) and full.startswith(published))


def check_workers(value):
    if value not in WORKERS_VALUES:
        raise ContractError(f"{TAG_WORKERS} must be {' or '.join(WORKERS_VALUES)}, got {value!r}")
    return value


# -- one vocabulary: operations, their phases, and the events between them --------------------------------
ACTION_DEPLOY, ACTION_CANARY, ACTION_ROLLBACK, ACTION_FINALIZE = "deploy", "canary", "rollback", "finalize"
# `bluegreen init`: a new pair's first color up (issue 15); journaled as `launched` when it serves.
ACTION_INIT = "init"
ACTIONS = (ACTION_DEPLOY, ACTION_CANARY, ACTION_ROLLBACK, ACTION_FINALIZE, ACTION_INIT)

PHASE_LAUNCH = "launch"
PHASE_POLICIES = "policies"
PHASE_FLIP = "flip"
PHASE_FLIPPED = "flipped"
PHASE_SERVING = "serving"
PHASE_RESTORE = "restore"
PHASE_RETIRE = "retire"
PHASE_DRAIN = "drain"
PHASE_DETACH = "detach"
PHASE_CLEANUP = "cleanup"
# Rollback's first stage done (issue 10): the old fleet serves at the live capacity, the new one takes no new
# requests; recovery time ends here. The record stays in it until the second stage (settled) releases the lock.
PHASE_RESTORED = "restored"
# Named now, placed by a later issue: the bake after a flip.
PHASE_BAKE = "bake"
# The phases an operation record passes through today, in order (`bluegreen:operation`'s phase=).
PHASES = {
    ACTION_DEPLOY: (PHASE_LAUNCH, PHASE_POLICIES, PHASE_FLIP, PHASE_FLIPPED),
    ACTION_CANARY: (PHASE_LAUNCH, PHASE_SERVING),
    ACTION_ROLLBACK: (PHASE_RESTORE, PHASE_RETIRE, PHASE_RESTORED),
    ACTION_FINALIZE: (PHASE_DRAIN, PHASE_DETACH, PHASE_CLEANUP),
    ACTION_INIT: (PHASE_LAUNCH,),
}

# Transitions: what the journal records and the events announce (one EventBridge detail-type each).
EVENT_STARTED = "started"
EVENT_LAUNCHED = "launched"
EVENT_FLIPPED = "flipped"
EVENT_BAKED = "baked"
EVENT_RESTORED = "restored"  # the old fleet serves again: where recovery time ends
EVENT_SETTLED = "settled"  # sizes restored, new group empty, processes resumed, lock released
EVENT_ROLLED_BACK = "rolled-back"
EVENT_FINALIZED = "finalized"
EVENT_ABORTED = "aborted"
EVENTS = (EVENT_STARTED, EVENT_LAUNCHED, EVENT_FLIPPED, EVENT_BAKED, EVENT_RESTORED, EVENT_SETTLED,
          EVENT_ROLLED_BACK, EVENT_FINALIZED, EVENT_ABORTED)
