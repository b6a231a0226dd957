"""EmulatedAWS: moto over real HTTP on loopback, plus the fidelity layer and a control API.

Requests are serialised (aws-rules.md: moto's backends are not safe under concurrent clients), the layer's
clock is advanced before each one, and faults are injected in front of moto. Paths under /_localcloud/ are
the control API for other processes:

    POST /_localcloud/target-health  {"instance_id": ..., "state": "healthy"|"unhealthy"|null,
                                       "target_group_arn": optional}
    POST /_localcloud/reset
    POST /_localcloud/faults         {"throttle_fraction": 0.0, "latency_s": 0.0,
                                       "exit_standby_contention_once": false, "conditional_conflicts": 0,
                                       "insufficient_capacity_zones": [], "vcpu_limit": null,
                                       "broken_launch_templates": [], "tag_visibility_delay_s": 0,
                                       "put_events_failures": 0, "reregistered_standby_stuck": false}
    POST /_localcloud/time           {"time_scale": X, "health_interval": S}
    POST /_localcloud/apps           {"boot_seconds": 0.0, "broken_launches": 0}   (E5, apps.py)
    POST /_localcloud/app            {"instance_id": ..., "up": true|false}       (E5)
    POST /_localcloud/alarms         {"evaluate": true|false}                     (W2, alarms.py)
    POST /_localcloud/console        {"instance_id": ..., "output": "..."}       (GetConsoleOutput, console.py)
    GET  /_localcloud/events?after=N {"events": [...], "last": M}  (each event carries "seq")
    GET  /_localcloud/calls          {"calls": {"autoscaling:DescribeAutoScalingGroups": n, ...}}
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any, Callable

from werkzeug.serving import WSGIRequestHandler, make_server

from . import (
    alarms,
    autoscaling,
    console,
    events_faults,
    faults_asg,
    moto_seam,
    refresh,
    runtime,
    s3_conditional,
    tag_delay,
    targets,
    warm,
)
from .errors import AlreadyRunning, BadControlRequest, NotStarted
from .moto_seam import DomainDispatcherApplication, create_backend_app, moto_api_backend
from .state import LayerState

log = logging.getLogger(__name__)

# A10: all Auto Scaling calls of an account share one token bucket; ELB answers the same `Throttling` error.
THROTTLED_SERVICES = ("autoscaling", "elasticloadbalancing")
# Query-protocol services whose calls are counted per action (GET /_localcloud/calls), e.g. for benchmarks
# of how often a tool polls (A10: no tool should poll faster than it needs to).
COUNTED_SERVICES = ("autoscaling", "elasticloadbalancing", "ec2")
TICK_SECONDS = 0.05


def _xml_error(code: str, message: str, namespace: str = "") -> bytes:
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return (f'<ErrorResponse{xmlns}><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>'
            f'<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>').encode()


def _scope_of(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """(service, Region) from the SigV4 credential scope."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker in auth:
        scope = auth.split(marker, 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 4:
            return scope[3], scope[2]
    return None, None


class _QuietHandler(WSGIRequestHandler):
    """One debug line per request instead of werkzeug's INFO access log on the root logger."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.debug("%s %s", self.requestline, code)


class EmulatedAWS:
    """The emulated AWS of issue 3. One per process (moto's backends are process-global).

    Subscribers (`subscribe(callback)`) receive each event as a dict, outside the request lock, in order:
    {"seq", "type", "instance_id", "group", "target_group_arn", "port", "time"} plus, per type:
      instance_launched            "state" (Pending or Pending:Wait)
      instance_lifecycle_changed   "state", "previous"
      instance_detached            -
      instance_terminated          -
      target_registered            "target_group_arn" or "load_balancer" (Classic ELB name); "port"
      target_deregistered          the same; the target now drains for the deregistration delay (E2)
      target_removed               the same; draining is over, the target is gone
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1",
                 health_interval: float | None = None, time_scale: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.state = LayerState(time_scale=time_scale, health_interval=health_interval)
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._moto_app = DomainDispatcherApplication(create_backend_app)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> EmulatedAWS:
        """Listen on host:port (0: any free port) and serve; raises OSError if the port is taken."""
        if runtime.active() is not None:
            raise AlreadyRunning("an EmulatedAWS is already running in this process; stop it first")
        # Bind first, ourselves: werkzeug's make_server exits the process on a taken port.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((self.host, self.port))
            sock.listen(128)
            self._server = make_server(self.host, sock.getsockname()[1], self._app, threaded=True,
                                       request_handler=_QuietHandler, fd=sock.fileno())
        self.port = self._server.server_address[1]
        moto_seam.install()
        runtime.activate(self.state)
        moto_api_backend.reset()
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._server.serve_forever, name="localcloud-aws-http", daemon=True),
                         threading.Thread(target=self._tick_loop, name="localcloud-aws-clock", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("emulated AWS listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None
        runtime.activate(None)

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise NotStarted("EmulatedAWS.endpoint needs start() first")
        return f"http://{self.host}:{self.port}"

    # -- control ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Wipe every moto resource and the layer's timers, forced health, faults and events; the clock goes
        back to the real one."""
        with self.state.lock:
            moto_api_backend.reset()
            self.state.clock = time.monotonic
            self.state.reset()

    def use_clock(self, clock: Callable[[], float] | None) -> None:
        """Drive the emulated world from `clock` (seconds, monotonic) until the next reset(); None: the real one.

        An in-process test gives the emulator and the deployer's runner the same fake clock, so a wait's sleep
        moves the emulated world on instead of spinning while it stands still.
        """
        with self.state.lock:
            self.state.clock = clock or time.monotonic

    def set_target_health(self, instance_id: str, state: str | None, target_group_arn: str | None = None) -> None:
        """Force a target's health: "healthy" | "unhealthy"; None returns it to the timed model (E1)."""
        self.state.set_target_health(instance_id, state, target_group_arn)

    def configure_faults(self, throttle_fraction: float = 0.0, latency_s: float = 0.0,
                         exit_standby_contention_once: bool = False, conditional_conflicts: int = 0,
                         insufficient_capacity_zones: list[str] | None = None, vcpu_limit: int | None = None,
                         broken_launch_templates: list[str] | None = None,
                         tag_visibility_delay_s: float = 0.0, put_events_failures: int = 0,
                         reregistered_standby_stuck: bool = False) -> None:
        """Replace every fault setting. `conditional_conflicts=N`: the next N conditional PutObject requests
        (If-Match or If-None-Match) answer 409 ConditionalRequestConflict and write nothing (X2).
        A15, failed launches (Failed scaling activities, retried by the group): `insufficient_capacity_zones`
        (zone names), `vcpu_limit` (vCPUs of running instances, null: none), `broken_launch_templates`
        (launch template ids or names). X1: `tag_visibility_delay_s`, AWS seconds a new EC2 tag stays
        invisible to DescribeTags and tag filters. `put_events_failures=N`: the next N EventBridge PutEvents
        requests answer 200 with every entry failed, ThrottlingException (events_faults.py).
        `reregistered_standby_stuck`: E8's pessimistic reading, an instance whose target was registered again
        while it drained for EnterStandby stays EnteringStandby (unverified either way on AWS)."""
        with self.state.lock:
            self.state.faults.configure(throttle_fraction, latency_s, exit_standby_contention_once,
                                        conditional_conflicts, insufficient_capacity_zones, vcpu_limit,
                                        broken_launch_templates, tag_visibility_delay_s, put_events_failures,
                                        reregistered_standby_stuck)

    def configure_apps(self, boot_seconds: float = 0.0, broken_launches: int = 0) -> None:
        """E5, until the next reset(): instances launched from now on answer health checks only `boot_seconds`
        AWS seconds after launch; the next `broken_launches` never answer (apps.py). Replaces both settings."""
        with self.state.lock:
            self.state.apps.configure(boot_seconds, broken_launches)

    def post_console(self, instance_id: str, output: str) -> None:
        """What a machine wrote to its console: GetConsoleOutput answers it from now on (console.py)."""
        if not isinstance(instance_id, str) or not instance_id or not isinstance(output, str):
            raise BadControlRequest("instance_id must be a non-empty string and output a string")
        console.store(self.state, instance_id, output)

    def set_app_up(self, instance_id: str, up: bool) -> None:
        """E5: from now on the app on `instance_id` answers health checks (True) or fails them (False)."""
        if not isinstance(instance_id, str) or not instance_id or not isinstance(up, bool):
            raise BadControlRequest("instance_id must be a non-empty string and up a boolean")
        with self.state.lock:
            self.state.apps.set_up(instance_id, up, self.state.now())

    def configure_time(self, time_scale: float | None = None, health_interval: float | None = None) -> None:
        """Change the clock until the next reset() (which restores the constructor's values)."""
        self.state.configure_time(time_scale, health_interval)

    def configure_alarms(self, evaluate: bool = True) -> None:
        """W2, until the next reset(): `evaluate=False` stops alarm evaluation, so alarms keep whatever state
        PutMetricAlarm or SetAlarmState gives them (plain moto's behaviour), for tests that drive alarm states
        by hand for longer than one evaluation interval."""
        if not isinstance(evaluate, bool):
            raise BadControlRequest("evaluate must be a boolean")
        with self.state.lock:
            self.state.alarms_evaluate = evaluate

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(event)` for every event from now on; subscriptions survive reset()."""
        self.state.subscribe(callback)

    def unsubscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.state.unsubscribe(callback)

    def call_counts(self) -> dict[str, int]:
        """Calls since the last reset, per "service:Action" (Auto Scaling, ELB, EC2), throttled ones included."""
        with self.state.lock:
            return dict(self.state.calls)

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return self.state.events_after(after)

    def tick(self) -> None:
        """Advance the time-based model now (the clock thread also does it every TICK_SECONDS)."""
        with self.state.lock:
            targets.expire_draining(self.state)
            autoscaling.tick(self.state)
            refresh.tick(self.state)  # A16
            warm.tick(self.state, autoscaling.LAUNCH_SECONDS)  # A17
            alarms.tick(self.state)  # W2
        self.state.deliver()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # keep the clock alive; the failure is a layer bug worth a traceback
                log.exception("emulated AWS clock tick failed")

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_localcloud/"):
            return self._control(environ, start_response)
        service, region = _scope_of(environ)
        action = None
        body = b""
        if service in COUNTED_SERVICES:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
            self.state.count_call(f"{service}:{action}")
        faults = self.state.faults
        if faults.latency_s:
            time.sleep(faults.latency_s)  # outside the lock: latency must not serialise other clients
        with self.state.lock:
            if service in THROTTLED_SERVICES and faults.should_throttle():
                log.info("fault injection: throttling %s %s", service, action)
                status, headers, chunks = "400 Bad Request", [("Content-Type", "text/xml")], [
                    _xml_error("Throttling", "Rate exceeded")]
            elif (service == "s3" and s3_conditional.is_conditional_put_object(environ)
                  and faults.take_conditional_conflict()):
                # X2: a conflicting write in flight. Answered in front of moto: nothing is written.
                log.info("fault injection: 409 ConditionalRequestConflict for PUT %s", environ.get("PATH_INFO"))
                status, headers, chunks = s3_conditional.conflict_response(environ)
            elif (service == "events" and events_faults.is_put_events(environ)
                  and faults.take_put_events_failure()):
                log.info("fault injection: PutEvents answered with every entry failed")
                request = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                status, headers, chunks = events_faults.failed_entries_response(request)
            else:
                targets.expire_draining(self.state)
                autoscaling.tick(self.state)
                refresh.tick(self.state)  # A16
                warm.tick(self.state, autoscaling.LAUNCH_SECONDS)  # A17
                alarms.tick(self.state)  # W2
                status, headers, chunks = self._call_ec2(environ, action, region or self.region, body) \
                    if service == "ec2" else faults_asg.around(self.state, service, action, environ, self._call_moto)
        self.state.deliver()
        start_response(status, headers)
        return chunks

    def _call_ec2(self, environ: dict[str, Any], action: str | None, region: str, body: bytes) -> Any:
        """X1 (fault tag_visibility_delay_s): new tags stay invisible to DescribeTags / DescribeInstances."""
        if action == "CreateTags":
            written = tag_delay.before_create(self.state, region, body)
            status, headers, chunks = self._call_moto(environ)
            if written and status.startswith("200"):
                tag_delay.after_create(self.state, written)
            return status, headers, chunks
        if action == "GetConsoleOutput":
            posted = console.answer(self.state, body)
            if posted is not None:
                return posted
        if action in tag_delay.READS:
            with tag_delay.hidden(self.state, region):
                return self._call_moto(environ)
        return self._call_moto(environ)

    def _call_moto(self, environ: dict[str, Any]) -> Any:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[Any], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        try:
            result = self._moto_app(environ, capture)
            chunks = [b"".join(result)]
            if hasattr(result, "close"):
                result.close()
            return captured["status"], captured["headers"], chunks
        except Exception:
            # A11: never an HTML 500 page. An unexpected moto failure is AWS's InternalFailure.
            log.exception("moto failed on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return "500 Internal Server Error", [("Content-Type", "text/xml")], [
                _xml_error("InternalFailure", "The request processing has failed because of an unknown error.")]

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        try:
            if method == "GET" and path == "/_localcloud/events":
                query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
                try:
                    after = int(query.get("after", ["0"])[0])
                except ValueError:
                    raise BadControlRequest("after must be an integer") from None
                self.tick()
                events = self.events(after)
                last = events[-1]["seq"] if events else after
                return self._json(start_response, "200 OK", {"events": events, "last": last})
            if method == "GET" and path == "/_localcloud/calls":
                return self._json(start_response, "200 OK", {"calls": self.call_counts()})
            if method != "POST":
                return self._json(start_response, "405 Method Not Allowed", {"error": "use POST"})
            payload = self._read_json(environ)
            if path == "/_localcloud/target-health":
                self.set_target_health(payload.get("instance_id"), payload.get("state"),
                                       payload.get("target_group_arn"))
            elif path == "/_localcloud/reset":
                self.reset()
            elif path == "/_localcloud/faults":
                self.configure_faults(**payload)
            elif path == "/_localcloud/apps":
                self.configure_apps(**payload)
            elif path == "/_localcloud/app":
                self.set_app_up(payload.get("instance_id"), payload.get("up"))
            elif path == "/_localcloud/alarms":
                self.configure_alarms(**payload)
            elif path == "/_localcloud/console":
                self.post_console(payload.get("instance_id"), payload.get("output"))
            elif path == "/_localcloud/time":
                self.configure_time(payload.get("time_scale"), payload.get("health_interval"))
            else:
                return self._json(start_response, "404 Not Found", {"error": f"unknown control path {path}"})
            return self._json(start_response, "200 OK", {"ok": True})
        except (BadControlRequest, TypeError, ValueError) as exc:
            return self._json(start_response, "400 Bad Request", {"error": str(exc)})

    @staticmethod
    def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            payload = json.loads(raw.decode("utf-8") or "{}")
        except ValueError:
            raise BadControlRequest("the body must be JSON") from None
        if not isinstance(payload, dict):
            raise BadControlRequest("the body must be a JSON object")
        return payload

    @staticmethod
    def _json(start_response: Callable[..., Any], status: str, payload: dict[str, Any]) -> list[bytes]:
        body = json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
