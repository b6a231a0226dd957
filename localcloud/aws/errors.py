"""The emulated AWS's own error tree (not the AWS errors it answers with, which are moto's classes)."""

from __future__ import annotations


class EmulationError(Exception):
    """Base of every error the emulation itself raises."""


class AlreadyRunning(EmulationError):
    """A second EmulatedAWS in one process: moto's backends are process-global, so two cannot coexist."""


class NotStarted(EmulationError):
    """An operation that needs the HTTP server was called before start()."""


class BadControlRequest(EmulationError):
    """A /_localcloud/ control request or a control call carried an invalid value."""
