"""EventBridge PutEvents' partial failures: what moto never answers (issue 12, deployment events).

AWS answers PutEvents with HTTP 200 whether or not its entries were put: each result entry carries an EventId
or an ErrorCode and ErrorMessage, and FailedEntryCount counts the failures. Retryable codes include
`ThrottlingException` and `InternalFailure` (EventBridge API reference, PutEventsResultEntry; the user guide,
"Sending events with PutEvents", "Handling failures with PutEvents": "You must detect unsuccessful entries").
moto 5.2.1 fails an entry only when it is malformed (no Source, DetailType or Detail; Detail not JSON), so a
client that ignores FailedEntryCount passes against it. The fault `put_events_failures=N` (state.Faults)
answers the next N PutEvents requests in front of moto with every entry failed as `ThrottlingException`: none
of them reaches the bus, and moto's state does not change. Nothing of moto is replaced or called.
"""

from __future__ import annotations

import json
from typing import Any

TARGET = "AWSEvents.PutEvents"  # the JSON protocol's X-Amz-Target of PutEvents
ERROR = {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}


def is_put_events(environ: dict[str, Any]) -> bool:
    return environ.get("HTTP_X_AMZ_TARGET") == TARGET


def failed_entries_response(body: bytes) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """200 with FailedEntryCount = the request's entries, each failed (an unreadable request: one)."""
    try:
        entries = len(json.loads(body or b"{}").get("Entries") or []) or 1
    except (ValueError, AttributeError):
        entries = 1
    out = json.dumps({"FailedEntryCount": entries, "Entries": [dict(ERROR) for _ in range(entries)]}).encode()
    return "200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(out)))], [out]
