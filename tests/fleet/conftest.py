"""Fixtures for the fleet's fast tests: a real HAProxy and tiny real HTTP backends (no Docker)."""

import http.server
import threading

import pytest

from localcloud.fleet.haproxy import LoadBalancer


class Backend:
    def __init__(self, version, healthy=True, delay=0.0, port=0):
        self.version = version
        self.healthy = healthy
        self.delay = delay
        self.status = 200  # what `/` answers: 500 stands for a release that fails real requests, not its checks
        self.hits = 0  # requests answered, health checks aside
        self.checks = 0  # health checks answered
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/health":
                    backend.checks += 1
                    status, body = (200, b"ok") if backend.healthy else (503, b"down")
                else:
                    if backend.delay:
                        threading.Event().wait(backend.delay)
                    backend.hits += 1
                    status, body = backend.status, backend.version.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # health checkers hang up early; not interesting here

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lb(tmp_path):
    balancer = LoadBalancer(str(tmp_path / "lb"), check_interval=0.2, rise=2, fall=2).start()
    yield balancer
    balancer.stop()


@pytest.fixture
def backend():
    """backend(version, healthy=True, delay=0.0) -> a started Backend, stopped after the test."""
    started = []

    def make(version, healthy=True, delay=0.0):
        started.append(Backend(version, healthy, delay).__enter__())
        return started[-1]

    yield make
    for item in started:
        item.__exit__(None, None, None)


class FakeInstance:
    """Stands in for localcloud.fleet.instances.Instance (same constructor): a tiny HTTP app on the instance's
    app port, answering its instance id, instead of an agent and a compose stack. No Docker needed."""

    def __init__(self, instance_id, group, version, app_port, workdir, aws_endpoint, region, docker_host, gate,
                 agent_settings=None):
        self.instance_id = instance_id
        self.group = group
        self.version = version
        self.app_port = app_port
        self.backend = Backend(instance_id, port=app_port)
        self.stopped = False

    def start(self):
        self.backend.__enter__()
        return self

    def stop(self, deadline_s=60.0):
        self.stopped = True
        self.backend.__exit__(None, None, None)

    def as_dict(self):
        return {"instance_id": self.instance_id, "group": self.group, "version": self.version,
                "app_port": self.app_port, "compose_project": None, "agent": "fake", "stopped": self.stopped}


@pytest.fixture
def fake_instance():
    """The FakeInstance class, for FleetSupervisor(instance_factory=...)."""
    return FakeInstance
