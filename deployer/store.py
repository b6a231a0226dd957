"""The deployer's state store: one service's lock, operation state and journal in S3, with compare-and-set.

Auto Scaling tags have no compare-and-set (X2): two commands can both write the tag record. S3 has it:
PutObject with `If-None-Match: *` creates only if absent, with `If-Match: <ETag>` replaces only the version
read; anything else answers 412 PreconditionFailed, and 409 ConditionalRequestConflict while a conflicting
write is in flight. So the lock and the state live in one object, `lock.json`, under the service's state
prefix, and every change to it is conditional:

- Taking the lock writes it If-None-Match (absent) or If-Match the version observed (released, or a holder
  whose lease expired / that is known dead / that a rollback or --force-unlock takes over).
- Every later write (a phase, a renewal, the release) is If-Match the version this process wrote last. A 412
  means someone else wrote since: unless the object holds this process's nonce and sequence number (our own
  write landed and only its response was lost), this process was displaced and stops.
- The lease: a holder's writes renew it; others judge it by S3's own clock (the object's Last-Modified plus the
  lease against the response's Date), never the local one, so pipelines with skewed clocks agree. The holder
  itself counts conservatively from when it SENT its last successful write.
- The journal: one object per operation, written when it ends, keyed so that a listing is newest first.

Nothing here decides what to do; the runner calls it, and the planners see its state in the Snapshot.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from botocore.exceptions import BotoCoreError, ClientError

from agent import contract

from .aws import translate
from .errors import ConflictError, UsageError

log = logging.getLogger(__name__)

LOCK = "lock.json"
JOURNAL = "journal/"
# How long a holder's lock stays its own without a renewal (S3 time). A live holder renews it on every
# mutating step and during every wait, well before it runs out.
LEASE_S = 180.0
# The longest one AWS call may take, botocore's retries included (cli.make_clients bounds them: 4 attempts of
# at most 5 s connect + 10 s read, and the standard mode's backoff, about 7 s, with room for throttling's
# retry-after). A holder confirms its lock right before each call, so a rollback that takes over a holder that
# may still run settles nothing until this long after it took the lock.
MAX_CALL_S = 90.0
# A lease shorter than two calls would lapse under a holder that is only slow.
LEASE_MIN_S = 2 * MAX_CALL_S
# Journal keys sort newest first: this minus the end time in milliseconds, zero-padded.
_JOURNAL_EPOCH_MS = 10 ** 13


def journal_key(prefix, ended, op_id):
    millis = int(ended.timestamp() * 1000)
    return f"{prefix}{JOURNAL}{_JOURNAL_EPOCH_MS - millis:013d}-{op_id}.json"


@dataclass(frozen=True)
class Stored:
    """lock.json as read: the document, its ETag, and whether its lease was live by S3's clock when read."""

    doc: dict
    etag: str
    lease_live: bool

    @property
    def operation(self):
        return self.doc.get("operation")

    @property
    def holder(self):
        return self.doc.get("holder", "")


@dataclass
class Lease:
    """What this process knows of its own hold on the lock."""

    nonce: str
    etag: str | None = None  # the version this process wrote last
    seq: int = 0
    sent_at: float | None = None  # local monotonic time the last successful write was sent
    doc: dict = field(default_factory=dict)


