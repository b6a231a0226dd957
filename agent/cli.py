"""bluegreen-agent: bring this instance's docker-compose stack to its Auto Scaling group's version.

The entry point: parses flags, configures logging, creates every client (and only here), and turns an
AgentError into one line on stderr with its documented exit code. boto3, docker and requests are imported
lazily so that `--help` stays fast.
"""

import argparse
import json
import logging
import os
import signal
import sys

from agent import contract
from agent.errors import EXIT_CODES, EXIT_INTERNAL, AgentError
from agent.settings import TAG_KEYS

log = logging.getLogger(__name__)

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3d} {text}" for code, text in EXIT_CODES) + f"""

settings, highest first: flags, the group's tags, the config file, defaults. The tags:
  {", ".join(TAG_KEYS)}
endpoints come from the standard chains only: AWS_ENDPOINT_URL[_<SERVICE>], AWS_REGION,
AWS_EC2_METADATA_SERVICE_ENDPOINT, DOCKER_HOST."""


def _imdsv2_only_session():
    """A botocore session whose instance-profile credential lookup never falls back to IMDSv1 (I1)."""
    import botocore.session

    session = botocore.session.get_session()
    session.set_config_variable("ec2_metadata_v1_disabled", True)
    return session


class Clients:
    """Every outside client, made here and handed to the steps; each is created on first use."""

    def __init__(self, environ):
        self.environ = environ
        self._cache = {}

    def _once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def http(self):
        import requests

        return self._once("http", requests.Session)

    def imds(self, deadline):
        from agent.imds import IMDSClient

        # IMDS must not go through a proxy, whatever the environment says.
        def make():
            import requests

            session = requests.Session()
            session.trust_env = False
            return session

        return IMDSClient.from_environ(self._once("imds-http", make), self.environ, deadline=deadline)

    def _boto(self, service, region, attempts=10, connect_timeout=10):
        def make():
            # botocore alone: boto3 adds nothing the agent uses and ~0.1 s of imports (s3transfer) to every boot.
            from botocore.config import Config

            # A10: botocore's adaptive retry mode backs off on Throttling; no retry loops of our own.
            config = Config(retries={"mode": "adaptive", "max_attempts": attempts},
                            connect_timeout=connect_timeout, read_timeout=30)
            # One session for every client: its loader caches the shared endpoint and partition data.
            session = self._once("botocore-session", _imdsv2_only_session)
            return session.create_client(service, region_name=region, config=config)

        return self._once((service, region), make)

    def autoscaling(self, region):
        return self._boto("autoscaling", region)

    def s3(self, region):
        return self._boto("s3", region)

    def ecr(self, region):
        return self._boto("ecr", region)

    def ssm(self, region):
        return self._boto("ssm", region)

    def secretsmanager(self, region):
        return self._boto("secretsmanager", region)

    def ec2(self, region):
        # Only the best-effort bluegreen:running tag, published while the launch hook's heartbeat still runs: a
        # few attempts with a short connect timeout, so an EC2 endpoint a private subnet lacks costs seconds
        # before CONTINUE, not rounds of 10 s timeouts.
        return self._boto("ec2", region, attempts=2, connect_timeout=3)

    def docker(self, timeout):
        def make():
            import docker

            try:
                return docker.from_env(timeout=int(timeout))
            except docker.errors.DockerException as exc:
                from agent.errors import ImageError

                host = self.environ.get("DOCKER_HOST", "the default socket")
                raise ImageError(f"cannot reach the Docker engine at {host}: {exc}") from None

        return self._once("docker", make)


class _OwnVersion(argparse.Action):
    """`--version`: the agent's own version, read only when asked for (distribution metadata costs time)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the agent's own version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bluegreen-agent {contract.__version__}")
        parser.exit()


def build_parser():
    parser = argparse.ArgumentParser(prog="bluegreen-agent", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_OwnVersion)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $BLUEGREEN_AGENT_CONFIG or /etc/bluegreen/agent.yml)")
    common.add_argument("--workdir", help="work folder: releases, current, status.json (default /opt/bluegreen)")
    common.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="{run,show,preflight,watch}")
    sub.required = True
    run = sub.add_parser("run", parents=[common], help="deploy the group's version on this instance",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--app-version", metavar="VERSION",
                     help="run VERSION instead of the group's tag (a canary on one instance; logged)")
    # The old spelling, still accepted: it read like the agent's own --version (docs/agent.md).
    run.add_argument("--version", dest="legacy_app_version", metavar="VERSION", help=argparse.SUPPRESS)
    run.add_argument("--s3-unsigned", action="store_true", default=None,
                     help="read the bundle with unsigned HTTPS GETs (through an S3 VPC endpoint) instead of GetObject")
    run.add_argument("--dry-run", action="store_true", help="print the resolved settings and plan; change nothing")
    show = sub.add_parser("show", parents=[common], help="print identity, group, tags and resolved settings")
    show.add_argument("--output", choices=("text", "json"), default="text")
    preflight = sub.add_parser("preflight", parents=[common],
                               help="check that everything the agent needs is here; one line per check")
    preflight.add_argument("--bake", action="store_true",
                           help="check what is installed and enabled, reading files only (the AMI bake, a chroot)")
    preflight.add_argument("--root", default="/", help="with --bake: the image's root folder (default /)")
    watch = sub.add_parser("watch", parents=[common],
                           help="run the services marked bluegreen.when: in-service only while InService")
    watch.add_argument("--interval", type=_interval, default=5.0,
                       help="seconds between two reconciles (default 5; each asks IMDS once)")
    watch.add_argument("--once", action="store_true", help="one reconcile, then exit")
    return parser


