"""The deployer's one error tree. Each class carries the exit code the CLI returns for it.

Exit codes (also in `bluegreen --help` and the README):
  0 done; 1 failed and safely aborted; 2 usage or bad input; 3 conflict (lock held, or the command does
  not fit the current phase); 4 AWS or credentials error.
"""


class BlueGreenError(Exception):
    """Base of every error the deployer raises on purpose."""

    exit_code = 1

    def details(self):
        """Fields for the `--output json` error summary beyond the message."""
        return {}


class UsageError(BlueGreenError):
    """Bad input: an argument, a missing or ambiguous service pair, a bad URL."""

    exit_code = 2


class ConflictError(BlueGreenError):
    """Another operation holds the lock, or the command does not fit the current phase."""

    exit_code = 3


class AwsError(BlueGreenError):
    """An AWS call failed (after botocore's own retries), or credentials are missing or refused."""

    exit_code = 4

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code

    def details(self):
        return {"aws_error_code": self.code} if self.code else {}


class PlanError(BlueGreenError):
    """A planner built a step the deployer cannot apply (a bug): raised while the plan is built, before any of
    its calls is made."""

    exit_code = 1


class FailedError(BlueGreenError):
    """The operation failed and the fleet was left safe (aborted, or resumable by a rerun)."""

    exit_code = 1


class WaitFailed(FailedError):
    """A wait ended without its condition: `step` is the WaitStep, `last` the last state it saw, as data
    (`detail`: the verdict's one line; `instances`: the watched group's instances and their health)."""

    def __init__(self, message, step, last):
        super().__init__(message)
        self.step = step
        self.last = last

    def details(self):
        return {"step": {"name": self.step.name, "summary": self.step.summary, "wait": self.step.verdict.kind,
                         "color": self.step.color},
                "last": self.last}


class HealthFailure(WaitFailed):
    """A new instance turned unhealthy, or was terminated while we waited for it."""


class WaitTimeout(WaitFailed):
    """A wait ran past its deadline. The message says what it waited for and the last state seen."""


class BakeFailed(WaitFailed):
    """The bake after a flip failed: an alarm fired or the new fleet fell short. `reason` is what the operation
    record keeps (`alarm NAME`, `unhealthy i-...`)."""

    def __init__(self, message, step, last, reason):
        super().__init__(message, step, last)
        self.reason = reason

    def details(self):
        return dict(super().details(), reason=self.reason)


class RolledBack(FailedError):
    """A bake failed and the deploy was rolled back on its own, in the same process (the steps of `bluegreen
    rollback`): the old fleet serves again. `cause` is the BakeFailed."""

    def __init__(self, message, cause):
        super().__init__(message)
        self.cause = cause

    def details(self):
        return dict(self.cause.details(), rolled_back=True)


class Aborted(FailedError):
    """A deploy or canary wait failed and the operation was undone: the new group is back to 0, the live group
    untouched. `cause` is the WaitFailed that started it."""

    def __init__(self, message, cause):
        super().__init__(message)
        self.cause = cause

    def details(self):
        return dict(self.cause.details(), aborted=True)


class PreflightRefused(UsageError):
    """Pre-flight found the pair unsafe for a new deploy or canary (deployer/preflight.py): nothing was changed.
    `checks` are every check's result; the message names the first that failed and its fix."""

    def __init__(self, message, checks):
        super().__init__(message)
        self.checks = checks

    def details(self):
        failed = [c for c in self.checks if c.status == "fail"]
        return {"refused_by": failed[0].id if failed else None, "checks": [c.as_json() for c in self.checks]}
