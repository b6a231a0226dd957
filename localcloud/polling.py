"""The one deadline-bounded poll of localcloud and the tests (STYLE.md point 4): every wait has a deadline and a
poll interval the caller sets, and its error says what it waited for and carries the last value seen.

    from localcloud.polling import WaitTimeout, wait_until
    state = wait_until(read_state, "the fleet to be ready", deadline_s=60.0, interval=0.5)
    routed = wait_until(supervisor.routed_count, "3 routed instances", 60.0, until=lambda n: n >= 3)

Callers that own an error tree turn WaitTimeout into their own error (the fleet's FleetTimeout, a test's
AssertionError); `sleep` and `clock` are injectable so that a test controls time.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class WaitTimeout(Exception):
    """The deadline passed before the predicate held; `what`, `deadline_s` and `last` are fields."""

    def __init__(self, what: str, deadline_s: float, last: Any) -> None:
        self.what = what
        self.deadline_s = deadline_s
        self.last = last
        super().__init__(f"timed out after {deadline_s}s waiting for {what}; last: {last!r}")


def wait_until(probe: Callable[[], Any], what: str, deadline_s: float, interval: float = 0.05, *,
               until: Callable[[Any], Any] = bool, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> Any:
    """Call `probe` every `interval` seconds until `until(value)` holds (by default: until the value is true),
    and return that value.

    `probe` is called at least once, and once more at the deadline, so a condition that holds just as time
    runs out is not reported as a timeout. Exceptions from it propagate: a probe raises to give up early (a
    process it waits on has died, say). Pass `until` when the value itself is what the timeout should report
    (botocore's waiters: a read, then acceptors over what it returned).
    """
    deadline = clock() + deadline_s
    last = probe()
    while not until(last):
        left = deadline - clock()
        if left <= 0:
            raise WaitTimeout(what, deadline_s, last)
        sleep(min(interval, left))
        last = probe()
    return last
