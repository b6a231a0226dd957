"""The sample service the tests, the demo and the local fleet deploy: a tiny HTTP app built FROM scratch.

Nothing can be pulled from the internet here, so the image is the host's static busybox plus a web root:
`/` answers the version, `/health` answers 200 (an "unhealthy" version has no /health, so it answers 404; a
"failing" version, any whose name ends in `-bad` such as `2.0-bad`, passes /health but answers `/` with a 500
from a CGI script, as a release that breaks real requests and not its health check), and it listens on $APP_PORT (default 8080, every address) with host networking, because the engine runs with
--bridge=none; on a local machine the load balancer reaches it at the machine's address.

    digests = build_and_push("127.0.0.1:5000", versions=("1.0", "2.0"))   # {version: "sha256:..."}
    write_bundle(folder, "127.0.0.1:5000")   # docker-compose.yml (image <registry>/web:live) + manifest.json
"""

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile

from agent import contract

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"
# A version named <anything>-bad answers 5xx on `/` and 200 on /health (issue 12: what a bake must catch).
FAILING_SUFFIX = "-bad"
# busybox httpd runs /cgi-bin/index.cgi for `/` when there is no index.html; a leading "Status:" line sets the
# response's status.
_FAILING_CGI = ("#!/bin/busybox sh\n"
                "printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\n%s\\n' {version}\n")


class SampleAppError(Exception):
    pass


def _docker(args, timeout=120, env=None):
    try:
        out = subprocess.run(["docker", *args], check=False, capture_output=True, text=True, timeout=timeout,
                             env=env)
    except subprocess.TimeoutExpired:
        raise SampleAppError(f"docker {' '.join(args)} did not finish within {timeout}s") from None
    if out.returncode != 0:
        raise SampleAppError(f"docker {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def failing(version):
    """True for the variant that passes its health URL but answers 500 on `/` (FAILING_SUFFIX)."""
    return version.endswith(FAILING_SUFFIX)


def _context(folder, version, healthy):
    shutil.copy(os.path.join(HERE, "Dockerfile"), folder)
    shutil.copy(BUSYBOX, os.path.join(folder, "busybox"))
    www = os.path.join(folder, "www")
    os.makedirs(www)
    if failing(version):
        os.makedirs(os.path.join(www, "cgi-bin"))
        script = os.path.join(www, "cgi-bin", "index.cgi")
        with open(script, "w") as f:
            f.write(_FAILING_CGI.format(version=shlex.quote(version)))
        os.chmod(script, 0o755)  # COPY keeps the mode: httpd runs only executable CGI scripts
    else:
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write(version + "\n")
    if healthy:
        with open(os.path.join(www, "health"), "w") as f:
            f.write("ok\n")


def build_and_push(registry, repository="web", versions=("1.0", "2.0"), unhealthy_versions=()):
    """Build one image per version, push each as <registry>/<repository>:<version>; return {version: digest}.
    Versions in `unhealthy_versions` fail their health check; versions named *-bad answer 500 on `/`."""
    if not os.path.exists(BUSYBOX):
        raise SampleAppError(f"{BUSYBOX} is missing: install busybox-static")
    # The legacy builder: BuildKit would try to resolve frontends from the internet.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    digests = {}
    for version in versions:
        ref = f"{registry}/{repository}:{version}"
        with tempfile.TemporaryDirectory(prefix="bg-sampleapp-") as folder:
            _context(folder, version, healthy=version not in unhealthy_versions)
            _docker(["build", "-q", "-t", ref, folder], env=env)
        _docker(["push", ref])
        repo_digests = json.loads(_docker(["image", "inspect", "--format", "{{json .RepoDigests}}", ref]))
        name = f"{registry}/{repository}"
        digest = [d.split("@", 1)[1] for d in repo_digests if d.split("@", 1)[0] == name]
        if not digest:
            raise SampleAppError(f"pushed {ref} but the engine reports no digest for it: {repo_digests}")
        digests[version] = digest[0]
        log.info("pushed %s (%s)", ref, digests[version])
    return digests


# Issue 16: a worker of the same image, marked to run only while the instance is InService (agent/workers.py).
# It stands for a queue consumer; busybox sleeps in a loop, so `docker stop` ends it at once (SIGKILL-free:
# sh traps nothing, PID 1 ignores SIGTERM, hence the stop signal).
WORKER_SERVICE = """  worker:
    image: "{registry}/{repository}:{fixed_tag}"
    network_mode: host
    restart: unless-stopped
    stop_signal: SIGKILL
    labels:
      bluegreen.when: in-service
    command: ["/bin/busybox", "sh", "-c", "while true; do {consume}sleep 0.2; done"]
"""
# With a queue port: each round takes one message from the fleet's shared queue (localcloud/fleet/queue.py),
# as this machine (its hostname is its instance id).
CONSUME = ("/bin/busybox wget -q -O /dev/null 'http://127.0.0.1:{port}/take?who='$$(/bin/busybox hostname) "
           "|| true; ")


def write_bundle(folder, registry, repository="web", fixed_tag="live", manifest=True, worker=False,
                 queue_port=None):
    """Write the bootstrap bundle into folder: docker-compose.yml and, unless told not to (push-bootstrap
    writes its own), the manifest.json the agent verifies (the contract's format, S2). Returns the paths.
    worker: add a `worker` service marked bluegreen.when: in-service (issue 16)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(HERE, "docker-compose.yml.tmpl")) as f:
        compose = f.read().format(registry=registry, repository=repository, fixed_tag=fixed_tag)
    if worker:
        consume = CONSUME.format(port=queue_port) if queue_port else ""
        compose += WORKER_SERVICE.format(registry=registry, repository=repository, fixed_tag=fixed_tag,
                                         consume=consume)
    compose_path = os.path.join(folder, contract.COMPOSE_FILE)
    with open(compose_path, "w") as f:
        f.write(compose)
    if not manifest:
        return [compose_path]
    doc = contract.build_manifest([(contract.COMPOSE_FILE, contract.sha256_hex(compose.encode()))])
    manifest_path = os.path.join(folder, contract.MANIFEST)
    with open(manifest_path, "wb") as f:
        f.write(contract.manifest_bytes(doc))
    return [compose_path, manifest_path]
