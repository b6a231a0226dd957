"""EC2 GetConsoleOutput for the fleet's machines (localcloud/machines.py): the console each machine wrote, posted
by the fleet through the control API (POST /_localcloud/console), served as EC2 serves it.

EC2 keeps an instance's console output after the instance is terminated, for a while (the "aws ec2
get-console-output" of a failed launch is how an operator learns why it failed: audit F16), and gives the most
recent 64 KB, base64-encoded. moto answers a fixed text for any running instance and nothing useful after
termination; an instance the fleet posted a console for answers that console instead, running or terminated.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
import uuid
from typing import Any
from xml.sax.saxutils import escape

LIMIT = 64 * 1024  # EC2: "the most recent 64 KB of console output"


def store(state: Any, instance_id: str, text: str) -> None:
    data = text.encode("utf-8", "replace")[-LIMIT:]
    with state.lock:
        state.consoles[instance_id] = (data, time.time())


def answer(state: Any, body: bytes) -> tuple[str, list, list] | None:
    """The GetConsoleOutput response for a posted console, or None to let moto answer."""
    query = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    instance_id = query.get("InstanceId", [""])[0]
    with state.lock:
        found = state.consoles.get(instance_id)
    if found is None:
        return None
    data, at = found
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
           f"<requestId>{uuid.uuid4()}</requestId><instanceId>{escape(instance_id)}</instanceId>"
           f"<timestamp>{stamp}</timestamp><output>{base64.b64encode(data).decode()}</output>"
           "</GetConsoleOutputResponse>")
    return "200 OK", [("Content-Type", "text/xml")], [xml.encode()]
