"""What the pre-flight and doctor tests share: the pair as a refusal must leave it, and where an image can live for
the image check: moto's ECR, or a registry served by the test itself (the Docker registry HTTP API V2's manifest
HEAD, optionally behind the anonymous bearer-token flow)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                                  "digest": "sha256:" + "0" * 64}, "layers": []})


def ecr_image(session, repository, tags):
    """Create an ECR repository holding `tags`; return its URI (what bluegreen:image names)."""
    ecr = session.client("ecr")
    uri = ecr.create_repository(repositoryName=repository)["repository"]["repositoryUri"]
    for tag in tags:
        ecr.put_image(repositoryName=repository, imageManifest=MANIFEST, imageTag=tag)
    return uri


@contextlib.contextmanager
def local_registry(repos, token=None):
    """A registry on 127.0.0.1 with {repository: {tags}}; with `token`, manifests need `Bearer <token>`, which
    /token hands out anonymously for a scope, as Docker Hub's flow does. Yields host:port."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):  # the token endpoint
            url = urlparse(self.path)
            scope = parse_qs(url.query).get("scope", [""])[0]
            if url.path == "/token" and scope.startswith("repository:") and scope.endswith(":pull"):
                return self._answer(200, json.dumps({"token": token}).encode())
            return self._answer(404)

        def do_HEAD(self):
            seen.append(self.path)
            path = self.path
            if not (path.startswith("/v2/") and "/manifests/" in path):
                return self._answer(404)
            repo, _, tag = path[len("/v2/"):].partition("/manifests/")
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                realm = f"http://{self.headers['Host']}/token"
                challenge = f'Bearer realm="{realm}",service="stub",scope="repository:{repo}:pull"'
                return self._answer(401, headers=[("WWW-Authenticate", challenge)])
            if tag in repos.get(repo, ()):
                return self._answer(200, headers=[("Docker-Content-Digest", "sha256:" + "1" * 64)])
            return self._answer(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def unreachable_registry():
    """host:port on 127.0.0.1 where nothing listens (a port just bound and released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def pair_state(fleet):
    """What a refusal must leave as it was: each group's sizes, tags, processes, settings and instances."""
    out = {}
    for color in ("blue", "green"):
        g = fleet.group(color)
        out[color] = {k: g.get(k) for k in ("MinSize", "DesiredCapacity", "MaxSize", "HealthCheckType",
                                            "VPCZoneIdentifier", "NewInstancesProtectedFromScaleIn")}
        out[color]["tags"] = sorted((t["Key"], t["Value"]) for t in g["Tags"])
        out[color]["suspended"] = sorted(p["ProcessName"] for p in g["SuspendedProcesses"])
        out[color]["instances"] = sorted((i["InstanceId"], i["LifecycleState"], i.get("ProtectedFromScaleIn"))
                                         for i in g["Instances"])
    return out


def lock_objects(fleet):
    """The state store's objects of service demo (lock.json, the journal): none before any operation."""
    s3 = fleet.session.client("s3")
    listed = s3.list_objects_v2(Bucket="bluegreen-bootstrap", Prefix="demo/.bluegreen/")
    return [o["Key"] for o in listed.get("Contents", [])]


def name_image(fleet, image):
    fleet.asg.create_or_update_tags(Tags=[
        {"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": "bluegreen:image", "Value": image,
         "PropagateAtLaunch": False} for name in fleet.svc["groups"].values()])
