"""An IMDSv2 emulator answering for one emulated instance, so an agent can be pointed at it with
AWS_EC2_METADATA_SERVICE_ENDPOINT (aws-rules.md I3, C1). Many run at once, one per emulated instance.

    imds = IMDSServer("i-0abc...", region="us-east-1", aws_endpoint="http://127.0.0.1:PORT").start()
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
    imds.disabled = True          # every request answers 403: the endpoint is turned off (I1)
    imds.fail_next(2, status=503) # the next two requests answer 503, as early in boot (I3)
    imds.stop()

What it enforces (I1): a token comes only from PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds
in 1..21600 (else 400); a GET without a valid, unexpired token answers 401. Paths (I2): instance-id,
placement/region, placement/availability-zone, the identity document, autoscaling/target-lifecycle-state,
which asks the emulated AWS (DescribeAutoScalingInstances) every time, so it follows the group, and, given a
role, iam/security-credentials/ROLE (the instance profile's credentials).
"""

import json
import logging
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account
MAX_TTL = 21600
TOKEN_PATH = "/latest/api/token"

# The target state of each Auto Scaling lifecycle state, as the instance sees it (A6): an instance held in
# Pending:Wait by a launch hook is on its way to InService.
TARGET_STATES = {
    "Pending": "InService", "Pending:Wait": "InService", "Pending:Proceed": "InService",
    "InService": "InService",
    "EnteringStandby": "Standby", "Standby": "Standby",
    "Detaching": "Detached", "Detached": "Detached",
    "Terminating": "Terminated", "Terminating:Wait": "Terminated", "Terminating:Proceed": "Terminated",
    "Terminated": "Terminated",
}


