"""agent/watch.py's reconcile with a fake engine and a fake IMDS (the booted-machine tests are the real ones)."""

import json
import os

import pytest

from agent import watch
from agent.errors import IdentityError
from agent.status import AgentLock


class FakeContainer:
    def __init__(self, service, marked, status="created", stop_timeout=None):
        self.name = f"site-{service}-1"
        self.labels = {watch.PROJECT_LABEL: "site", watch.SERVICE_LABEL: service}
        if marked:
            self.labels["bluegreen.when"] = "in-service"
        self.status = status
        self.attrs = {"Config": {"StopTimeout": stop_timeout}}
        self.calls = []

    def start(self):
        self.calls.append("start")
        self.status = "running"

    def stop(self, timeout):
        self.calls.append(("stop", timeout))
        self.status = "exited"


class FakeDocker:
    def __init__(self, containers):
        self.containers = self
        self.items = containers

    def list(self, all, filters):
        assert all is True and filters == {"label": "com.docker.compose.project=site"}
        return list(self.items)


class FakeIMDS:
    def __init__(self, state):
        self.state = state

    def get(self, path, missing_ok=False):
        assert path == watch.TARGET_STATE_PATH
        if isinstance(self.state, Exception):
            raise self.state
        return self.state


@pytest.fixture
def world(tmp_path):
    web = FakeContainer("web", marked=False, status="running")
    worker = FakeContainer("worker", marked=True, stop_timeout=30)
    imds = FakeIMDS("InService")
    published = []
    w = watch.Watch(imds, FakeDocker([web, worker]), "site", str(tmp_path),
                    publish=lambda value: published.append(value) or True, interval=0.01)
    (tmp_path / "status.json").write_text(json.dumps({"result": "success", "served": {"version": "1.0"}}))
    return w, imds, web, worker, published, tmp_path


def test_in_service_starts_the_marked_service_once_and_records_it(world):
    w, _imds, web, worker, published, tmp_path = world
    assert w.once()["started"] == ["site-worker-1"]
    assert worker.calls == ["start"] and web.calls == []
    assert w.once()["started"] == []  # reconciled: nothing to do
    record = json.loads((tmp_path / "status.json").read_text())
    assert record["workers"]["state"] == "running" and record["workers"]["services"] == ["worker"]
    assert record["served"] == {"version": "1.0"}  # the boot run's record is kept
    assert published == ["running"]


def test_standby_stops_it_gracefully_and_a_restart_policys_comeback_is_stopped_again(world):
    w, imds, web, worker, published, _ = world
    w.once()
    imds.state = "Standby"
    assert w.once()["stopped"] == ["site-worker-1"]
    assert worker.calls[-1] == ("stop", 30) and web.calls == []  # its own stop grace period
    worker.status = "running"  # the engine restarted it (restart: always)
    assert w.once()["stopped"] == ["site-worker-1"]
    assert published == ["running", "stopped"]


def test_an_imds_hiccup_keeps_what_runs(world):
    w, imds, _web, worker, _published, _ = world
    w.once()
    imds.state = IdentityError("IMDS at http://169.254.169.254 did not answer")
    done = w.once()
    assert done["want"] is None and worker.status == "running" and worker.calls == ["start"]


def test_before_the_launch_completed_nothing_starts(world):
    w, _imds, _web, worker, _published, tmp_path = world
    (tmp_path / "status.json").write_text(json.dumps({"result": "failed"}))
    assert w.once()["want"] == "stopped" and worker.calls == []


def test_a_boot_run_in_progress_holds_the_lock_and_the_round_is_skipped(world):
    w, _imds, _web, worker, _published, tmp_path = world
    with AgentLock(str(tmp_path)):
        assert w.once() is None
    assert worker.calls == []
    assert os.path.exists(tmp_path / "agent.lock")


def test_a_crash_looping_worker_counts_as_running_and_is_stopped_in_standby(world):
    w, imds, _web, worker, _published, _ = world
    worker.status = "restarting"  # a restart policy bringing a crashing worker back
    imds.state = "Standby"
    assert w.once()["stopped"] == [worker.name]
    assert worker.calls == [("stop", 30)]


def test_a_one_off_container_of_a_marked_service_is_never_started(world):
    w, _imds, _web, worker, _published, _ = world
    oneoff = FakeContainer("worker", marked=True, status="exited")
    oneoff.name = "site-worker-run-1a2b"
    oneoff.labels["com.docker.compose.oneoff"] = "True"  # left by `docker compose run worker migrate`
    w.docker.items.append(oneoff)
    assert w.once()["started"] == [worker.name]
    assert oneoff.calls == []


def test_a_stop_timeout_of_zero_is_zero_and_replicas_stop_together(world):
    w, imds, _web, worker, _published, _ = world
    worker.status = "running"
    worker.attrs["Config"]["StopTimeout"] = 0
    second = FakeContainer("worker", marked=True, status="running", stop_timeout=0)
    second.name = "site-worker-2"
    w.docker.items.append(second)
    imds.state = "Standby"
    assert sorted(w.once()["stopped"]) == ["site-worker-1", "site-worker-2"]
    assert worker.calls == [("stop", 0)] and second.calls == [("stop", 0)]


def test_imds_is_asked_before_the_work_folders_lock_is_taken(world):
    w, _imds, _web, worker, _published, tmp_path = world
    seen = []

    class Probe(FakeIMDS):
        def get(self, path, missing_ok=False):
            # The lock is free while IMDS is asked: an operator's run can take it meanwhile.
            with AgentLock(str(tmp_path)):
                seen.append("free")
            return "InService"

    w.imds = Probe("InService")
    assert w.once()["started"] == [worker.name] and seen == ["free"]


def test_a_dead_container_is_not_started_and_does_not_keep_the_others_from_starting(world):
    w, _imds, _web, worker, _published, _ = world
    dead = FakeContainer("helper", marked=True, status="dead")
    dead.start = lambda: (_ for _ in ()).throw(AssertionError("Docker refuses to start a dead container"))
    w.docker.items.insert(0, dead)
    assert w.once()["started"] == [worker.name]
    assert worker.status == "running"


def test_the_watch_command_uses_the_boot_runs_default_compose_project(tmp_path, capsys):
    """A config without compose_project (optional, default `bluegreen`, as the boot run: settings.LOCAL_DEFAULTS)."""
    import argparse

    from agent import cli

    listed = []

    class Docker:
        def __init__(self):
            self.containers = self

        def list(self, all, filters):
            listed.append(filters)
            return []

    class Clients:
        def imds(self, deadline):
            return FakeIMDS("InService")

        def docker(self, timeout):
            return Docker()

    args = argparse.Namespace(interval=5.0, once=True)
    assert cli._watch(Clients(), {}, {"workdir": str(tmp_path)}, args) == 0
    assert listed == [{"label": "com.docker.compose.project=bluegreen"}]