class StateStore:
    """lock.json and the journal of one service, at s3://bucket/prefix (prefix ends with "/")."""

    def __init__(self, s3, bucket, prefix, service, me, clock, lease_s=LEASE_S):
        self.s3, self.bucket, self.prefix, self.service = s3, bucket, prefix, service
        self.me, self.clock, self.lease_s = me, clock, lease_s
        self.lease = Lease(nonce=uuid.uuid4().hex)

    @property
    def url(self):
        return contract.format_s3_url(self.bucket, self.prefix)

    @property
    def key(self):
        return self.prefix + LOCK

    # -- reading --------------------------------------------------------------------------------------

    def read(self):
        """lock.json now, or None when it was never written (or was deleted)."""
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            if code in ("AccessDenied", "403") and self._absent():
                # S3: without s3:ListBucket a missing key answers 403, not 404. The policy grants ListBucket for
                # the state prefix only, which a GetObject does not carry: ask the listing, which it allows.
                return None
            raise self._error(exc, "GetObject") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "GetObject") from exc
        body = resp["Body"].read()
        try:
            doc = json.loads(body)
        except ValueError:
            raise UsageError(f"the state store {self.url}{LOCK} is not JSON; move it aside after checking both "
                             "groups") from None
        if doc.get("schema_version") != contract.SCHEMA_VERSION:
            raise UsageError(f"the state store {self.url}{LOCK} has schema_version {doc.get('schema_version')!r}; "
                             f"this bluegreen reads {contract.SCHEMA_VERSION}: upgrade it")
        return Stored(doc, resp["ETag"], doc.get("operation") is not None and self._lease_live(resp, doc))

    def _absent(self):
        listing = self._call("ListObjectsV2", self.s3.list_objects_v2, Bucket=self.bucket, Prefix=self.key,
                             MaxKeys=1)
        return not any(obj["Key"] == self.key for obj in listing.get("Contents", []))

    def _lease_live(self, resp, doc):
        """By S3's clock: the object's Last-Modified plus the holder's lease, against the response's Date (X2,
        "Time" in the issue). Last-Modified has one-second granularity: count one more second."""
        if float(doc.get("lease_s", self.lease_s)) <= 0:
            return False  # parked: the operation waits for its next command, nobody holds it
        modified = resp.get("LastModified")
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if modified is None or not date:
            return True  # cannot tell: conservative, the holder is taken to be alive
        now = parsedate_to_datetime(date)
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return (now - modified).total_seconds() < float(doc.get("lease_s", self.lease_s)) + 1.0

    # -- writing --------------------------------------------------------------------------------------

    def acquire(self, base, operation, saved, phases):
        """Take the lock: the first write of this process, conditional on `base` (the Stored observed, or None
        when there was no object). Raises ConflictError when another writer got there first."""
        self.lease.etag = None
        self.lease.seq = 0
        doc = self._doc(operation, saved, phases)
        self._put(doc, if_match=base.etag if base is not None else None)

    def write(self, operation, saved=None, phases=None, lease_s=None):
        """A phase or a renewal: If-Match the version this process wrote last."""
        doc = self._doc(operation, saved if saved is not None else self.lease.doc.get("saved"),
                        phases if phases is not None else self.lease.doc.get("phases", []), lease_s)
        self._put(doc, if_match=self.lease.etag)

    def park(self):
        """The command ends with its operation still open (a deploy that flipped, a canary that serves): keep
        the record, give up the lease, so that the next command takes it over as a handoff, not as a takeover
        of a process that may still run."""
        self.write(self.lease.doc.get("operation"), lease_s=0)

    def renew(self):
        self.write(self.lease.doc.get("operation"))

    def release(self, entry):
        """Journal the operation, then write the lock released (no operation). A plain DeleteObject has no
        condition to hold on to; a released lock keeps the compare-and-set chain unbroken."""
        key = journal_key(self.prefix, datetime.now(timezone.utc), entry["id"])
        self._call("PutObject", self.s3.put_object, Bucket=self.bucket, Key=key,
                   Body=json.dumps(entry, sort_keys=True).encode(), ContentType="application/json")
        self.write(None, saved={}, phases=[])
        return key

    def needs_renewal(self, margin=MAX_CALL_S):
        """True when less than `margin` seconds of this process's own (conservative) view of its lease is left."""
        sent = self.lease.sent_at
        return sent is None or self.clock() + margin >= sent + self.lease_s

    def _doc(self, operation, saved, phases, lease_s=None):
        self.lease.seq += 1
        return {"schema_version": contract.SCHEMA_VERSION, "service": self.service, "holder": self.me,
                "nonce": self.lease.nonce, "seq": self.lease.seq,
                "lease_s": self.lease_s if lease_s is None else lease_s,
                "operation": operation, "saved": saved or {}, "phases": phases or []}

    def _put(self, doc, if_match):
        body = json.dumps(doc, sort_keys=True).encode()
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        sent = self.clock()
        for attempt in range(3):
            try:
                resp = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                          ContentType="application/json", **condition)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "ConditionalRequestConflict" or status == 409:
                    # X2: a conflicting write was in flight. Read again: ours may have landed after all.
                    if self._landed(doc):
                        return self._landed_at(sent)
                    log.info("state store: conditional write conflict (409), trying again (%d)", attempt + 1)
                    time.sleep(random.uniform(0.05, 0.2) * 2 ** attempt)  # full jitter, as botocore backs off
                    continue
                if code == "NoSuchKey" or status == 404:
                    # If-Match on a key that is gone: lock.json was deleted while we held it.
                    raise ConflictError(f"the lock of {self.service} in {self.url} was deleted while this process "
                                        "held it; stopping here without further changes: rerun the command to "
                                        "go on from the groups' tags") from exc
                if code == "PreconditionFailed" or status == 412:
                    # A lost response is not a lost lock: our write may be the one that landed.
                    if self._landed(doc):
                        return self._landed_at(sent)
                    raise self._displaced() from exc
                raise self._error(exc, "PutObject") from exc
            except BotoCoreError as exc:
                raise self._error(exc, "PutObject") from exc
            self.lease.etag, self.lease.sent_at, self.lease.doc = resp["ETag"], sent, doc
            return None
        raise ConflictError(f"the lock of {self.service} in {self.url}: conditional writes kept conflicting (409 "
                            "ConditionalRequestConflict, X2); nothing was changed by this write: rerun the command")

    def _landed(self, doc):
        current = self.read()
        if current is None:
            return False
        mine = current.doc.get("nonce") == doc["nonce"] and current.doc.get("seq") == doc["seq"]
        if mine:
            self.lease.etag, self.lease.doc = current.etag, current.doc
        return mine

    def _landed_at(self, sent):
        self.lease.sent_at = sent

    def _displaced(self):
        current = self.read()
        who = "another command"
        if current is not None and current.operation:
            op = current.operation
            who = f"{op.get('action')} {op.get('version', '')} by {current.holder}".replace("  ", " ")
        elif current is not None:
            who = f"{current.holder} (which has since released it)"
        return ConflictError(f"the lock of {self.service} in {self.url} was taken by {who}; stopping here "
                             "without further changes")

    # -- the journal ----------------------------------------------------------------------------------

    def history(self, limit):
        """The newest `limit` journal entries, newest first."""
        resp = self._call("ListObjectsV2", self.s3.list_objects_v2, Bucket=self.bucket,
                          Prefix=self.prefix + JOURNAL, MaxKeys=limit)
        entries = []
        for obj in resp.get("Contents", [])[:limit]:
            body = self._call("GetObject", self.s3.get_object, Bucket=self.bucket, Key=obj["Key"])["Body"].read()
            entry = json.loads(body)
            entry["journal_key"] = obj["Key"]
            entries.append(entry)
        return entries

    # -- errors ---------------------------------------------------------------------------------------

    def _call(self, op, fn, **params):
        try:
            return fn(**params)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, op) from exc

    def _error(self, exc, op):
        err = translate(exc, f"state store {self.url}: {op}")
        return err


