"""The HAProxy controller against real HAProxy and tiny real HTTP backends (fast: no Docker)."""

import threading

import pytest

from localcloud.fleet import FleetTimeout
from localcloud.fleet.haproxy import HAProxyError, LoadBalancer
from localcloud.fleet.load import get_once, sample_versions
from tests.helpers import wait_until

pytestmark = pytest.mark.haproxy


def test_listens_on_an_ephemeral_loopback_port_and_answers_503_without_servers(lb):
    assert lb.port > 0
    assert get_once(lb.url) == (None, "HTTP 503")
    assert lb.servers() == {}


def test_new_server_is_checked_but_not_routed_until_told(lb, backend):
    app = backend("1.0")
    lb.add_server("i-1", "127.0.0.1", app.port)
    state = lb.servers()["i-1"]
    assert (state.routed, state.up, state.checked, state.failing) == (False, False, False, False)
    # Up only after `rise` (2) passing checks, like HealthyThresholdCount (E1).
    wait_until(lambda: lb.servers()["i-1"].up, "i-1 up")
    assert get_once(lb.url) == (None, "HTTP 503")
    assert app.hits == 0
    lb.route("i-1")
    assert sample_versions(lb.url, 5) == ({"1.0": 5}, 0)
    assert app.hits == 5


def test_failing_health_check_never_turns_up(lb, backend):
    app = backend("3.0", healthy=False)
    lb.add_server("i-3", "127.0.0.1", app.port)
    wait_until(lambda: lb.servers()["i-3"].checked, "first check of i-3")
    assert lb.servers()["i-3"].failing is True
    first = app.checks
    wait_until(lambda: app.checks >= first + 3, "three more checks of i-3")
    assert lb.servers()["i-3"].up is False


def test_server_goes_down_after_fall_failures_and_back_up(lb, backend):
    app = backend("1.0")
    lb.add_server("i-1", "127.0.0.1", app.port)
    wait_until(lambda: lb.servers()["i-1"].up, "i-1 up")
    app.healthy = False
    wait_until(lambda: not lb.servers()["i-1"].up, "i-1 down")
    assert lb.servers()["i-1"].failing
    app.healthy = True
    wait_until(lambda: lb.servers()["i-1"].up, "i-1 up again")
    # A reset counts it down until `rise` checks pass again (a re-registered target starts `initial`).
    lb.reset_health("i-1")
    assert lb.servers()["i-1"].up is False
    wait_until(lambda: lb.servers()["i-1"].up, "i-1 up after the reset")


def request_in_flight(lb, server):
    """One request sent through the load balancer and still being answered by `server`; its answer lands in the
    list once the thread ends."""
    answers = []
    thread = threading.Thread(target=lambda: answers.append(get_once(lb.url, timeout=5)))
    thread.start()
    wait_until(lambda: lb.servers()[server].sessions == 1, f"a request in flight on {server}")
    return thread, answers


def slow_request_in_flight(lb, backend, delay):
    """The only server, "slow" (version 1.0, answering after `delay` s), with one request in flight on it."""
    slow = backend("1.0", delay=delay)
    lb.add_server("slow", "127.0.0.1", slow.port)
    wait_until(lambda: lb.servers()["slow"].up, "slow up")
    lb.route("slow")
    return request_in_flight(lb, "slow")


def test_drain_stops_new_requests_and_lets_in_flight_ones_finish(lb, backend):
    slow = backend("1.0", delay=1.0)
    fast = backend("2.0")
    lb.add_server("slow", "127.0.0.1", slow.port)
    lb.add_server("fast", "127.0.0.1", fast.port)
    wait_until(lambda: all(s.up for s in lb.servers().values()), "both up")
    lb.route("slow")

    thread, answers = request_in_flight(lb, "slow")
    lb.route("fast")
    lb.drain("slow")
    assert sample_versions(lb.url, 6) == ({"2.0": 6}, 0)
    thread.join(5)
    assert answers == [("1.0", None)]
    lb.remove_server("slow")  # waits for nothing: the slow request already finished
    assert set(lb.servers()) == {"fast"}


def test_remove_waits_for_in_flight_requests(lb, backend):
    thread, answers = slow_request_in_flight(lb, backend, delay=0.8)
    lb.remove_server("slow")
    thread.join(5)
    assert answers == [("1.0", None)]
    assert lb.servers() == {}


def test_wait_idle_times_out_naming_the_server_and_what_is_in_flight(lb, backend):
    thread, _ = slow_request_in_flight(lb, backend, delay=1.0)
    with pytest.raises(FleetTimeout, match="slow still had 1 requests in flight after 0.3s"):
        lb.wait_idle("slow", deadline_s=0.3)
    thread.join(5)


def test_add_is_idempotent_and_a_new_address_replaces_the_server(lb, backend):
    one = backend("1.0")
    two = backend("2.0")
    lb.add_server("i-1", "127.0.0.1", one.port)
    lb.add_server("i-1", "127.0.0.1", one.port)
    assert lb.servers()["i-1"].port == one.port
    lb.add_server("i-1", "127.0.0.1", two.port)
    assert lb.servers()["i-1"].port == two.port
    assert len(lb.servers()) == 1


def test_commands_on_unknown_servers_are_refused(lb):
    with pytest.raises(HAProxyError, match="refused"):
        lb.route("i-missing")
    lb.remove_server("i-missing")  # nothing to remove is not an error


def test_port_in_use_is_a_clear_error(tmp_path, lb):
    other = LoadBalancer(str(tmp_path / "other"), port=lb.port)
    with pytest.raises(HAProxyError, match=f"cannot listen on 127.0.0.1:{lb.port}"):
        other.start()
