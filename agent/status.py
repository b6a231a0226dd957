"""The work folder's lock (one agent at a time) and status.json (written atomically at start and end)."""

import errno
import json
import os
import tempfile
import time
from contextlib import contextmanager

from agent.errors import LockedError

LOCK_FILE = "agent.lock"
STATUS_FILE = "status.json"


def atomic_write_json(path, data):
    """Write to a temp file in the same folder, then rename: a reader sees the old file or the new, never half."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """status.json: version, image digest, per-step timings (seconds) and the result."""

    def __init__(self, workdir, clock=time.monotonic):
        self.path = os.path.join(workdir, STATUS_FILE)
        self._clock = clock
        self.data = {"result": "running", "started_at": _now(), "finished_at": None, "steps": {},
                     "version": None, "image_digest": None, "error": None, "pid": os.getpid()}

    def begin(self):
        atomic_write_json(self.path, self.data)

    def update(self, **fields):
        self.data.update(fields)

    @contextmanager
    def step(self, name):
        start = self._clock()
        try:
            yield
        finally:
            self.data["steps"][name] = round(self._clock() - start, 3)

    def finish(self, error=None):
        self.data["finished_at"] = _now()
        if error is None:
            self.data["result"] = "success"
        else:
            self.data["result"] = "failed"
            self.data["error"] = {"step": getattr(error, "step", "agent"), "message": str(error),
                                  "exit_code": getattr(error, "exit_code", 1)}
        atomic_write_json(self.path, self.data)
