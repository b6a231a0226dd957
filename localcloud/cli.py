"""bluegreen-localcloud: the local stand-ins for AWS, one subcommand each.

    bluegreen-localcloud aws [--port P] [--health-interval S] [--time-scale X]
        the emulated AWS (moto + fidelity layer) on 127.0.0.1; first stdout line AWS_ENDPOINT_URL=http://...
    bluegreen-localcloud imds INSTANCE_ID [--port P] [--aws-endpoint URL] [--region R]
        IMDSv2 for one emulated instance; first stdout line AWS_EC2_METADATA_SERVICE_ENDPOINT=http://...

Both run in the foreground until SIGTERM or SIGINT. Exit codes: 0 stopped cleanly, 1 could not start
(e.g. the port is taken), 2 bad command line (one line on stderr).
`up`, `down`, `status` and `serve` (the whole local fleet) come from localcloud.fleet.commands, which
documents their exit codes. Subcommands register in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

EXIT_OK, EXIT_START_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one actionable line, not the usage block
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 10, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be 0-300 seconds, got {text}")
    return value


def _serve_until_signal(announce: str) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sys.stdout.write(announce + "\n")
    sys.stdout.flush()
    while not stop.wait(3600):
        pass


def _run_in_foreground(command: str, server: Any, port: int, variable: str) -> int:
    """Start `server`, announce `variable=<its endpoint>` as the first stdout line, serve until a signal."""
    try:
        server.start()
    except OSError as exc:
        sys.stderr.write(f"bluegreen-localcloud {command}: cannot listen on 127.0.0.1:{port}: {exc.strerror}\n")
        return EXIT_START_FAILED
    try:
        _serve_until_signal(f"{variable}={server.endpoint}")
    finally:
        server.stop()
    return EXIT_OK


def run_aws(args: argparse.Namespace) -> int:
    from localcloud.aws import EmulatedAWS

    cloud = EmulatedAWS(host="127.0.0.1", port=args.port, region=args.region, health_interval=args.health_interval,
                        time_scale=args.time_scale)
    return _run_in_foreground("aws", cloud, args.port, "AWS_ENDPOINT_URL")


def run_imds(args: argparse.Namespace) -> int:
    from localcloud.imds import IMDSServer

    endpoint = args.aws_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    server = IMDSServer(args.instance_id, region=args.region, aws_endpoint=endpoint, host="127.0.0.1", port=args.port)
    return _run_in_foreground("imds", server, args.port, "AWS_EC2_METADATA_SERVICE_ENDPOINT")


def _add_aws(sub: Any) -> None:
    p = sub.add_parser("aws", help="run the emulated AWS (moto + fidelity layer) in the foreground")
    p.add_argument("--port", type=_port, default=0, help="TCP port on 127.0.0.1 (default: any free port)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--time-scale", type=_positive, default=1.0,
                   help="real seconds per AWS second for health checks, draining, launches (default 1.0)")
    p.add_argument("--health-interval", type=_seconds, default=None,
                   help="real seconds per target health check, overriding HealthCheckIntervalSeconds x time scale")
    p.set_defaults(func=run_aws)


def _add_imds(sub: Any) -> None:
    p = sub.add_parser("imds", help="serve IMDSv2 for one emulated instance in the foreground")
    p.add_argument("instance_id")
    p.add_argument("--port", type=_port, default=0, help="TCP port on 127.0.0.1 (default: any free port)")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--aws-endpoint", default=None,
                   help="the emulated AWS, for autoscaling/target-lifecycle-state (default: $AWS_ENDPOINT_URL)")
    p.set_defaults(func=run_imds)


def _add_fleet(sub: Any) -> None:
    from localcloud.fleet.commands import add_commands  # up, down, status, serve: the local fleet (issue 5)

    add_commands(sub)


SUBCOMMANDS: list[Callable[[Any], None]] = [_add_aws, _add_imds, _add_fleet]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bluegreen-localcloud", description="Local stand-ins for AWS (tests, demo, benchmarks).")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
