"""The deployer's one error tree. Each class carries the exit code the CLI returns for it.

Exit codes (also in `bluegreen --help` and the README):
  0 done; 1 failed and safely aborted; 2 usage or bad input; 3 conflict (lock held, or the command does
  not fit the current phase); 4 AWS or credentials error.
"""


class BlueGreenError(Exception):
    """Base of every error the deployer raises on purpose."""

    exit_code = 1


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


class FailedError(BlueGreenError):
    """The operation failed and the fleet was left safe (aborted, or resumable by a rerun)."""

    exit_code = 1


class HealthFailure(FailedError):
    """A new instance turned unhealthy, or was terminated while we waited for it."""


class WaitTimeout(FailedError):
    """A wait ran past its deadline. The message says what it waited for and the last state seen."""
