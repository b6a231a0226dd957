"""The emulated AWS: moto over real HTTP plus the fidelity layer for aws-rules.md (issue 3).

    from localcloud.aws import EmulatedAWS
    cloud = EmulatedAWS(port=0, time_scale=0.01).start()
    cloud.endpoint  # "http://127.0.0.1:PORT", for AWS_ENDPOINT_URL (C1)
"""

from __future__ import annotations

from .errors import AlreadyRunning, BadControlRequest, EmulationError, NotStarted
from .server import EmulatedAWS
from .state import EVENT_TYPES

__all__ = ["EVENT_TYPES", "AlreadyRunning", "BadControlRequest", "EmulatedAWS", "EmulationError", "NotStarted"]
