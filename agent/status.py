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
