"""HAProxy (Debian's 2.6) as the emulated load balancer, driven through its runtime API.

The load balancer stands for an ALB in front of one target group (E4: the union of the healthy targets of
every attached group). Servers are added and removed at run time over the admin socket, never by rewriting
the configuration, so a change never restarts HAProxy and never drops a connection.

A server is added in forced drain (weight 0: checked, never routed to) with its health forced down, so it only
counts as up after `rise` consecutive passing checks, as a target only turns healthy after HealthyThreshold-
Count checks (E1). The supervisor turns routing on (`ready`) only once the TARGET GROUP reports the target
healthy, and back to drain when the target group starts draining it (E2), so HAProxy never routes to an
instance AWS would not route to.
"""

import logging
import os
import shutil
import socket
import subprocess
import tempfile
from typing import NamedTuple

from localcloud.fleet import FleetError, FleetTimeout
from localcloud.polling import WaitTimeout, wait_until

log = logging.getLogger(__name__)

BACKEND = "app"

# `show servers state` columns (HAProxy 2.6 format 1).
_OP_STATE_RUNNING = 2
_CHECK_RESULT_UNKNOWN = 0
_CHECK_RESULT_FAILED = 2
_ADMIN_FORCED_MAINT = 0x01
_ADMIN_INHERITED_MAINT = 0x02
_ADMIN_FORCED_DRAIN = 0x08

_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    stats timeout 10s
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 2s
    # No `option redispatch` and no retries on another server: an ALB does not retry a failed request
    # elsewhere, so neither does this one, and a routing mistake shows up as a failed request.
    retries 1

frontend lb
    bind fd@${{BLUEGREEN_LB_FD}}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET {check_path}
    http-check expect status 200
{zones}"""

# E6: one load balancer node per zone, for that zone's clients: its own port and its own backend, holding a copy
# of every server without checks (HAProxy 2.6 cannot track a dynamic server). The copies are routed or drained
# from the target group's health and the cross-zone setting (plan.routes_by_zone), never from checks of their own.
_ZONE = """
frontend lb_{zone}
    bind fd@${{BLUEGREEN_LB_FD_{index}}}
    default_backend {backend}

backend {backend}
    balance roundrobin
