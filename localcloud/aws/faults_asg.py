"""Auto Scaling faults a retrying client must survive (aws-rules.md A11, deployer-audit finding 20).

Two faults, off by default, each counting down per Auto Scaling action and cleared by EmulatedAWS.reset()
(they live on state.faults, which reset replaces):

- `scaling_activity_in_progress={"UpdateAutoScalingGroup": N}`: the next N calls of that action answer HTTP 400
  `ScalingActivityInProgress` in front of moto, and change nothing. AWS lists this error for
  UpdateAutoScalingGroup, SetDesiredCapacity, DeleteAutoScalingGroup and others (A11); when exactly it answers
  it is undocumented, so the tests choose the calls. botocore's standard mode does not retry a 400.
- `lost_responses={"EnterStandby": N}`: the next N calls of that action are made (moto's state changes), then
  the response is lost: the client gets HTTP 500 InternalFailure, which botocore retries. The retry then meets
  the world the first attempt left (an instance already in Standby), as after a read timeout in AWS.

    configure(cloud, scaling_activity_in_progress={"UpdateAutoScalingGroup": 2})
    configure(cloud, lost_responses={"EnterStandby": 1})
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

ASG_NAMESPACE = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
MAX_COUNT = 100
IN_PROGRESS_MESSAGE = "Scaling activity {id} is in progress and blocks this action."


class AsgFaults:
    def __init__(self) -> None:
        self.in_progress: dict[str, int] = {}
        self.lost: dict[str, int] = {}

    @staticmethod
    def _take(counts: dict[str, int], action: str | None) -> bool:
        left = counts.get(action or "", 0)
        if left <= 0:
            return False
        counts[action] = left - 1
        return True


def _checked(name: str, counts: dict[str, Any] | None) -> dict[str, int]:
    counts = dict(counts or {})
    for action, n in counts.items():
        if not isinstance(action, str) or isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            raise ValueError(f"{name} maps Auto Scaling action names to counts 0-{MAX_COUNT}, got {action!r}: {n!r}")
    return counts


def faults_of(state: Any) -> AsgFaults:
    """This emulator's Auto Scaling faults (on state.faults, so reset() clears them)."""
    found = getattr(state.faults, "asg", None)
    if found is None:
        found = state.faults.asg = AsgFaults()
    return found


def configure(cloud: Any, scaling_activity_in_progress: dict[str, int] | None = None,
              lost_responses: dict[str, int] | None = None) -> None:
    """Replace both Auto Scaling fault settings of `cloud` (an EmulatedAWS)."""
    in_progress = _checked("scaling_activity_in_progress", scaling_activity_in_progress)
    lost = _checked("lost_responses", lost_responses)
    with cloud.state.lock:
        faults = faults_of(cloud.state)
        faults.in_progress, faults.lost = in_progress, lost


def _error(status: str, code: str, message: str) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    body = (f'<ErrorResponse xmlns="{ASG_NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
    return status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], [body]


def around(state: Any, service: str | None, action: str | None, environ: dict[str, Any],
           call: Callable[[dict[str, Any]], Any]) -> Any:
    """The server's call to moto, with the faults above in front of (or behind) it. Called under the lock."""
    if service != "autoscaling":
        return call(environ)
    faults = faults_of(state)
    if faults._take(faults.in_progress, action):
        return _error("400 Bad Request", "ScalingActivityInProgress",
                      IN_PROGRESS_MESSAGE.format(id=uuid.uuid4()))
    answer = call(environ)
    if answer[0].startswith("200") and faults._take(faults.lost, action):
        # The call landed; only its response is lost (A11: an InternalFailure, never an HTML page).
        return _error("500 Internal Server Error", "InternalFailure",
                      "The request processing has failed because of an unknown error.")
    return answer
