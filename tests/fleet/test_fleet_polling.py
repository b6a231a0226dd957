"""localcloud.polling.wait_until, the loop behind the fleet's waits and tests.helpers.wait_until, on a fake clock."""

import pytest

from localcloud.polling import WaitTimeout, wait_until
from tests.helpers import FakeTime


def test_returns_the_first_true_value_and_sleeps_the_interval_between_tries():
    clock = FakeTime(start=0.0)
    answers = iter([None, 0, {"phase": "ready"}])
    got = wait_until(lambda: next(answers), "ready", deadline_s=10.0, interval=0.5, sleep=clock.sleep,
                     clock=clock.now)
    assert got == {"phase": "ready"}
    assert clock.sleeps == [0.5, 0.5]


def test_timeout_carries_what_and_the_last_value_and_looks_once_more_at_the_deadline():
    clock = FakeTime(start=0.0)
    seen = []

    def probe():
        seen.append(clock.now())
        return []

    with pytest.raises(WaitTimeout) as caught:
        wait_until(probe, "three instances", deadline_s=1.0, interval=0.4, sleep=clock.sleep, clock=clock.now)
    assert seen == [0.0, 0.4, 0.8, 1.0]  # the last sleep is cut to the deadline, then one more look
    assert (caught.value.what, caught.value.deadline_s, caught.value.last) == ("three instances", 1.0, [])
    assert str(caught.value) == "timed out after 1.0s waiting for three instances; last: []"


def test_until_decides_on_the_probed_value_which_the_timeout_reports():
    clock = FakeTime(start=0.0)
    counts = iter([0, 1, 2, 2, 2, 2])
    assert wait_until(lambda: next(counts), "two", 5.0, 1.0, until=lambda n: n == 2, sleep=clock.sleep,
                      clock=clock.now) == 2
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: next(counts), "three", 1.0, 1.0, until=lambda n: n == 3, sleep=clock.sleep,
                   clock=clock.now)
    assert caught.value.last == 2


def test_a_predicate_that_holds_at_once_never_sleeps_even_with_no_time_left():
    clock = FakeTime(start=0.0)
    assert wait_until(lambda: "yes", "yes", deadline_s=0.0, sleep=clock.sleep, clock=clock.now) == "yes"
    assert clock.sleeps == []


def test_an_error_from_the_predicate_ends_the_wait_at_once():
    clock = FakeTime(start=0.0)

    def gone():
        raise ProcessLookupError("the process it waited on has died")

    with pytest.raises(ProcessLookupError):
        wait_until(gone, "the process", deadline_s=5.0, sleep=clock.sleep, clock=clock.now)
    assert clock.sleeps == []
