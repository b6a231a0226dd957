"""Which LayerState the class-level wrappers serve, and the wrapping itself.

moto keeps its backends in process-global dicts, so the wrappers are class-level and there is one active
layer per process. Every wrapped attribute is listed in WRAPPED so that a test can assert it still exists in
the pinned moto version (aws-rules.md, first section: "keep a test that every wrapped attribute still exists").
"""

from __future__ import annotations

from typing import Any, Callable

from .state import LayerState

_active: list[LayerState | None] = [None]
_originals: dict[tuple[type, str], Any] = {}
WRAPPED: list[tuple[type, str]] = []


def active() -> LayerState | None:
    return _active[0]


def activate(state: LayerState | None) -> None:
    _active[0] = state


def original(cls: type, name: str) -> Any:
    return _originals[(cls, name)]


def wrap(cls: type, name: str, replacement: Callable[..., Any], must_exist: bool = True) -> None:
    """Replace cls.name by `replacement` once; `original(cls, name)` keeps moto's version."""
    key = (cls, name)
    if key in _originals:
        return
    if must_exist and name not in cls.__dict__:
        raise AttributeError(f"moto changed: {cls.__name__}.{name} no longer exists; the fidelity layer needs it")
    _originals[key] = cls.__dict__.get(name)
    setattr(cls, name, replacement)
    if must_exist:
        WRAPPED.append(key)