class IMDSServer:
    def __init__(self, instance_id, region="us-east-1", aws_endpoint=None, host="127.0.0.1", port=0, role=None):
        self.instance_id = instance_id
        # The instance profile's role (I2): iam/security-credentials/ROLE answers credentials the emulated AWS
        # accepts, so an agent on a machine finds them the way it does on EC2, with no keys injected.
        self.role = role
        self.region = region
        self.aws_endpoint = aws_endpoint
        self.disabled = False
        self._host, self._port = host, port
        self._tokens = {}
        self._failures = []
        self._down_until, self._down_status = 0.0, 503
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self._asg = None
        self.requests = 0

    # -- test controls -------------------------------------------------------------------------------------
    def fail_next(self, count, status=503):
        """Answer the next `count` requests with `status` (e.g. 503 early in boot, aws-rules.md I3)."""
        with self._lock:
            self._failures.extend([status] * count)

    def fail_for(self, seconds, status=503):
        """Answer every request with `status` for `seconds` (an IMDS outage, aws-rules.md I3); 0 ends one."""
        with self._lock:
            self._down_until, self._down_status = time.monotonic() + seconds, status

    def expire_tokens(self):
        """Forget every issued token: the next GET with an old one answers 401 (I1)."""
        with self._lock:
            self._tokens.clear()

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def endpoint(self):
        if self._httpd is None:
            raise RuntimeError("IMDSServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, sock=None):
        """Serve on host:port, or on `sock`, a listening socket made elsewhere (in a machine's network
        namespace, on 169.254.169.254:80: localcloud/machines.py)."""
        server = self

        class Handler(_Handler):
            imds = server

        server_class = ThreadingHTTPServer
        if ":" in self._host:  # an IPv6 address, as IMDS's fd00:ec2::254 (F19)
            class server_class(ThreadingHTTPServer):
                address_family = socket.AF_INET6
        if sock is not None:
            self._httpd = server_class(sock.getsockname()[:2], Handler, bind_and_activate=False)
            self._httpd.socket.close()
            self._httpd.socket = sock
        else:
            self._httpd = server_class((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=f"imds-{self.instance_id}",
                                        daemon=True)
        self._thread.start()
        log.info("IMDS for %s at %s", self.instance_id, self.endpoint)
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- answers --------------------------------------------------------------------------------------------
    def _issue_token(self, ttl):
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def _token_valid(self, token):
        with self._lock:
            expiry = self._tokens.get(token or "")
        return expiry is not None and expiry > time.monotonic()

    def _next_failure(self):
        with self._lock:
            if self._failures:
                return self._failures.pop(0)
            return self._down_status if time.monotonic() < self._down_until else None

    def _autoscaling(self):
        if self._asg is None:
            import boto3  # lazily: only the lifecycle path needs it

            self._asg = boto3.client("autoscaling", region_name=self.region, endpoint_url=self.aws_endpoint,
                                     aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._asg

    def target_lifecycle_state(self):
        """The instance's target lifecycle state, or None when no group lists it (real IMDS answers 404)."""
        if not self.aws_endpoint:
            return None
        found = self._autoscaling().describe_auto_scaling_instances(InstanceIds=[self.instance_id])
        for item in found.get("AutoScalingInstances", []):
            return TARGET_STATES.get(item["LifecycleState"], item["LifecycleState"])
        return None

    def metadata(self, path):
        """Return the text answer for a GET path, or None for 404."""
        if path == "/latest/meta-data/instance-id":
            return self.instance_id
        if path == "/latest/meta-data/placement/region":
            return self.region
        if path == "/latest/meta-data/placement/availability-zone":
            return self.region + "a"
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps({
                "instanceId": self.instance_id, "region": self.region, "accountId": ACCOUNT_ID,
                "availabilityZone": self.region + "a", "architecture": "x86_64",
                "imageId": "ami-00000000", "instanceType": "t3.micro", "version": "2017-09-30",
            }, indent=2)
        if path == "/latest/meta-data/autoscaling/target-lifecycle-state":
            return self.target_lifecycle_state()
        if self.role and path.rstrip("/") == "/latest/meta-data/iam/security-credentials":
            return self.role
        if self.role and path == "/latest/meta-data/iam/security-credentials/" + self.role:
            return json.dumps(self.role_credentials(), indent=2)
        return None

    def role_credentials(self):
        """What EC2 serves for the instance profile's role: temporary keys, renewed well before they expire.
        The emulated AWS accepts any keys; these are made up per instance and never real ones."""
        now = time.time()
        return {"Code": "Success", "Type": "AWS-HMAC",
                "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "AccessKeyId": "ASIA" + self.instance_id.replace("-", "").upper()[:16].ljust(16, "X"),
                "SecretAccessKey": "emulated-" + self.instance_id,
                "Token": "emulated-session-token-" + self.instance_id,
                "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 6 * 3600))}


class _Handler(BaseHTTPRequestHandler):
    imds = None  # set per server by IMDSServer.start
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet by default; through logging, never a token
        log.debug("imds %s: " + fmt, self.imds.instance_id, *args)

    def _answer(self, status, body=""):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _precheck(self):
        self.imds.requests += 1
        if self.imds.disabled:
            self._answer(403, "Forbidden")  # I1: the endpoint is disabled for this instance
            return False
        failure = self.imds._next_failure()
        if failure is not None:
            self._answer(failure, "injected failure")
            return False
        return True

    def do_PUT(self):
        if not self._precheck():
            return
        if self.path != TOKEN_PATH:
            self._answer(404, "Not Found")
            return
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TTL:
            self._answer(400, "Bad Request")  # I1: the TTL header is required, 1..21600
            return
        token = self.imds._issue_token(ttl)
        self.send_response(200)
        self.send_header("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())

    def do_GET(self):
        if not self._precheck():
            return
        if not self.imds._token_valid(self.headers.get("X-aws-ec2-metadata-token")):
            self._answer(401, "Unauthorized")  # I1: IMDSv2 only
            return
        try:
            body = self.imds.metadata(self.path)
        except Exception as exc:  # noqa: BLE001 -- the emulated AWS failed: answer like a struggling IMDS, not a crash
            log.warning("imds %s: %s", self.imds.instance_id, exc)
            self._answer(500, "Internal Server Error")
            return
        if body is None:
            self._answer(404, "Not Found")
        else:
            self._answer(200, body)