# -- where the store is --------------------------------------------------------------------------------------

NO_STORE_WARNING = ("no state store for {service}: the lock is the groups' {tag} tags, which have no compare-and-set "
                    "(X2): two commands started at the same instant can both proceed for a step. Set the groups' "
                    "bluegreen:state tag (s3://bucket/prefix/), or --state / BLUEGREEN_STATE")


def locate(service, groups, flag=None, environ=None):
    """The state store's (bucket, prefix of this service's folder, where it was named), or None.

    Highest first: --state; BLUEGREEN_STATE; the groups' `bluegreen:state` tag (the template declares it, so an
    apply does not wipe the pointer, X3); a default beside the bootstrap bundle, `<bluegreen:bootstrap
    prefix>.bluegreen/`, or `<base>.bluegreen/` when the tag names a content-addressed bundle `<base><sha256>/`. Each service keeps its own folder below it, so one prefix can serve many services.
    """
    environ = environ or {}
    tagged = {g.tags.get(contract.TAG_STATE) for g in groups.values()} - {None, ""}
    for url, source in ((flag, "--state"), (environ.get("BLUEGREEN_STATE"), "BLUEGREEN_STATE")):
        if url:
            found = _folder(url, source, service)
            if tagged and {_folder(t, "tag", service)[:2] for t in tagged} != {found[:2]}:
                # Two stores would be two locks: a pipeline and a laptop could both hold "the" lock.
                raise UsageError(f"{source} names {url}, but the groups of {service} name their state store "
                                 f"{', '.join(sorted(tagged))} ({contract.TAG_STATE}): use that one, or change the tag")
            return found
    for key, make_default in ((contract.TAG_STATE, False), (contract.TAG_BOOTSTRAP, True)):
        values = {g.tags.get(key) for g in groups.values()} - {None, ""}
        if make_default:
            # Content-addressed bundles (issue 11): each group may run its own bundle, all under one base; the
            # store sits beside the base, so it does not move when a deploy sets a new bundle.
            values = {bundle_base_url(v, f"the groups' {key} tag") for v in values}
        if len(values) > 1:
            raise UsageError(f"the groups of {service} name different {key} ({', '.join(sorted(values))}); the "
                             f"state store must be one: give both the same {contract.TAG_STATE} tag")
        if values:
            url = values.pop()
            source = f"the groups' {key} tag"
            if make_default:
                bucket, prefix = _parse(url, source)
                url = contract.format_s3_url(bucket, prefix + ".bluegreen/")
                source = f"the default beside the bundle of the groups' {key} tag"
            return _folder(url, source, service)
    return None


def bundle_base_url(url, source):
    """s3://bucket/BASE/ of a bundle URL: BASE/<manifest sha256>/ -> BASE/; an old-style prefix is its own base."""
    bucket, prefix = _parse(url, source)
    return contract.format_s3_url(bucket, contract.bundle_base(prefix))


def _parse(url, source):
    try:
        return contract.parse_s3_url(url)
    except contract.ContractError as exc:
        raise UsageError(f"state store from {source}: {exc}") from None


def _folder(url, source, service):
    bucket, prefix = _parse(url, source)
    return bucket, f"{prefix}{service}/", source
