"""`bluegreen-localcloud up | down | status | serve`: the local fleet's commands.

`up` starts the fleet daemon (localcloud.fleet.daemon) in the background, or reuses the one already running
for this state folder, and waits until the `demo` service serves from 3 healthy instances; `down` stops it,
which stops and removes everything it made (instances' stacks, HAProxy, the emulated AWS, and the Docker
engine and registry only if it started them), then removes the state folder; `status` reports it.

Exit codes: 0 done; 1 the fleet failed to start or stop (the reason is printed; the log is STATE/serve.log);
2 bad usage; 3 `status`: no fleet is running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from agent.contract import SCHEMA_VERSION, atomic_write
from localcloud import infra
from localcloud.fleet import FleetError, FleetTimeout
from localcloud.fleet.daemon import ENV_FILE, LOG_FILE, PID_FILE, STATE_FILE
from localcloud.polling import WaitTimeout, wait_until

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
DEFAULT_STATE = ".localcloud"


def _read_state(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _daemon_pid(state_dir: str) -> int | None:
    """The daemon's pid if it is alive (a stale pid file from a crashed daemon counts as not running)."""
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"localcloud.fleet.daemon" not in f.read():
                return None  # the pid was reused by something else
    except OSError:
        return None
    return pid


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def _shown(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def how_to_use(state_dir: str, state: dict) -> str:
    env_path = os.path.join(state_dir, ENV_FILE)
    return (f"local fleet ready: service {state.get('service')} behind {state.get('lb_url')}\n"
            f"emulated AWS at {state.get('aws_endpoint')} ({state.get('region')})\n"
            f"to use it:  . {_shown(env_path)}   (then `bluegreen status demo`, "
            f"`curl $BLUEGREEN_LB_URL`, `aws autoscaling describe-auto-scaling-groups`)\n"
            f"to stop it: bluegreen-localcloud down")


def up(state_dir: str, lb_port: int, deadline_s: float, time_scale: float | None = None,
       boot_seconds: float | None = None, instances: str = "machines", worker: bool = False) -> int:
    state_dir = os.path.abspath(state_dir)
    pid = _daemon_pid(state_dir)
    proc = None
    if pid is None:
        os.makedirs(state_dir, exist_ok=True)
        for stale in (STATE_FILE, PID_FILE):
            if os.path.exists(os.path.join(state_dir, stale)):
                os.unlink(os.path.join(state_dir, stale))
        clock = ([] if time_scale is None else ["--time-scale", str(time_scale)]) + \
            ([] if boot_seconds is None else ["--boot-seconds", str(boot_seconds)]) + ["--instances", instances] + \
            (["--worker"] if worker else [])
        with open(os.path.join(state_dir, LOG_FILE), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "localcloud.fleet.daemon", "--state", state_dir, "--lb-port", str(lb_port),
                 *clock],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid = proc.pid
        print(f"bluegreen-localcloud: starting the local fleet (pid {pid}, log {_shown(state_dir)}/"
              f"{LOG_FILE})", file=sys.stderr)
    else:
        print(f"bluegreen-localcloud: reusing the running local fleet (pid {pid})", file=sys.stderr)
        running = (_read_state(state_dir) or {}).get("instances")
        if running and running != instances:
            print(f"bluegreen-localcloud: note: it runs {running}, not {instances}: `down` first to change that",
                  file=sys.stderr)

    def ready(state: dict | None) -> bool:
        return bool(state) and state.get("pid") == pid and state.get("phase") == "ready"

    def daemon_state() -> dict | None:
        """Its state file; raises once the daemon has failed or exited before it was ready."""
        exited = proc.poll() is not None if proc is not None else _daemon_pid(state_dir) is None
        state = _read_state(state_dir)
        if ready(state):
            return state
        if state and state.get("pid") == pid and state.get("error"):
            # It tears itself down after a failed start: let it finish, so nothing is left running.
            infra.wait_gone(pid, 60.0)
            raise FleetError(f"the local fleet failed to start: {state['error']} (see {state_dir}/{LOG_FILE})")
        if exited:
            tail = _tail(os.path.join(state_dir, LOG_FILE))
            raise FleetError(f"the local fleet daemon exited before it was ready; last log lines:\n{tail}")
        return state

    try:
        state = wait_until(daemon_state, "the local fleet to be ready", deadline_s, 0.5, until=ready)
    except WaitTimeout as exc:
        phase = exc.last.get("phase") if exc.last else "no state written"
        raise FleetTimeout(f"the local fleet was not ready within {deadline_s}s (last phase: {phase}); "
                           f"see {state_dir}/{LOG_FILE}, stop it with `bluegreen-localcloud down`") from None
    print(how_to_use(state_dir, state))
    return EXIT_OK


def down(state_dir: str, deadline_s: float) -> int:
    state_dir = os.path.abspath(state_dir)
    if not os.path.isdir(state_dir):
        print("bluegreen-localcloud: no local fleet here: nothing to stop", file=sys.stderr)
        return EXIT_OK
    pid = _daemon_pid(state_dir)
    if pid is not None:
        print(f"bluegreen-localcloud: stopping the local fleet (pid {pid})", file=sys.stderr)
        if not infra.stop_process(pid, deadline_s):
            raise FleetError(f"the local fleet daemon (pid {pid}) would not stop")
    state = _read_state(state_dir) or {}
    if state.get("phase") != "stopped":
        _clean_up_after_crash(state_dir, state)
    shutil.rmtree(state_dir, ignore_errors=True)
    print("bluegreen-localcloud: local fleet stopped and removed", file=sys.stderr)
    return EXIT_OK


def _clean_up_after_crash(state_dir: str, state: dict) -> None:
    """The daemon died without its own teardown: remove what its state file says it made."""
    from localcloud.fleet.instances import remove_stack

    haproxy_pid = state.get("haproxy_pid")
    if haproxy_pid:
        infra.stop_process(int(haproxy_pid), 5.0)
    for item in (state.get("fleet") or {}).get("instances", []):
        if state.get("docker_host") and item.get("compose_project"):  # a machine's stack went with it
            try:
                remove_stack(item["compose_project"], state["docker_host"])
            except FleetError as exc:
                print(f"bluegreen-localcloud: {exc}", file=sys.stderr)
    from localcloud import machines

    for instance_id in machines.sweep(os.path.join(state_dir, "instances")):  # nothing there: nothing to do
        print(f"bluegreen-localcloud: machine {instance_id} powered off and removed", file=sys.stderr)
    record = os.path.join(state_dir, "infra-started.json")
    if os.path.exists(record):
        infra.down(record=record)


def status(state_dir: str, output: str) -> int:
    state_dir = os.path.abspath(state_dir)
    pid = _daemon_pid(state_dir)
    state = _read_state(state_dir) if pid else None
    if output == "json":
        print(json.dumps({"schema_version": SCHEMA_VERSION, "running": bool(pid), "state": state}, indent=2))
    elif not pid:
        print("no local fleet is running (start one with `bluegreen-localcloud up`)")
    else:
        print(f"local fleet pid {pid}: {state.get('phase') if state else 'starting'}")
        if state:
            print(f"load balancer  {state.get('lb_url')}\nemulated AWS   {state.get('aws_endpoint')} "
                  f"({state.get('region')})\nenv file       {os.path.join(state_dir, ENV_FILE)}")
            rows = (state.get("fleet") or {}).get("instances", [])
            if rows:
                print(f"{'INSTANCE':<21} {'GROUP':<12} {'VERSION':<8} {'ADDRESS':<17} {'AGENT':<18} {'TARGET':<10} LB")
            for r in rows:
                if r.get("state") != "running":
                    continue
                address = f"{r.get('address') or '127.0.0.1'}:{r['app_port']}"
                print(f"{r['instance_id']:<21} {r['group']:<12} {r.get('version') or '-':<8} {address:<17} "
                      f"{r['agent']:<18} {r.get('target') or '-':<10} {r.get('lb') or '-'}")
    return EXIT_OK if pid else EXIT_NOT_RUNNING


def imds_fault(state_dir: str, instance_id: str, fail_for: float | None, status_code: int, expire_tokens: bool,
               deadline_s: float = 15.0) -> int:
    """Ask the running fleet to break one instance's IMDS; returns once the fleet applied it (it removes the
    request), or fails with one line when it did not within `deadline_s` (no such instance, or no fleet)."""
    from localcloud.fleet.supervisor import FAULTS_DIR

    if fail_for is None and not expire_tokens:
        print("bluegreen-localcloud: error: imds-fault needs --fail-for SECONDS or --expire-tokens", file=sys.stderr)
        return EXIT_USAGE
    if not instance_id.startswith("i-") or "/" in instance_id:
        print(f"bluegreen-localcloud: error: {instance_id!r} is not an instance id", file=sys.stderr)
        return EXIT_USAGE
    if _daemon_pid(state_dir) is None:
        print(f"bluegreen-localcloud: error: no local fleet runs in {state_dir}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    folder = os.path.join(state_dir, FAULTS_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, instance_id + ".json")
    fault = {"expire_tokens": expire_tokens, **({"fail_for": fail_for, "status": status_code} if fail_for else {})}
    atomic_write(path, json.dumps(fault))
    try:
        wait_until(lambda: not os.path.exists(path), f"the fleet to apply the IMDS fault on {instance_id}",
                   deadline_s=deadline_s, interval=0.2)
    except WaitTimeout:
        os.remove(path)
        raise FleetError(f"the fleet did not apply the IMDS fault within {deadline_s:g} s: is {instance_id} one of "
                         "its running instances (bluegreen-localcloud status)?") from None
    print(f"IMDS of {instance_id}: " + ("tokens expired" if expire_tokens else "")
          + (", " if expire_tokens and fail_for else "")
          + (f"answers {status_code} for {fail_for:g} s" if fail_for else ""))
    return EXIT_OK


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def add_commands(subparsers) -> None:
    """Register up/down/status/serve on the `bluegreen-localcloud` parser (localcloud.cli.SUBCOMMANDS)."""
    p = subparsers.add_parser("up", help="start (or reuse) the whole local fleet in the background")
    p.add_argument("--lb-port", type=port, default=8080,
                   help="load balancer port on 127.0.0.1 (default 8080; 0 picks a free one, printed)")
    p.add_argument("--state", default=DEFAULT_STATE, help="state folder (default .localcloud)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait until it serves (default 900: the first up also builds the image root)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="real seconds per AWS second (default 0.2; 1 runs AWS's own timings in real time)")
    p.add_argument("--boot-seconds", type=float, default=None,
                   help="AWS seconds from an instance's launch to its agent's start (default 0)")
    p.add_argument("--instances", choices=("machines", "processes"), default="machines",
                   help="machines: every instance boots the baked image with systemd-nspawn, real cloud-init and "
                        "systemd (default; root); processes: the agent as a process on this host's engine")
    p.add_argument("--worker", action="store_true",
                   help="the demo bundle gets a `worker` service that runs only while its instance is InService")
    p.set_defaults(func=run, fleet_command="up")
    p = subparsers.add_parser("down", help="stop and remove everything `up` made")
    p.add_argument("--state", default=DEFAULT_STATE)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a clean stop (default 120)")
    p.set_defaults(func=run, fleet_command="down")
    p = subparsers.add_parser("status", help="is the local fleet running; its endpoints and instances")
    p.add_argument("--state", default=DEFAULT_STATE)
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(func=run, fleet_command="status")
    p = subparsers.add_parser("imds-fault", help="make one instance's IMDS fail for a while, or forget its tokens "
                                                 "(aws-rules.md I1, I3)")
    p.add_argument("instance_id")
    p.add_argument("--state", default=DEFAULT_STATE)
    p.add_argument("--fail-for", type=float, metavar="SECONDS", help="answer every request with --status for SECONDS")
    p.add_argument("--status", type=int, default=503, help="the status a failing IMDS answers (default 503)")
    p.add_argument("--expire-tokens", action="store_true", help="every issued token answers 401 from now on")
    p.set_defaults(func=run, fleet_command="imds-fault")
    p = subparsers.add_parser("serve", help="run the local fleet in the foreground (what `up` starts)")
    p.add_argument("--state", default=DEFAULT_STATE)
    p.add_argument("--lb-port", type=port, default=0)
    p.set_defaults(func=run, fleet_command="serve")


def run(args) -> int:
    """Run the fleet command args.fleet_command; one line on stderr and a documented exit code on failure."""
    try:
        if args.fleet_command == "up":
            return up(args.state, args.lb_port, args.timeout, args.time_scale, args.boot_seconds, args.instances,
                      args.worker)
        if args.fleet_command == "down":
            return down(args.state, args.timeout)
        if args.fleet_command == "status":
            return status(args.state, args.output)
        if args.fleet_command == "imds-fault":
            return imds_fault(args.state, args.instance_id, args.fail_for, args.status, args.expire_tokens)
        from localcloud.fleet import daemon

        return daemon.main(["--state", args.state, "--lb-port", str(args.lb_port)])
    except FleetError as exc:
        print(f"bluegreen-localcloud: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
