"""The one polling helper tests share: every wait has a deadline, and its failure says what it waited for and
the last value seen (STYLE.md point 4)."""

import time


def wait_until(predicate, what, deadline_s=10.0, interval=0.05):
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last: {last!r}")
