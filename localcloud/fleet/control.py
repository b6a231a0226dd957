"""The emulated AWS's control API (/_localcloud/, served by localcloud.aws): its event log and forced health.

Over HTTP, so the fleet can follow an emulation in another process as well as in its own.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from localcloud.fleet import FleetError


class ControlError(FleetError):
    pass


class ControlClient:
    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            raise ControlError(f"emulated AWS control {path} answered {exc.code}: "
                               f"{exc.read().decode(errors='replace')[:200]}") from None
        except (OSError, ValueError) as exc:
            raise ControlError(f"emulated AWS control {path} at {self.endpoint}: {exc}") from None

    def events(self, after: int = 0) -> tuple[list[dict], int]:
        """Events with seq > after, oldest first, and the last seq seen."""
        answer = self._call("GET", f"/_localcloud/events?after={int(after)}")
        return answer.get("events", []), int(answer.get("last", after))

    def set_target_health(self, instance_id: str, state: str | None, target_group_arn: str | None = None) -> None:
        self._call("POST", "/_localcloud/target-health",
                   {"instance_id": instance_id, "state": state, "target_group_arn": target_group_arn})

    def post_console(self, instance_id: str, output: str) -> None:
        """A machine's console, for the emulated EC2's GetConsoleOutput."""
        self._call("POST", "/_localcloud/console", {"instance_id": instance_id, "output": output})
