"""docker compose v2 (`docker compose`, the CLI plugin the baked image carries); one fixed project name.

No automatic fallback to a `docker-compose` found on PATH (audit F23): that is compose v1 on most hosts,
unmaintained since July 2023, and it names containers `proj_web_1` where v2 names them `proj-web-1`, so a host
that switched between the two would recreate every container. A workdir is run by one implementation: v2, or
exactly what `compose_command` names (e.g. the standalone v2 binary).

`up -d --remove-orphans` is idempotent by compose's own design: a service whose configuration and image did
not change is left running, so the same version again recreates nothing.
"""

import logging
import os
import shutil
import subprocess

from agent.contract import COMPOSE_FILE, TAG_IMAGE
from agent.errors import ComposeError
from agent.images import normalize_repository, split_reference

log = logging.getLogger(__name__)


# Where the docker CLI looks for its plugins (docker/cli: cli-plugins/manager), user folder first.
PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")


def _compose_plugin_installed(environ):
    config_dir = environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    for folder in (os.path.join(config_dir, "cli-plugins"), *PLUGIN_DIRS):
        if os.access(os.path.join(folder, "docker-compose"), os.X_OK):
            return True
    return False


def detect_command(configured=None, runner=subprocess.run, environ=os.environ):
    if configured:
        return tuple(configured)
    # Finding the plugin file saves starting `docker compose version` (~0.15 s) on every run.
    if shutil.which("docker") and _compose_plugin_installed(environ):
        return ("docker", "compose")
    try:
        if runner(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
            return ("docker", "compose")
    except (OSError, subprocess.TimeoutExpired):
        pass
    raise ComposeError("`docker compose` (the compose v2 plugin) is not installed; the baked image carries it "
                       "(`bluegreen-agent preflight` checks), or name a v2 binary in compose_command")


class Compose:
    def __init__(self, command, project, project_dir, env, timeout=600.0):
        self.command, self.project, self.project_dir = tuple(command), project, project_dir
        self.compose_file = os.path.join(project_dir, "docker-compose.yml")
        self.env = env
        self.timeout = timeout

    def _run(self, args, timeout=None):
        argv = list(self.command) + ["-p", self.project, "-f", self.compose_file,
                                     "--project-directory", self.project_dir] + list(args)
        log.debug("running %s", " ".join(argv))
        try:
            out = subprocess.run(argv, check=False, capture_output=True, text=True, env=self.env,
                                 timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            limit = timeout or self.timeout
            raise ComposeError(f"`compose {args[0]}` did not finish within {limit:.0f}s") from None
        except OSError as exc:
            raise ComposeError(f"cannot run {self.command[0]}: {exc}") from None
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ComposeError(f"`compose {args[0]}` failed (exit {out.returncode}): {last}")
        return out

    def config(self):
        """The resolved compose model (interpolated with the config's compose_env) as a dict."""
        import yaml

        try:
            return yaml.safe_load(self._run(["config"], timeout=60).stdout) or {}
        except yaml.YAMLError as exc:
            raise ComposeError(f"cannot parse `compose config` output: {exc}") from None

    def up(self, model=None):
        """Bring the stack up. Services marked `bluegreen.when: in-service` (agent/workers.py) are created, not
        started: `bluegreen-agent watch` starts them once the instance is InService (issue 16)."""
        from agent import workers

        model = self.config() if model is None else model
        marked = workers.marked_services(model)
        # --pull never: every image was pulled before the point of no return (audit F5), with the Docker
        # config's credentials; compose pulling here would be after the fixed tag and `current` moved.
        if not marked:
            outs = [self._run(["up", "-d", "--remove-orphans", "--pull", "never"])]
        else:
            outs = [self._run(["up", "-d", "--remove-orphans", "--pull", "never", *workers.unmarked_services(model)])
                    ] if workers.unmarked_services(model) else []
            # Created (or recreated when their config changed) but left for the watch to start; an up-to-date
            # one that runs already is left running (an operator's re-run on an InService instance).
            outs.append(self._run(["create", "--pull", "never", *marked]))
        text = "".join(out.stderr for out in outs)
        for line in text.splitlines():
            log.info("compose: %s", line.strip())
        return text


def fixed_references(model, image_repository):
    """The image references (with their fixed tag) of the services that run `image_repository`. Pure."""
    wanted = normalize_repository(image_repository)
    refs = set()
    for name, service in sorted((model.get("services") or {}).items()):
        image = (service or {}).get("image")
        if not image:
            continue
        repository, tag = split_reference(image)
        if normalize_repository(repository) != wanted:
            continue
        if tag is None:
            raise ComposeError(f"service {name} pins {image} by digest: the agent can only re-tag a tag")
        refs.add(f"{repository}:{tag}")
    if not refs:
        raise ComposeError(f"no service in {COMPOSE_FILE} uses the image {image_repository} ({TAG_IMAGE})")
    return sorted(refs)


# Compose's pull_policy values (compose-spec): which ones pull an image that is already present.
PULL_ALWAYS = ("always", "daily", "weekly")
PULL_NEVER = ("never",)
PULL_SKIP = ("build",)


def other_images(model, image_repository):
    """[(reference, "always" | "missing" | "never")] of every image the model names besides `image_repository`
    (whose fixed tags the retag satisfies), one entry per reference. Pure.

    The policy is compose's `pull_policy` ("missing" when unset); a service that builds its image
    (`pull_policy: build`, or `build:` without an image) is left to compose."""
    wanted = normalize_repository(image_repository)
    found = {}
    for name, service in sorted((model.get("services") or {}).items()):
        service = service or {}
        image = service.get("image")
        policy = str(service.get("pull_policy") or "missing").lower()
        if not image or policy in PULL_SKIP:
            continue
        if policy in PULL_ALWAYS or policy.startswith("every_"):
            policy = "always"  # a refresh compose would do now or later: pulled now, before anything switched
        elif policy not in PULL_NEVER:
            policy = "missing"  # "missing", "if_not_present" and whatever compose adds: present is enough
        repository, _ = split_reference(image)
        if normalize_repository(repository) == wanted:
            continue
        # The strictest policy wins when two services share an image.
        if found.get(image) != "always":
            found[image] = policy
    return sorted(found.items())
