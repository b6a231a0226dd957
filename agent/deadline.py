"""One deadline for the whole run (audit F13), below the unit's TimeoutStartSec.

Each step keeps its own limit (imds_deadline, group_deadline, compose_timeout, health_timeout, ...), but none
may wait past what remains of the run: `Clipped` hands every step the smaller of the two, so the agent ends
its own run, ABANDONs and writes status.json before systemd has to kill it. A step that fails once the run's
time is gone is reported as the step where the run's deadline ran out (exit 12), with the time each step took.
"""

import time

from agent.errors import DeadlineError

# A step given no time at all would not even try once: the last step gets at least this.
MIN_WAIT = 1.0
# Waits give up when their next pause would pass their limit (IMDS backs off up to 5 s): a step that failed
# this close to the end of a wait the run's deadline had cut short ran out of the run's time.
SLACK = 5.0


class Deadline:
    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = float(seconds)
        self._clock = clock
        self._until = clock() + self.seconds
        self.cut_short = False  # whether some step got less than its own limit

    def remaining(self):
        return max(0.0, self._until - self._clock())

    def expired(self):
        return self._clock() >= self._until

    def clip(self, wait):
        """`wait` seconds, or what remains of the run if that is less (at least MIN_WAIT)."""
        left = self.remaining()
        if left < float(wait):
            self.cut_short = True
        return max(MIN_WAIT, min(float(wait), left))

    def explain(self, exc, timings=None):
        """`exc` as a DeadlineError naming its step when the run's time is gone; else `exc` itself."""
        ran_out = self.expired() or (self.cut_short and self.remaining() <= SLACK)
        if not ran_out or isinstance(exc, DeadlineError):
            return exc
        spent = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in (timings or {}).items())
        return DeadlineError(f"the run's deadline (run_deadline {self.seconds:.0f}s) ran out in step {exc.step}"
                             f"{f' (steps done: {spent})' if spent else ''}: {exc}", step=exc.step)


class Clipped:
    """Settings whose waits (every `*_timeout` and `*_deadline` but run_deadline itself) are clipped to what
    remains of the run each time a step reads them; everything else reads through unchanged."""

    def __init__(self, settings, deadline):
        self._settings, self._deadline = settings, deadline

    @property
    def unclipped(self):
        """The settings as resolved, for what must run even when the run's time is gone: putting the previous
        version back after a failed activation (a restore cut to 1 s would leave the stack half switched)."""
        return self._settings

    def __getattr__(self, name):
        value = getattr(self._settings, name)
        if name != "run_deadline" and name.endswith(("_timeout", "_deadline")) and isinstance(value, (int, float)):
            return self._deadline.clip(value)
        return value
