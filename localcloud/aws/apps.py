"""Whether the application on an instance answers health checks: the layer's stand-in for a real probe (E5).

Nothing here connects to an instance. Each instance has a timeline of "the app answers from then on" /
"the app stops answering from then on" on the layer clock; the health-check counter (targets.py) reads it at
each check time. By default every app answers from the start, so a target passes every check (the behaviour
the old tests rely on). A test opts into failing checks:

- `boot_seconds`: every instance launched from now on answers only that many AWS seconds after its launch. A
  group without a launch hook registers it at InService (30 AWS s after launch), while the app still boots, so
  a long boot turns the target `unhealthy` before its first `healthy` (E5).
- `broken_launches`: the next N launched instances never answer (a bad version, a broken bootstrap).
- `set_up(instance, up)`: the app on one instance stops or starts answering now (a crash, a recovery).
The local fleet does not use this: it feeds its real HTTP checks in as forced health, which wins.
"""

from __future__ import annotations

import bisect
import math

from .errors import BadControlRequest

MAX_BOOT_SECONDS = 7200.0  # a bound, so that a typo cannot make every later launch unhealthy for days
MAX_BROKEN_LAUNCHES = 10000


class Apps:
    """Per-instance app availability; reset with the rest of the layer (LayerState.reset)."""

    def __init__(self) -> None:
        self.boot_seconds = 0.0
        self.broken_launches = 0
        # instance id -> sorted [(layer time, answers from then on)]; no entry: answers always
        self._timelines: dict[str, list[tuple[float, bool]]] = {}

    def configure(self, boot_seconds: float = 0.0, broken_launches: int = 0) -> None:
        """Replace both settings; they apply to instances launched from now on."""
        try:
            boot = float(boot_seconds)
        except (TypeError, ValueError):
            raise BadControlRequest(f"boot_seconds must be a number, got {boot_seconds!r}") from None
        if not 0.0 <= boot <= MAX_BOOT_SECONDS:
            raise BadControlRequest(f"boot_seconds must be 0-{MAX_BOOT_SECONDS:.0f}, got {boot_seconds!r}")
        if isinstance(broken_launches, bool) or not isinstance(broken_launches, int) or not (
                0 <= broken_launches <= MAX_BROKEN_LAUNCHES):
            raise BadControlRequest(f"broken_launches must be a whole number 0-{MAX_BROKEN_LAUNCHES}, "
                                    f"got {broken_launches!r}")
        self.boot_seconds = boot
        self.broken_launches = broken_launches

    def as_dict(self) -> dict[str, float | int]:
        return {"boot_seconds": self.boot_seconds, "broken_launches": self.broken_launches}

    def launched(self, instance_id: str, now: float, boot_real_seconds: float) -> None:
        """A group launched `instance_id` at `now`; `boot_real_seconds` is boot_seconds on the layer clock."""
        if self.broken_launches > 0:
            self.broken_launches -= 1
            self._timelines[instance_id] = [(now, False)]
        elif self.boot_seconds > 0:
            self._timelines[instance_id] = [(now, False), (now + boot_real_seconds, True)]

    def set_up(self, instance_id: str, up: bool, now: float) -> None:
        """From `now` on the app answers (up) or not; a pending boot is forgotten."""
        timeline = [(t, v) for t, v in self._timelines.get(instance_id, []) if t < now]
        timeline.append((now, bool(up)))
        self._timelines[instance_id] = timeline

    def answers(self, instance_id: str, at: float) -> bool:
        """Whether a check at `at` passes. A change takes effect for checks strictly after it, so a check at
        the very instant of a change gives the same result whether or not someone looked at the target
        before the change (health is counted lazily, when read)."""
        timeline = self._timelines.get(instance_id)
        if not timeline:
            return True
        i = bisect.bisect_left(timeline, (at, False)) - 1
        return True if i < 0 else timeline[i][1]

    def next_change(self, instance_id: str, at: float) -> float:
        """The first change at or after `at`: checks from `at` up to that time (inclusive) all give the
        answer of `at`. math.inf if there is none."""
        for t, _ in self._timelines.get(instance_id, []):
            if t >= at:
                return t
        return math.inf
