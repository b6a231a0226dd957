"""The bounded load loop: pacing, counting versions and failures, always ending.

The sleeps here are the pacing under test (how many requests a second of load sends), not synchronisation.
"""

import time

import pytest

from localcloud.fleet.load import LoadGenerator, get_once, sample_versions
from tests.helpers import free_port, wait_until


@pytest.mark.haproxy
def test_paced_load_counts_every_version_through_the_balancer(lb, backend):
    one = backend("1.0")
    two = backend("2.0")
    for name, server in (("one", one), ("two", two)):
        lb.add_server(name, "127.0.0.1", server.port)
    wait_until(lambda: all(s.up for s in lb.servers().values()), "both servers up in HAProxy")
    lb.route("one")
    load = LoadGenerator(lb.url, rate=50, max_seconds=5).start()
    time.sleep(1.0)
    flip = time.monotonic()
    lb.route("two")
    lb.drain("one")
    time.sleep(1.0)
    result = load.stop()
    assert 90 <= result.total <= 110, result.summary()  # 50 req/s for ~2 s
    assert result.failures == []
    assert result.shares(end=flip) == {"1.0": 1.0}
    after = result.versions(start=flip + 0.1)
    assert set(after) == {"2.0"}, after
    assert result.summary()["failed"] == 0


def test_failures_are_counted_with_their_cause():
    url = f"http://127.0.0.1:{free_port()}/"  # free, so closed: nothing listens there
    version, error = get_once(url, timeout=1)
    assert version is None and error.startswith("ConnectionRefusedError")
    assert sample_versions(url, 3) == ({}, 3)
    result = LoadGenerator(url, rate=20, max_seconds=0.5).start().stop()
    assert result.total >= 1 and len(result.failures) == result.total


def test_the_loop_ends_at_its_own_deadline_without_stop(backend):
    app = backend("1.0")
    load = LoadGenerator(f"http://127.0.0.1:{app.port}/", rate=40, max_seconds=0.5).start()
    time.sleep(1.2)
    first = load.snapshot().total
    time.sleep(0.3)
    assert load.snapshot().total == first  # nothing after the deadline
    result = load.stop()
    assert 18 <= result.total <= 21, result.total
    assert result.versions() == {"1.0": result.total}
