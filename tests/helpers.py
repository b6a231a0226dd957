"""The helpers every test group shares: one of each (code-review §3.5).

- `wait_until`: the one polling helper; every wait has a deadline, and its failure says what it waited for
  and the last value seen (STYLE.md point 4).
- `expect_exit`: a command's exit code AND its one-line error, for a subprocess (CompletedProcess) or an
  in-process `Outcome`.
- `FakeTime`: injectable time (`now`, `sleep`, `rand`) for code that takes a clock.
- `free_port`: a port below the kernel's ephemeral range (localcloud.ports; commit 6640ba4).
"""

from __future__ import annotations

from dataclasses import dataclass

from localcloud import polling
from localcloud.ports import free_port

__all__ = ["FakeTime", "Outcome", "expect_exit", "free_port", "wait_until"]


def wait_until(predicate, what, deadline_s=10.0, interval=0.05):
    """Poll `predicate` until it returns something true, and return that (localcloud.polling's loop; a
    timeout fails the test as an AssertionError)."""
    try:
        return polling.wait_until(predicate, what, deadline_s, interval)
    except polling.WaitTimeout as exc:
        raise AssertionError(str(exc)) from None


@dataclass
class Outcome:
    """What an in-process `main(argv)` call gave: the same three fields as subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def error_lines(proc, prog=None):
    """The `PROG: error: ...` lines of stderr (any program when prog is None)."""
    marker = f"{prog}: error:" if prog else ": error:"
    return [line for line in proc.stderr.splitlines() if marker in line and not line.startswith(" ")]


def expect_exit(proc, code, message=None, prog=None):
    """Assert the exit code; with `message`, also exactly one error line on stderr, containing it.

    Returns the error line (or None without `message`), so a test can assert more about it.
    """
    assert proc.returncode == code, (f"expected exit {code}, got {proc.returncode}\n"
                                     f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    if message is None:
        return None
    lines = error_lines(proc, prog)
    assert len(lines) == 1, f"expected one error line on stderr, got:\n{proc.stderr}"
    assert message in lines[0], f"{message!r} not in {lines[0]!r}"
    return lines[0]


class FakeTime:
    """A clock that moves only when something sleeps on it; `rand` fixed for backoff tests."""

    def __init__(self, start=1000.0, rand=1.0):
        self.t = float(start)
        self.sleeps = []
        self._rand = rand

    def now(self):
        return self.t

    monotonic = now

    def sleep(self, seconds):
        seconds = max(0.0, float(seconds))
        self.sleeps.append(seconds)
        self.t += seconds

    def advance(self, seconds):
        self.t += float(seconds)

    def rand(self):
        return self._rand
