"""The health verdict, pure (audit F6, F12): one-shot services, one-off and leftover containers, restart loops,
N consecutive passing polls over a stability window, the deadline, and the engaged-hook requirement. The same
rules against the real engine and compose: test_agent_health_docker.py."""

import pytest

from agent.errors import HealthError, SettingsError
from agent.health import (
    FAILED,
    OK,
    WAITING,
    Container,
    Policy,
    Streak,
    Verdict,
    expected_services,
    healthcheck_services,
    judge,
    require_health_signal,
    wait_stable,
)
from agent.settings import resolve, tags_to_settings
from tests.helpers import FakeTime


def box(service, status="running", health=None, exit_code=0, restarts=0, oneoff=False, cid=None):
    return Container(id=cid or service + "-id", name=f"p-{service}-1", service=service, status=status,
                     health=health, exit_code=exit_code, restart_count=restarts, oneoff=oneoff)


WEB = {"web", "init"}


@pytest.mark.parametrize("boxes,services,state,words", [
    ([], {"web"}, WAITING, "web: no container"),
    ([], set(), WAITING, "no containers"),
    ([box("web"), box("init", "exited", exit_code=0)], WEB, OK, "init exited(0), web running"),
    # F6: a one-shot service that completed is done, not failed; one that failed fails, named.
    ([box("web"), box("init", "exited", exit_code=1)], WEB, FAILED, "service init exited with code 1"),
    ([box("web"), box("init", "dead", exit_code=137)], WEB, FAILED, "service init exited with code 137"),
    ([box("web", health="starting"), box("init", "exited")], WEB, WAITING, "web running/starting"),
    ([box("web", health="unhealthy"), box("init", "exited")], WEB, FAILED, "service web is unhealthy"),
    ([box("web", "created"), box("init", "exited")], WEB, WAITING, "web created"),
    ([box("web", health="healthy")], WEB, WAITING, "init: no container"),
    # F6: a leftover one-off container (`compose run` without --rm) that exited 1 is never judged.
    ([box("web"), box("init", "exited"), box("web", "exited", exit_code=1, oneoff=True, cid="run-1")], WEB, OK,
     "init exited(0), web running"),
    # F6: a container of a service the current model no longer has is never judged either.
    ([box("web"), box("init", "exited"), box("old", "exited", exit_code=2)], WEB, OK, "web running"),
    # F12: a restart loop fails, naming the service, whether caught restarting or by its RestartCount.
    ([box("web", "restarting", restarts=1)], {"web"}, FAILED, "service web is in a restart loop"),
    ([box("web", restarts=2)], {"web"}, FAILED, "restarted 2 time(s) during this run"),
])
def test_verdict(boxes, services, state, words):
    verdict = judge(boxes, services, baseline={})
    assert verdict.state == state and words in verdict.detail, verdict


def test_restarts_count_from_the_baseline_taken_before_compose_up():
    # An unchanged container that restarted twice last week is not a loop; one more restart now is.
    before = {"web-id": 2}
    assert judge([box("web", restarts=2)], {"web"}, before).state == OK
    verdict = judge([box("web", restarts=3)], {"web"}, before)
    assert verdict.state == FAILED and "restarted 1 time(s)" in verdict.detail
    # A container compose created during the run starts at 0: any restart of it counts.
    assert judge([box("web", restarts=1, cid="new")], {"web"}, before).state == FAILED


def test_the_services_compose_runs_and_the_ones_with_a_healthcheck():
    model = {"services": {
        "web": {"image": "w", "healthcheck": {"test": ["CMD", "true"]}},
        "init": {"image": "w"},
        "off": {"image": "w", "healthcheck": {"disable": True}},
        "none": {"image": "w", "healthcheck": {"test": ["NONE"]}},
        "idle": {"image": "w", "deploy": {"replicas": 0}},
        "scaled": {"image": "w", "scale": 0},
    }}
    assert expected_services(model) == {"web", "init", "off", "none"}
    assert healthcheck_services(model) == ["web"]


