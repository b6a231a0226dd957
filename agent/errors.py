"""The agent's one error tree. Each error names the step it failed in and carries a documented exit code;
cli.main turns it into one line on stderr (a traceback only with --debug)."""

# Exit codes, documented in `bluegreen-agent --help` and docs/agent.md.
import sys

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_IDENTITY = 3
EXIT_GROUP = 4
EXIT_SETTINGS = 5
EXIT_BUNDLE = 6
EXIT_IMAGE = 7
EXIT_COMPOSE = 8
EXIT_HEALTH = 9
EXIT_LOCKED = 10
EXIT_LIFECYCLE = 11
EXIT_DEADLINE = 12  # boot (issue 11): the run's overall deadline, audit F13
# preflight (issue 11, bake part): something the agent needs is missing.
EXIT_PREFLIGHT = 13

EXIT_CODES = [
    (EXIT_OK, "success (or nothing to change)"),
    (EXIT_INTERNAL, "unexpected internal error (rerun with --debug), or stopped by SIGINT/SIGTERM/SIGHUP"),
    (EXIT_USAGE, "bad command line or unreadable/invalid config file"),
    (EXIT_IDENTITY, "instance identity: IMDS disabled (403), unreachable or too slow"),
    (EXIT_GROUP, "Auto Scaling group or its tags could not be read"),
    (EXIT_SETTINGS, "a setting is missing or invalid (version, image, bootstrap URL, bucket, secret reference)"),
    (EXIT_BUNDLE, "bootstrap bundle: missing object, checksum mismatch, path escape, bad manifest"),
    (EXIT_IMAGE, "image: pull failed (registry unreachable, unknown tag, auth) or tagging failed"),
    (EXIT_COMPOSE, "docker compose failed or is not installed"),
    (EXIT_HEALTH, "the stack did not become healthy before the deadline"),
    (EXIT_LOCKED, "another agent holds the lock on this work folder"),
    (EXIT_LIFECYCLE, "the lifecycle hook could not be completed"),
    (EXIT_DEADLINE, "the run's overall deadline (run_deadline) ran out; the error names the step"),
    (EXIT_PREFLIGHT, "preflight: something the agent needs is missing (one FAIL line each on stdout)"),
]


class AgentError(Exception):
    exit_code = EXIT_INTERNAL
    step = "agent"
    reported = False

    def __init__(self, message, step=None):
        super().__init__(message)
        if step is not None:
            self.step = step

    def report(self):
        """The one failure line on stderr (the unit sends it to the console: audit F16), printed once. The run
        prints it BEFORE it ABANDONs a launch: once the ABANDON lands the instance is terminated, and its
        shutdown stops the agent, which would otherwise die with the reason unprinted."""
        if not self.reported:
            self.reported = True
            print(f"bluegreen-agent: {self.step} failed: {self}", file=sys.stderr, flush=True)


class ConfigError(AgentError):
    exit_code = EXIT_USAGE
    step = "config"


class IdentityError(AgentError):
    exit_code = EXIT_IDENTITY
    step = "identity"


class GroupError(AgentError):
    exit_code = EXIT_GROUP
    step = "group"


class SettingsError(AgentError):
    exit_code = EXIT_SETTINGS
    step = "settings"


class BundleError(AgentError):
    exit_code = EXIT_BUNDLE
    step = "bundle"


class ImageError(AgentError):
    exit_code = EXIT_IMAGE
    step = "image"


class ComposeError(AgentError):
    exit_code = EXIT_COMPOSE
    step = "compose"


class HealthError(AgentError):
    exit_code = EXIT_HEALTH
    step = "health"


class LockedError(AgentError):
    exit_code = EXIT_LOCKED
    step = "lock"


class LifecycleError(AgentError):
    exit_code = EXIT_LIFECYCLE
    step = "lifecycle"


class DeadlineError(AgentError):
    exit_code = EXIT_DEADLINE
    step = "agent"
