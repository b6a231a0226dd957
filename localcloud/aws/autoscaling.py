"""Auto Scaling behaviour (A1-A12) on top of moto's AutoScalingBackend. Filled in rule group by rule group."""

from __future__ import annotations

from .state import LayerState


def install() -> None:
    pass


def tick(state: LayerState) -> None:
    pass