def test_an_engaged_hook_needs_a_url_or_a_healthcheck():
    plain = {"services": {"web": {"image": "w"}}}
    with pytest.raises(SettingsError) as err:
        require_health_signal("launch", None, plain)
    assert err.value.exit_code == 5 and err.value.step == "settings"
    assert "launch hook launch is engaged but there is no health URL" in str(err.value)
    require_health_signal("launch", "http://127.0.0.1:8080/health", plain)
    require_health_signal("launch", None, {"services": {"web": {"healthcheck": {"test": ["CMD", "true"]}}}})


def test_a_streak_needs_n_passing_polls_spanning_the_window():
    streak = Streak(successes=3, stable_s=2.0)
    assert [streak.observe(True, t) for t in (0.0, 0.5, 1.0, 1.5)] == [False] * 4  # 4 polls, but 1.5 s
    assert streak.observe(True, 2.0)
    # N polls matter too: two polls 5 s apart are not three.
    streak = Streak(successes=3, stable_s=2.0)
    assert not streak.observe(True, 0.0) and not streak.observe(True, 5.0) and streak.observe(True, 5.5)
    # Any other poll starts it again, window included.
    streak = Streak(successes=2, stable_s=1.0)
    assert not streak.observe(True, 0.0) and not streak.observe(False, 0.9)
    assert not streak.observe(True, 1.0) and not streak.observe(True, 1.5) and streak.observe(True, 2.0)


def _scripted(states, clock):
    """A probe answering the given states one poll at a time (the last one forever)."""
    seen = []

    def probe(until):
        seen.append(clock.now())
        state = states[min(len(seen) - 1, len(states) - 1)]
        return Verdict(state, f"poll {len(seen)} {state}")

    return probe, seen


def test_the_wait_returns_once_stable_and_not_before():
    clock = FakeTime(start=0.0)
    probe, seen = _scripted([OK, WAITING, OK], clock)
    wait_stable(probe, "project p", Policy(timeout=30, interval=0.5, successes=3, stable_s=2.0),
                sleep=clock.sleep, clock=clock.now)
    # The streak broke at 0.5 s, began again at 1.0 s and held from there to 3.0 s.
    assert seen == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def test_a_failure_ends_the_wait_at_once_with_its_line():
    clock = FakeTime(start=0.0)
    probe, seen = _scripted([OK, OK, FAILED], clock)
    with pytest.raises(HealthError, match=r"^project p: poll 3 failed$"):
        wait_stable(probe, "project p", Policy(30, 0.5, 3, 2.0), sleep=clock.sleep, clock=clock.now)
    assert len(seen) == 3


def test_the_deadline_says_what_it_waited_for_and_the_last_state():
    clock = FakeTime(start=0.0)
    probe, _ = _scripted([OK, WAITING] * 20, clock)  # flapping: passes half the polls, never 3 in a row
    with pytest.raises(HealthError) as err:
        wait_stable(probe, "http://x/health", Policy(10, 0.5, 3, 2.0), sleep=clock.sleep, clock=clock.now)
    assert str(err.value) == ("http://x/health was not healthy within 10s (1 passing poll(s) in a row over 0.0s, "
                              "needs 3 over 2.0s; last: poll 21 ok)")
    assert clock.now() <= 10.0  # never past its deadline


TAGS = {"bluegreen:version": "1.0", "bluegreen:image": "r/web", "bluegreen:bootstrap": "s3://b-1/x/"}


def test_health_settings_defaults_and_validation():
    s = resolve({}, tags_to_settings(TAGS), {})
    assert (s.health_successes, s.health_stable_s) == (3, 2.0)
    assert s.sources["health_successes"] == "default"
    s = resolve({}, tags_to_settings(TAGS), {"health_successes": 1, "health_stable_s": 0})
    assert (s.health_successes, s.health_stable_s) == (1, 0.0)
    for config, words in [({"health_successes": 0}, "health_successes must be a whole number"),
                          ({"health_successes": 2.5}, "health_successes must be a whole number"),
                          ({"health_successes": True}, "health_successes must be a whole number"),
                          ({"health_stable_s": -1}, "health_stable_s must be 0 or more"),
                          ({"health_stable_s": "x"}, "health_stable_s must be a number"),
                          ({"health_stable_s": 30, "health_timeout": 30}, "must be below health_timeout")]:
        with pytest.raises(SettingsError, match=words):
            resolve({}, tags_to_settings(TAGS), config)
