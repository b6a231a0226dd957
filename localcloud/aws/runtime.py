"""Which LayerState the class-level replacements serve.

moto keeps its backends in process-global dicts, so the replacements (registered in moto_seam.py) sit on
moto's classes and serve one active layer per process: the running EmulatedAWS's, or none.
"""

from __future__ import annotations

from .state import LayerState

_active: LayerState | None = None


def active() -> LayerState | None:
    return _active


def activate(state: LayerState | None) -> None:
    global _active
    _active = state
