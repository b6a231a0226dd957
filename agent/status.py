"""The work folder's lock (one agent at a time) and status.json (written atomically before and after every step,
as cloud-init writes its status: a run killed with SIGKILL leaves the step it died in)."""

import errno
import json
import os
import threading
import time
from contextlib import contextmanager

from agent import contract
from agent.errors import LockedError

LOCK_FILE = "agent.lock"
STATUS_FILE = "status.json"


class AgentLock:
    """A non-blocking flock on WORKDIR/agent.lock: a second agent on the same folder exits at once."""

    def __init__(self, workdir):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd = None

    def __enter__(self):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockedError(f"another bluegreen-agent holds {self.path}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Status:
    """status.json: version, image digest, the steps in progress, per-step timings (seconds) and the result.

    Two steps may run at once (plan beside image), so writes are serialised: the file on disk is always the
    newest state, never an older snapshot renamed over a newer one.
    """

    def __init__(self, workdir, clock=time.monotonic):
        self.path = os.path.join(workdir, STATUS_FILE)
        self._clock = clock
        self._lock = threading.Lock()
        self.data = {"schema_version": contract.SCHEMA_VERSION, "agent_version": contract.__version__,
                     "result": "running", "started_at": _now(), "finished_at": None, "in_progress": [],
                     "steps": {}, "version": None, "image_digest": None, "error": None, "pid": os.getpid()}

    def _write(self, change=None, **fields):
        with self._lock:
            if change is not None:
                change(self.data)
            self.data.update(fields)
            contract.atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def begin(self):
        self._write()

    def update(self, **fields):
        """Fields for the next write (every step writes on its way in and out)."""
        with self._lock:
            self.data.update(fields)

    @contextmanager
    def step(self, name):
        start = self._clock()
        self._write(lambda data: data["in_progress"].append(name))
        try:
            yield
        finally:
            def done(data):
                data["in_progress"].remove(name)
                data["steps"][name] = round(self._clock() - start, 3)

            self._write(done)

    def finish(self, error=None):
        if error is None:
            self._write(finished_at=_now(), result=contract.RESULT_SUCCESS, in_progress=[])
        else:
            self._write(finished_at=_now(), result=contract.RESULT_FAILED, in_progress=[],
                        error={"step": getattr(error, "step", "agent"), "message": str(error),
                               "exit_code": getattr(error, "exit_code", 1)})


RESULT_KILLED = "killed"


def read_status(workdir):
    """status.json as a dict, or None when there is none or it cannot be read."""
    try:
        with open(os.path.join(workdir, STATUS_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def previous_run_killed(data):
    """Called with the lock held, with what read_status gave: a status.json still "running" was left by a run that
    died without finishing (SIGKILL after TimeoutStopSec, a crash of the machine: audit F25). Returns what it was
    doing, or None."""
    if not data or data.get("result") != "running":
        return None
    return {"result": RESULT_KILLED, "pid": data.get("pid"), "started_at": data.get("started_at"),
            "in_progress": list(data.get("in_progress") or []), "version": data.get("version")}


def _agent_alive(pid):
    """Whether `pid` is a running bluegreen-agent. Read-only on purpose: `show` must never take the work folder's
    lock, even for a moment, or a run starting at that moment would fail with exit 10."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return b"bluegreen-agent" in f.read()
    except (OSError, TypeError, ValueError):
        return False


def last_run(workdir):
    """The last run as status.json tells it, with a "running" status whose agent process is gone shown as
    "killed" (audit F25); None when no run ever wrote one."""
    data = read_status(workdir)
    if data is None:
        return None
    out = {k: data.get(k) for k in ("result", "version", "started_at", "finished_at", "in_progress", "error", "pid")}
    if out["result"] == "running" and not _agent_alive(out["pid"]):
        out["result"] = RESULT_KILLED
    return out
