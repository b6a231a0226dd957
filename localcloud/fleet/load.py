"""A bounded, paced request loop through the load balancer: what the steady-load tests and the demo measure.

Each request opens a new connection (as many real clients do), so a server removed or stopped too early shows
up as a failed request rather than hiding behind a kept-alive connection. Requests are paced on a fixed
schedule (rate per second) by a few worker threads, so one slow answer does not stall the schedule; the loop
always ends, at `stop()` or at its own deadline.
"""
from __future__ import annotations

import collections
import http.client
import logging
import threading
import time
from typing import NamedTuple
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    at: float  # time.monotonic() when the request was sent
    version: str | None  # the body of a 200 answer, stripped
    error: str | None  # None on a 200 answer, else the status or the exception


class LoadResult:
    def __init__(self, samples):
        self.samples = sorted(samples)  # type: List[Sample]

    @property
    def total(self):
        return len(self.samples)

    @property
    def failures(self):
        return [s for s in self.samples if s.error is not None]

    def versions(self, start=None, end=None):
        """How many answers each version gave, in [start, end) (monotonic times; None = open)."""
        counts = collections.Counter()
        for s in self.samples:
            if (start is None or s.at >= start) and (end is None or s.at < end) and s.error is None:
                counts[s.version] += 1
        return counts

    def shares(self, start=None, end=None):
        counts = self.versions(start, end)
        total = sum(counts.values())
        return {v: round(n / total, 3) for v, n in sorted(counts.items())} if total else {}

    def summary(self):
        errors = collections.Counter(s.error for s in self.failures)
        return {"requests": self.total, "failed": len(self.failures), "errors": dict(errors),
                "versions": dict(self.versions())}


def get_once(url, timeout=2.0):
    """One GET on a fresh connection: (version, None) on 200, else (None, reason)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace").strip()
        if resp.status != 200:
            return None, f"HTTP {resp.status}"
        return body, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def sample_versions(url, count=20, timeout=2.0):
    """Send `count` requests one after the other; return (Counter of versions, number failed)."""
    versions = collections.Counter()
    failed = 0
    for _ in range(count):
        version, error = get_once(url, timeout)
        if error:
            failed += 1
        else:
            versions[version] += 1
    return versions, failed


class LoadGenerator:
    """`rate` requests per second against `url` until stop() or `max_seconds`, whichever comes first."""

    def __init__(self, url, rate=50.0, max_seconds=600.0, timeout=2.0, workers=8):
        self.url = url
        self.rate = float(rate)
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.workers = workers
        self._samples = []  # type: List[Sample]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []  # type: List[threading.Thread]
        self._next = 0
        self._t0 = 0.0

    def start(self):
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, name=f"load-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def _take_slot(self):
        with self._lock:
            slot = self._next
            self._next += 1
        return self._t0 + slot / self.rate

    def _worker(self):
        end = self._t0 + self.max_seconds
        while not self._stop.is_set():
            when = self._take_slot()
            if when >= end:
                return
            delay = when - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            sent = time.monotonic()
            version, error = get_once(self.url, self.timeout)
            with self._lock:
                self._samples.append(Sample(sent, version, error))
            if error:
                log.warning("load: request at +%.2fs failed: %s", sent - self._t0, error)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        with self._lock:
            return LoadResult(list(self._samples))

    def snapshot(self):
        with self._lock:
            return LoadResult(list(self._samples))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
