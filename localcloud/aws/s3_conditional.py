"""S3 conditional writes (aws-rules.md X2): what moto already does, and the 409 fault the layer adds.

moto 5.2.1 evaluates PutObject's `If-None-Match: *` and `If-Match: <ETag>` itself, as AWS does (checked by
tests/localcloud/test_s3_conditional.py, nothing of moto is replaced for it):
- `If-None-Match: *` on a key that has a current object: 412 PreconditionFailed; on an absent key, or one
  whose current version is a delete marker, the write happens;
- `If-Match` with an ETag other than the current object's: 412 PreconditionFailed; with the current one:
  200 and the ETag of what was written (quoted or not, as AWS accepts both);
- `If-Match` on a key with no current object (never written, deleted, or a delete marker on top): 404
  NoSuchKey, the write does not happen. That is what AWS documents: the S3 User Guide, "How to prevent object
  overwrites with conditional writes", section "Conditional write behavior", says an If-Match write fails with
  404 Not Found when there is no current object version of that name or it is a delete marker (quoted in
  ministackorg/ministack PR #680), and the AWS CLI against S3 answers `NoSuchKey` (minio/minio issue #21526).
  The PutObject API reference names only 412 and 409 for If-Match; a client must treat 404 as "not written"
  as it treats 412, and the deployer's store does. The layer keeps moto's answer: it is the documented one
  and it never lets the write happen.
- Concurrent conditional PUTs are resolved one at a time: server.py runs every request to moto under the one
  request lock, so of N simultaneous `If-None-Match: *` creates exactly one gets 200 and the others 412.

What moto never answers is 409 ConditionalRequestConflict, S3's answer while a conflicting write to the key
is in flight ("re-read the ETag, then retry", X2). The fault `conditional_conflicts=N` (state.Faults) answers
it to the next N conditional PutObject requests, in front of moto, so the write does not happen and moto's
state does not change.
"""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

CONFLICT_MESSAGE = ("A conflicting operation occurred. If using PutObject you can retry the request. If using "
                    "multipart upload you should initiate another CreateMultipartUpload request and re-upload "
                    "each part.")
# PutObject carries no subresource; newer SDKs may add `x-id=PutObject` to the query.
_PUT_OBJECT_QUERY = {"x-id"}


def is_conditional_put_object(environ: dict[str, Any]) -> bool:
    """A PutObject request (not CopyObject, UploadPart or a subresource PUT) with If-Match or If-None-Match (X2)."""
    if environ.get("REQUEST_METHOD") != "PUT":
        return False
    if not (environ.get("HTTP_IF_MATCH") or environ.get("HTTP_IF_NONE_MATCH")):
        return False
    if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
        return False  # CopyObject: also conditional in AWS, not given this fault (docs/localcloud.md, X2)
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return set(query) <= _PUT_OBJECT_QUERY and query.get("x-id", ["PutObject"]) == ["PutObject"]


def conflict_response(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """409 ConditionalRequestConflict in S3's error format (a bare <Error>, no ErrorResponse wrapper), X2.

    The request body is read first: the connection is kept alive, and a body left unread would be taken for
    the next request on it.
    """
    _drain(environ)
    resource = environ.get("PATH_INFO", "")
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>ConditionalRequestConflict</Code><Message>{CONFLICT_MESSAGE}</Message>"
            f"<Resource>{_escape(resource)}</Resource><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
            "</Error>").encode()
    return "409 Conflict", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], [body]


def _drain(environ: dict[str, Any]) -> None:
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length = environ.get("CONTENT_LENGTH")
    if length:
        stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        stream.read()  # chunked: the server ends the stream at the last chunk


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