# Where progress logging goes: stderr by default; the unit sets stdout, so that only the one failure line reaches
# its stderr, which is the EC2 console (journal+console, audit F16): the console output is capped (64 KB) and
# outlives the instance, and the line that says why must not be buried under progress.
LOG_STREAM_ENV = "BLUEGREEN_AGENT_LOG_STREAM"


def _configure_logging(debug, environ=None):
    stream = sys.stdout if (environ or {}).get(LOG_STREAM_ENV) == "stdout" else sys.stderr
    logging.basicConfig(stream=stream, level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "docker", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug, environ)
    if getattr(args, "legacy_app_version", None) is not None:
        if args.app_version is not None:
            parser.error("give the app version once, as --app-version (run --version is its old spelling)")
        log.warning("`run --version VERSION` is deprecated: use `run --app-version VERSION` "
                    "(`bluegreen-agent --version` prints the agent's own version)")
        args.app_version = args.legacy_app_version
    # systemd stops a run with SIGTERM (`systemctl stop`, TimeoutStartSec): unwind like Ctrl-C, so status.json
    # records the failure and a launch hook is ABANDONed (A6) instead of waiting out its timeout. SIGHUP too: an
    # operator's shell that disconnects mid-run must not kill it halfway through a recreate unrecorded (F11).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return _dispatch(args, environ)
    except AgentError as exc:
        if args.debug:
            log.exception("failed")
        exc.report()  # once: a run that ABANDONed printed it before the ABANDON
        return exc.exit_code
    except KeyboardInterrupt:
        print("bluegreen-agent: interrupted (SIGINT, SIGTERM or SIGHUP); status.json records it", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # the one top-level handler: one line, a traceback only with --debug
        if args.debug:
            log.exception("unexpected error")
        print(f"bluegreen-agent: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _dispatch(args, environ):
    from agent import run as runner
    from agent.settings import config_path, load_config, resolve_workdir

    if args.command == "preflight":
        return _preflight(args, environ)

    config = load_config(*config_path(args.config, environ))
    flags = {"workdir": args.workdir}
    if args.command == "run":
        flags.update(version=args.app_version, s3_unsigned=args.s3_unsigned)
    flags = {k: v for k, v in flags.items() if v is not None}
    clients = Clients(environ)
    if args.command == "show":
        return _show(runner, clients, flags, config, args.output)
    if args.command == "watch":
        return _watch(clients, flags, config, args)
    if args.dry_run:
        found = runner.discover(clients, flags, config)
        settings = runner.resolve_settings(found, flags, config)
        hook = runner.find_launch_hook(clients.autoscaling(found.identity.region), found, settings)  # read-only
        print(json.dumps({"schema_version": contract.SCHEMA_VERSION, "settings": settings.as_dict(),
                          "plan": runner.make_plan(found, settings, environ, hook)}, indent=2, sort_keys=True))
        return 0
    status = runner.run(clients, flags, config, resolve_workdir(flags, config), environ)
    print(json.dumps({k: status.get(k) for k in ("schema_version", "result", "version", "image_digest", "release",
                                                 "steps")}, sort_keys=True))
    return 0


def _interval(text):
    """--interval: a number of seconds, at least 0.5 (0 or less would poll IMDS in a busy loop)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0.5 <= value < 86400):  # NaN and inf fail too
        raise argparse.ArgumentTypeError(f"{text} s is out of range: at least 0.5, under 86400")
    return value


def _watch(clients, flags, config, args):
    """`bluegreen-agent watch` (agent/watch.py): until SIGTERM, which ends it with exit 0 (systemd's stop)."""
    import threading

    from agent import ec2, watch
    from agent.errors import ConfigError
    from agent.settings import LOCAL_DEFAULTS, PROJECT_RE, resolve_workdir

    # The same project the boot run uses: the config's, else the documented default (settings.LOCAL_DEFAULTS).
    project = str(config.get("compose_project") or LOCAL_DEFAULTS["compose_project"])
    if not PROJECT_RE.match(project):
        raise ConfigError(f"compose_project {project!r} must be lowercase letters, digits, '-' or '_'")
    imds = clients.imds(deadline=min(args.interval, 10.0))
    found = {}

    def publish(value):
        if "identity" not in found:
            found["identity"] = imds.identity()
        identity = found["identity"]
        return ec2.publish_workers(clients.ec2(identity.region), identity.instance_id, value)

    watcher = watch.Watch(imds, clients.docker(60), project, resolve_workdir(flags, config), publish=publish,
                          interval=args.interval)
    if args.once:
        print(json.dumps(watcher.once(), sort_keys=True))
        return 0
    stopping = threading.Event()
    try:
        watcher.run(stopping)
    except KeyboardInterrupt:  # SIGTERM (systemd's stop), SIGINT, SIGHUP: the workers stay as they are
        log.info("watch: stopped")
    return 0


def _show(runner, clients, flags, config, output):
    from agent.settings import resolve_workdir
    from agent.status import last_run

    found = runner.discover(clients, flags, config)
    doc = {"schema_version": contract.SCHEMA_VERSION, "instance_id": found.identity.instance_id, "region": found.identity.region,
           "account_id": found.identity.account_id, "availability_zone": found.identity.availability_zone,
           "group": found.membership.group, "lifecycle_state": found.membership.lifecycle_state,
           "tags": found.tags}
    # audit F25: the last run as status.json tells it; "killed" when it says running but no agent holds the lock.
    doc["last_run"] = last_run(resolve_workdir(flags, config))
    error = None
    try:
        doc["settings"] = runner.resolve_settings(found, flags, config).as_dict()
    except AgentError as exc:
        error, doc["settings_error"] = exc, str(exc)
    if output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for key in ("instance_id", "region", "account_id", "availability_zone", "group", "lifecycle_state"):
            print(f"{key:<18} {doc[key]}")
        previous = doc["last_run"]
        if previous is not None:
            where = ", ".join(previous["in_progress"] or []) or (previous["error"] or {}).get("step") or "-"
            print(f"{'last_run':<18} {previous['result']} (started {previous['started_at']}, pid {previous['pid']}, "
                  f"step {where})")
        print("tags:")
        for key, value in sorted(doc["tags"].items()):
            print(f"  {key} = {value}")
        if "settings" in doc:
            print("settings:")
            for key, value in sorted(doc["settings"].items()):
                if key != "sources":
                    print(f"  {key:<18} {value}  ({doc['settings']['sources'].get(key, 'derived')})")
    if error is not None:
        raise error
    return 0


def _preflight(args, environ):
    """Every check's line on stdout; exit 13 (EXIT_PREFLIGHT) naming the failed ones when any fails (ami/bake.sh relies on it)."""
    from agent import preflight
    from agent.errors import EXIT_PREFLIGHT
    from agent.settings import CONFIG_ENV, DEFAULT_CONFIG, LOCAL_DEFAULTS, load_config

    if args.bake:
        results = preflight.bake_checks(args.root)
    else:
        config_file = args.config or environ.get(CONFIG_ENV) or DEFAULT_CONFIG
        try:
            workdir = args.workdir or load_config(config_file, False).get("workdir") or LOCAL_DEFAULTS["workdir"]
        except AgentError:
            workdir = args.workdir or LOCAL_DEFAULTS["workdir"]  # the config check reports the error
        clients = Clients(environ)
        # The file docker-py and compose read here: $DOCKER_CONFIG, else ~/.docker (/root/.docker under systemd).
        docker_dir = environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                                                                  ".docker")
        results = preflight.live_checks(ping=lambda: _engine_ping(clients),
                                        imds_probe=lambda: _imds_token_probe(environ),
                                        config_file=config_file, workdir=workdir,
                                        docker_config=os.path.join(docker_dir, "config.json"))
    for result in results:
        print(result.line())
    failed = preflight.failures(results)
    if failed:
        # Not an AgentError: preflight is no step of a run and writes no status.json (contract AGENT_ERROR_STEPS).
        print(f"bluegreen-agent: preflight failed: {len(failed)} of {len(results)} checks failed: "
              f"{', '.join(r.name for r in failed)}", file=sys.stderr)
        return EXIT_PREFLIGHT
    return 0


def _engine_ping(clients):
    import docker

    from agent.preflight import NoAnswer

    try:
        clients.docker(10).ping()
    except (AgentError, docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        raise NoAnswer(str(exc)) from None


def _imds_token_probe(environ):
    """One IMDSv2 token PUT, 2 s, no retries, no proxy; the token itself is dropped, never printed (I1)."""
    import requests

    from agent.imds import DEFAULT_ENDPOINT, ENDPOINT_ENV
    from agent.preflight import NoAnswer

    endpoint = environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT).rstrip("/")
    session = requests.Session()
    session.trust_env = False
    try:
        response = session.put(f"{endpoint}/latest/api/token", timeout=2,
                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        response.raise_for_status()
    except requests.RequestException as exc:
        raise NoAnswer(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
