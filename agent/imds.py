"""The instance's identity from IMDSv2 (aws-rules.md I1-I3), in the manner of cloud-init's DataSourceEc2.

The token is PUT with a TTL and sent on every GET; 401 means it expired, so fetch a new one once; 403 means
the endpoint is disabled, so fail at once; connection errors and 5xx are retried with full-jitter backoff
under one overall deadline. The token never reaches a log.
"""

import json
import logging
import random
import time
from dataclasses import dataclass

from agent.errors import IdentityError

log = logging.getLogger(__name__)

ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"  # C1 / I3: the SDKs' own variable
# audit F19: botocore's endpoint mode, for IPv6-only subnets (the instance's HttpProtocolIpv6 must be enabled).
ENDPOINT_MODE_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
DEFAULT_ENDPOINT = "http://169.254.169.254"
IPV6_ENDPOINT = "http://[fd00:ec2::254]"
ENDPOINTS_BY_MODE = {"ipv4": DEFAULT_ENDPOINT, "ipv6": IPV6_ENDPOINT}
TOKEN_TTL = 21600
REQUEST_TIMEOUT = 2.0


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    account_id: str
    availability_zone: str


def endpoint_from_environ(environ):
    if environ.get(ENDPOINT_ENV):
        return environ[ENDPOINT_ENV]
    mode = environ.get(ENDPOINT_MODE_ENV) or "IPv4"
    if mode.lower() not in ENDPOINTS_BY_MODE:
        # botocore refuses it too (InvalidIMDSEndpointModeError): a typo must not silently mean IPv4.
        raise IdentityError(f"{ENDPOINT_MODE_ENV}={mode!r} is not IPv4 or IPv6")
    return ENDPOINTS_BY_MODE[mode.lower()]


class _Retryable(Exception):
    pass


class IMDSClient:
    """session: a requests.Session (injected); sleep/clock/rand injectable so tests control time."""

    def __init__(self, session, endpoint=None, deadline=120.0, sleep=time.sleep, clock=time.monotonic,
                 rand=random.random, base_delay=0.2, max_delay=5.0):
        self.session = session
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.deadline = deadline
        self._sleep, self._clock, self._rand = sleep, clock, rand
        self._base, self._cap = base_delay, max_delay
        self._token = None
        self._until = None

    @classmethod
    def from_environ(cls, session, environ, **kwargs):
        """The endpoint as botocore chooses it: the explicit endpoint, else the endpoint mode's (IPv4 default)."""
        return cls(session, endpoint=endpoint_from_environ(environ), **kwargs)

    def identity(self):
        """Instance id, Region, account and zone from the identity document (I2)."""
        try:
            doc = json.loads(self.get("/latest/dynamic/instance-identity/document"))
            return Identity(instance_id=doc["instanceId"], region=doc["region"],
                            account_id=doc.get("accountId", ""), availability_zone=doc.get("availabilityZone", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"IMDS identity document is malformed: {exc}") from None

    def get(self, path, missing_ok=False):
        self._until = self._clock() + self.deadline
        return self._with_retries(lambda: self._get_once(path, missing_ok), "GET " + path)

    # -- internals ------------------------------------------------------------------------------------------
    def _with_retries(self, call, what):
        attempt, last = 0, None
        while True:
            try:
                return call()
            except _Retryable as exc:
                last = str(exc)
            attempt += 1
            delay = self._rand() * min(self._cap, self._base * (2 ** attempt))  # full jitter
            if self._clock() + delay > self._until:
                raise IdentityError(f"IMDS at {self.endpoint} did not answer {what} within {self.deadline:.0f}s "
                                    f"(last: {last})")
            log.debug("IMDS %s: %s; retrying in %.2fs", what, last, delay)
            self._sleep(delay)

    def _request(self, method, path, headers):
        import requests  # lazily: keeps `--help` fast

        try:
            resp = self.session.request(method, self.endpoint + path, headers=headers, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None  # I3: early boot
        if resp.status_code == 403:
            # I1: IMDS is disabled for this instance; retrying cannot help.
            raise IdentityError(f"IMDS at {self.endpoint} answered 403: the metadata endpoint is disabled "
                                "for this instance")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Retryable(f"HTTP {resp.status_code}")
        return resp

    def _fetch_token(self):
        resp = self._request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)})
        if resp.status_code != 200 or not resp.text:
            raise IdentityError(f"IMDS token request answered HTTP {resp.status_code}")
        self._token = resp.text
        return self._token

    def _get_once(self, path, missing_ok):
        token = self._token or self._fetch_token()
        resp = self._request("GET", path, {"X-aws-ec2-metadata-token": token})
        if resp.status_code == 401:
            # I1: the token expired or IMDS restarted: one fresh token, then the same request again.
            log.debug("IMDS answered 401 for %s; fetching a new token", path)
            self._token = None
            resp = self._request("GET", path, {"X-aws-ec2-metadata-token": self._fetch_token()})
            if resp.status_code == 401:
                raise _Retryable("HTTP 401 with a fresh token")
        if resp.status_code == 404:
            if missing_ok:
                return None
            raise IdentityError(f"IMDS has no {path} (HTTP 404)")
        if resp.status_code != 200:
            raise IdentityError(f"IMDS answered HTTP {resp.status_code} for {path}")
        return resp.text