"""


class HAProxyError(FleetError):
    pass


class ServerState(NamedTuple):
    name: str
    address: str
    port: int
    routed: bool  # ready: receives new requests (not drained, not in maintenance)
    up: bool  # its own health checks currently pass (after `rise` consecutive successes)
    checked: bool  # at least one check has completed
    failing: bool  # the last check failed
    sessions: int  # requests in flight


class LoadBalancer:
    """One HAProxy process listening on host:port (port 0: an ephemeral port, passed in as a bound socket)."""

    def __init__(self, state_dir, host="127.0.0.1", port=0, check_path="/health", check_interval=1.0,
                 rise=2, fall=2, haproxy_bin="haproxy", zones=()):
        self.state_dir = os.path.abspath(state_dir)
        self.host = host
        self._requested_port = port
        self.check_path = check_path
        self.check_interval = check_interval
        self.rise = rise
        self.fall = fall
        self.haproxy_bin = haproxy_bin
        self.port = None  # type: Optional[int]
        self._proc = None  # type: Optional[subprocess.Popen]
        self._runtime_dir = None  # type: Optional[str]
        self.socket_path = None  # type: Optional[str]
        # E6: Availability Zones with a node (port) of their own; empty: one node for every client (cross-zone)
        self.zones = list(zones)
        self.zone_ports = {}  # type: Dict[str, int]

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    def start(self, deadline_s=15.0):
        binary = shutil.which(self.haproxy_bin)
        if not binary:
            raise HAProxyError("haproxy is not installed: run scripts/host-setup.sh (apt-get install haproxy)")
        os.makedirs(self.state_dir, exist_ok=True)
        # Unix socket paths must stay under ~108 bytes; a project or pytest folder can be deeper than that.
        self._runtime_dir = tempfile.mkdtemp(prefix="bg-lb-")
        self.socket_path = os.path.join(self._runtime_dir, "admin.sock")
        config = os.path.join(self.state_dir, "haproxy.cfg")
        zones = "".join(_ZONE.format(zone=zone, index=i, backend=zone_backend(zone))
                        for i, zone in enumerate(self.zones))
        with open(config, "w") as f:
            f.write(_CONFIG.format(socket=self.socket_path, backend=BACKEND, check_path=self.check_path,
                                   zones=zones))
        # Bind here and hand HAProxy the listening sockets (`bind fd@N`): port 0 then works without a race.
        listeners = []
        try:
            listener = _listen(self.host, self._requested_port)
            listeners.append(listener)
            env = dict(os.environ, BLUEGREEN_LB_FD=str(listener.fileno()))
            for i, zone in enumerate(self.zones):
                zone_listener = _listen(self.host, 0)
                listeners.append(zone_listener)
                self.zone_ports[zone] = zone_listener.getsockname()[1]
                env[f"BLUEGREEN_LB_FD_{i}"] = str(zone_listener.fileno())
            self.port = listener.getsockname()[1]
            with open(os.path.join(self.state_dir, "haproxy.log"), "ab") as logfile:
                self._proc = subprocess.Popen(
                    [binary, "-db", "-f", config], pass_fds=tuple(s.fileno() for s in listeners),
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)
        finally:
            for item in listeners:
                item.close()  # HAProxy holds its own copies
        try:
            wait_until(self._show_info, "haproxy's admin socket", deadline_s, 0.05,
                       until=lambda answer: not isinstance(answer, HAProxyError))
        except WaitTimeout as exc:
            self.stop()
            raise FleetTimeout(f"haproxy admin socket {self.socket_path} did not answer within {deadline_s}s; "
                               f"last: {exc.last}") from None
        log.info("load balancer listening on %s (haproxy pid %d)", self.url, self._proc.pid)
        return self

    def _show_info(self):
        """The admin socket's `show info`, or the error it gave while HAProxy is still starting."""
        if self._proc.poll() is not None:
            raise HAProxyError(f"haproxy exited with {self._proc.returncode} at start; "
                               f"see {self.state_dir}/haproxy.log")
        try:
            return self.command("show info")
        except HAProxyError as exc:
            return exc

    def stop(self, deadline_s=10.0):
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(deadline_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(deadline_s)
        self._proc = None
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    def command(self, line, timeout=5.0):
        """Send one runtime-API command and return its answer."""
        if not self.socket_path:
            raise HAProxyError("haproxy is not started")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
            sock.sendall(line.encode() + b"\n")
            # HAProxy closes the connection after its answer; each recv is bounded by the socket's timeout.
            chunks = list(iter(lambda: sock.recv(65536), b""))
        except OSError as exc:
            raise HAProxyError(f"haproxy runtime API ({line.split()[0]}): {exc}")
        finally:
            sock.close()
        return b"".join(chunks).decode(errors="replace")

    def _checked(self, line):
        answer = self.command(line).strip()
        lowered = answer.lower()
        if "unknown" in lowered or "error" in lowered or "no such" in lowered or "not found" in lowered \
                or "require" in lowered or "cannot" in lowered or "invalid" in lowered:
            raise HAProxyError(f"haproxy refused {line!r}: {answer}")
        return answer

    # --- servers -----------------------------------------------------------------------------------------

    def add_server(self, name, address, port, check_interval=None, rise=None, fall=None):
        """Add a server that is checked but not routed to; idempotent for the same address.

        The check settings default to the balancer's; the supervisor passes the target group's own
        HealthCheckIntervalSeconds, HealthyThresholdCount and UnhealthyThresholdCount (E1).
        """
        current = self.servers().get(name)
        if current and (current.address, current.port) == (address, port):
            return
        if current:
            self.remove_server(name)
        target = f"{BACKEND}/{name}"
        # Dynamic servers do not inherit `default-server`: the check settings go on the line itself.
        inter_ms = max(100, int((check_interval or self.check_interval) * 1000))
        rise, fall = rise or self.rise, fall or self.fall
        self._checked(f"add server {target} {address}:{port} check inter {inter_ms} fastinter {inter_ms} "
                      f"downinter {inter_ms} rise {rise} fall {fall}")
        # They also start UP and in maintenance. Drain (weight 0) so nothing is routed before the target group
        # itself calls the target healthy, and force health down (only effective out of maintenance) so it
        # takes `rise` passing checks to count as up, like E1's HealthyThresholdCount.
        self._checked(f"set server {target} state drain")
        self._checked(f"set server {target} health down")
        self._checked(f"enable health {target}")
        for zone in self.zones:
            copy = f"{zone_backend(zone)}/{name}"
            self._checked(f"add server {copy} {address}:{port}")
            self._checked(f"set server {copy} state drain")  # out of maintenance, not routed (E6)
        log.info("load balancer: added %s at %s:%d (checked, not routed)", name, address, port)

    def route(self, name):
        """Send new requests to this server (the target group reports it healthy)."""
        self._checked(f"set server {BACKEND}/{name} state ready")
        log.info("load balancer: routing to %s", name)

    def drain(self, name):
        """No new requests; in-flight ones finish (E2). Checks go on."""
        self._checked(f"set server {BACKEND}/{name} state drain")
        log.info("load balancer: draining %s", name)

    def reset_health(self, name):
        """Count the server as down until it passes `rise` checks again (a target registered anew starts at
        `initial`, E1). Requests in flight are not cut."""
        self._checked(f"set server {BACKEND}/{name} health down")

    def route_in_zone(self, zone, name, routed):
        """E6: the zone's node sends new requests to this server (routed) or none (drain; in flight finish)."""
        self._checked(f"set server {zone_backend(zone)}/{name} state {'ready' if routed else 'drain'}")
        log.info("load balancer: %s %s in zone %s", "routing to" if routed else "draining", name, zone)

    def zone_servers(self, zone):
        """E6: the zone node's copies, by name."""
        return self.servers(zone_backend(zone))

    def remove_server(self, name, deadline_s=10.0):
        """Take the server out for good: maintenance (no new requests), wait for in-flight ones, delete."""
        target = f"{BACKEND}/{name}"
        if name not in self.servers():
            return
        for zone in self.zones:
            self._remove(zone_backend(zone), name, deadline_s)
        self._checked(f"set server {target} state maint")
        self.wait_idle(name, deadline_s)
        # `del server` refuses while a connection (even an idle pooled one) is still attached: retry briefly.
        try:
            wait_until(lambda: self.command(f"del server {target}").strip(), f"haproxy to delete {target}",
                       deadline_s, 0.1, until=lambda answer: "deleted" in answer.lower() or "no such" in answer.lower())
        except WaitTimeout as exc:
            raise FleetTimeout(f"haproxy would not delete {target} within {deadline_s}s; "
                               f"last answer: {exc.last}") from None
        log.info("load balancer: removed %s", name)

    def _remove(self, backend, name, deadline_s):
        """Delete one zone copy (E6): maintenance, wait for in-flight requests, delete."""
        target = f"{backend}/{name}"
        if name not in self.servers(backend):
            return
        self._checked(f"set server {target} state maint")
        try:
            wait_until(lambda: self.servers(backend).get(name), f"no request in flight on {target}", deadline_s,
                       0.1, until=lambda state: state is None or state.sessions == 0)
            wait_until(lambda: self.command(f"del server {target}").strip(), f"haproxy to delete {target}",
                       deadline_s, 0.1, until=lambda answer: "deleted" in answer.lower() or "no such" in answer.lower())
        except WaitTimeout as exc:
            raise FleetTimeout(f"haproxy would not delete {target} within {deadline_s}s; last: {exc.last}") from None

    def stats(self):
        """`show stat`: one dict per frontend, backend and server row (HAProxy's counters, CSV columns)."""
        return _parse_csv(self.command("show stat"))

    def servers(self, backend=BACKEND):
        """Every server of the backend, by name."""
        sessions = {}
        for row in _parse_csv(self.command("show stat")):
            if row.get("# pxname") == backend and row.get("svname") not in ("BACKEND", "FRONTEND"):
                sessions[row["svname"]] = int(row.get("scur") or 0)
        result = {}  # type: Dict[str, ServerState]
        lines = self.command(f"show servers state {backend}").splitlines()
        header = None
        for line in lines:
            if line.startswith("# be_id"):
                header = line[2:].split()
                continue
            if not line.strip() or line.startswith("#") or header is None or line.strip() == "1":
                continue
            fields = dict(zip(header, line.split()))
            admin = int(fields["srv_admin_state"])
            name = fields["srv_name"]
            result[name] = ServerState(
                name=name,
                address=fields["srv_addr"],
                port=int(fields["srv_port"]),
                routed=not admin & (_ADMIN_FORCED_MAINT | _ADMIN_INHERITED_MAINT | _ADMIN_FORCED_DRAIN),
                up=int(fields["srv_op_state"]) == _OP_STATE_RUNNING,
                checked=int(fields["srv_check_result"]) != _CHECK_RESULT_UNKNOWN,
                failing=int(fields["srv_check_result"]) == _CHECK_RESULT_FAILED,
                sessions=sessions.get(name, 0),
            )
        return result

    def wait_idle(self, name, deadline_s=10.0, interval=0.1):
        """Wait until no request is in flight on this server (before its stack is stopped)."""
        try:
            wait_until(lambda: self.servers().get(name), f"no request in flight on {name}", deadline_s, interval,
                       until=lambda state: state is None or state.sessions == 0)
        except WaitTimeout as exc:
            raise FleetTimeout(f"server {name} still had {exc.last.sessions} requests in flight after "
                               f"{deadline_s}s") from None


def zone_backend(zone):
    """E6: the backend of one zone's node."""
    return f"{BACKEND}_{zone}"


def _listen(host, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise HAProxyError(f"cannot listen on {host}:{port}: {exc}")
    listener.listen(512)
    os.set_inheritable(listener.fileno(), True)
    return listener


def _parse_csv(text):
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]
