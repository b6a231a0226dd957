"""agent/workers.py: which compose services are marked to run only while InService, and what to do (issue 16)."""

import pytest

from agent import workers

MODEL = {"services": {
    "web": {"image": "web:live"},
    "worker": {"image": "web:live", "labels": {"bluegreen.when": "in-service"}},
    "cron": {"image": "cron:1", "labels": ["com.example.team=core", "bluegreen.when=In-Service"]},
    "other": {"image": "x", "labels": {"bluegreen.when": "always"}},
}}


def test_marked_services_read_both_label_forms_and_nothing_else():
    assert workers.marked_services(MODEL) == ["cron", "worker"]
    assert workers.unmarked_services(MODEL) == ["other", "web"]
    assert workers.marked_services({"services": {"web": None}}) == []


@pytest.mark.parametrize("state, launched, want", [
    ("InService", True, "running"),
    ("InService", False, "stopped"),  # Pending:Wait reads InService: not before CONTINUE
    ("Standby", True, "stopped"),
    ("Detached", True, "stopped"),
    ("Warmed:Stopped", True, "stopped"),
    ("Terminated", True, "stopped"),
    ("SomethingNew", True, "stopped"),  # a value not known stops them
    (None, True, None),  # IMDS did not answer: keep what runs (I3), no flapping
])
def test_only_an_in_service_launched_instance_runs_its_workers(state, launched, want):
    assert workers.wanted(state, launched) == want


def test_the_plan_reconciles_whatever_the_last_change_was():
    marked = ["cron", "worker"]
    assert workers.plan("running", marked, set()) == ("start", ["cron", "worker"])
    assert workers.plan("running", marked, {"worker"}) == ("start", ["cron"])  # a restart policy's leftover
    assert workers.plan("running", marked, {"cron", "worker", "web"}) is None
    assert workers.plan("stopped", marked, {"worker", "web"}) == ("stop", ["worker"])  # never touches web
    assert workers.plan("stopped", marked, {"web"}) is None
    assert workers.plan(None, marked, {"worker"}) is None
    assert workers.plan("running", [], set()) is None


def test_the_health_step_does_not_wait_for_the_services_the_watch_starts_later():
    from agent import health

    assert health.expected_services(MODEL) == {"web", "other"}
