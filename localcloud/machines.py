"""Emulated EC2 instances that boot the real way: a systemd-nspawn machine over an overlay of the baked image
root (scripts/bake-debian-root.sh, the local AMI), its own network namespace, real systemd and cloud-init.

    machine = Machine("i-0abc...", image_root, workdir, user_data, imds=IMDSServer(...), forwards=[moto_port, 5000])
    machine.start()          # namespace, overlay, NoCloud seed, IMDS at 169.254.169.254, then nspawn --boot
    machine.address          # the machine's own address: HAProxy sends it traffic as an ALB would a target
    machine.console()        # what the machine wrote to its console (EC2's GetConsoleOutput)
    machine.stop()           # EC2 termination: orderly poweroff (SIGTERM to nspawn), then the overlay is gone

How one machine maps to an instance (docs/localcloud.md, "Machines"):
- the root file system is an overlay whose lower layer is the baked image root, shared read-only by every
  machine, and whose upper layer is the machine's own, removed on termination (an EBS root volume deleted on
  termination);
- the user-data is the launch template's, unchanged, in a NoCloud seed (/var/lib/cloud/seed/nocloud), as EC2's
  datasource gives it to cloud-init; emulation-only values (where the emulated AWS answers) come as NoCloud
  vendor-data, never through the user-data;
- the network namespace has its loopback, 169.254.169.254 on it (IMDS answers there, IMDSv2, I1), and a veth
  pair with a /30 to the host: the machine's address is what the load balancer reaches. The emulated AWS and the
  registry, which listen on the host's loopback, are reachable at the same 127.0.0.1 ports inside the machine
  through forwarders whose listening sockets live in the namespace (so the image names and endpoints the host
  uses work unchanged, and Docker treats the 127.0.0.1 registry as the local registry it is);
- the Docker engine is the machine's own (the baked docker.service), its data root a host folder bound to
  /var/lib/docker (overlay2 cannot stack on the overlay root), removed with the machine;
- the console is nspawn's: everything systemd, cloud-init and the units write to it, kept after the machine is
  gone, as EC2 keeps the console output of a terminated instance for a while.

Needs root, systemd-nspawn (systemd-container) and iproute2 (scripts/host-setup.sh).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from localcloud.polling import WaitTimeout, wait_until

log = logging.getLogger(__name__)

IMDS_ADDRESS = "169.254.169.254"
# The /30 blocks machines take: 10.231.0.0/16, 16384 machines. Only addresses this module made are removed.
SUBNET = ipaddress.ip_network("10.231.0.0/16")
LOCK = "/run/lock/bluegreen-machines.lock"
NETNS_PREFIX = "bgm-"
CONSOLE_LIMIT = 64 * 1024  # GetConsoleOutput: the most recent 64 KB
CLONE_NEWNET = 0x40000000
# A machine's folders under its work folder: the overlay's upper and work layers, the mount point, and its Docker
# engine's data root. Removed with the machine; the console log beside them stays.
PARTS = ("upper", "work", "rootfs", "docker")
# Each machine's nspawn starts in a cgroup of its own, <hierarchy>/bluegreen-machines/<instance id>: with
# --keep-unit nspawn makes its payload/ and supervisor/ cgroups under its caller's, and machines started from one
# process would otherwise share them (one machine's systemd would see another's processes in its units).
CGROUP_PARENT = "bluegreen-machines"
CGROUP_HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
# The one file the emulation adds to every machine's root (docs/localcloud.md, "Machines"). On a cgroup v1 host
# nspawn mounts each controller hierarchy read-only in the machine, where runc must create the containers'
# cgroups: docker.service remounts them read-write in the machine's own mount namespace first (a bind mount's
# flags change only with remount,bind). An EC2 instance has its own kernel and never needs this.
CGROUP_DROPIN = ("etc/systemd/system/docker.service.d/localcloud-cgroup.conf",
                 ("# localcloud only (localcloud/machines.py): nspawn mounts cgroup v1 controllers read-only\n"
                 "[Service]\n"
                 "ExecStartPre=+/bin/sh -c 'for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw \"$c\" "
                 "|| true; done'\n"))


class MachineError(Exception):
    pass


def available() -> str | None:
    """None when machines can run here, else why not (one line)."""
    if os.geteuid() != 0:
        return "machines need root (network namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("systemd-nspawn", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/host-setup.sh installs it)"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise MachineError(f"{' '.join(argv)} failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    return out


_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise MachineError(f"setns: {os.strerror(errno)}")


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port inside the named network namespace, made by a short-lived thread
    that enters the namespace (setns changes only the calling thread); the socket stays in that namespace."""
    result: dict = {}

    def make() -> None:
        try:
            with open(f"/run/netns/{netns}") as ns:
                _setns(ns.fileno())
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
            except OSError:
                sock.close()
                raise
            result["sock"] = sock
        except (OSError, MachineError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=make, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise MachineError(f"cannot listen on {host}:{port} in {netns}: {result['error']}")
    return result["sock"]


class Forwarder:
    """Accepts on a socket inside a machine's namespace and relays each connection to the same port on the
    host's loopback (the emulated AWS, the registry)."""

    def __init__(self, listener: socket.socket, target_port: int) -> None:
        self.listener = listener
        self.target_port = target_port
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"fwd-{target_port}")

    def start(self) -> Forwarder:
        self.listener.settimeout(0.2)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                inner, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(inner,), daemon=True).start()

    def _relay(self, inner: socket.socket) -> None:
        inner.settimeout(None)
        try:
            outer = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            inner.close()
            return
        outer.settimeout(None)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=pipe, args=(outer, inner), daemon=True)
        back.start()
        pipe(inner, outer)
        back.join(600)
        inner.close()
        outer.close()


def _check_subnet_free() -> None:
    """Refuse when the host routes any of SUBNET elsewhere (its LAN, a VPN): the machines' /30s would take that
    traffic over. Only routes through the machines' own links (bgh*) may be there."""
    out = _run("ip", "-4", "-o", "route", "show", check=False)
    for line in out.stdout.splitlines():
        words = line.split()
        if not words or words[0] == "default":
            continue
        try:
            network = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            continue
        device = words[words.index("dev") + 1] if "dev" in words else ""
        if network.overlaps(SUBNET) and not device.startswith("bgh"):
            raise MachineError(f"the host routes {network} through {device or 'a gateway'}, which overlaps the "
                               f"machines' {SUBNET}: machines would take that traffic over")


def _taken_blocks() -> set:
    out = _run("ip", "-o", "-4", "addr", "show", check=False)
    taken = set()
    for line in out.stdout.splitlines():
        for word in line.split():
            if "/" not in word:
                continue
            try:
                address = ipaddress.ip_interface(word).ip
            except ValueError:
                continue
            if address in SUBNET:
                taken.add((int(address) - int(SUBNET.network_address)) // 4)
    return taken


class Network:
    """A network namespace with loopback, IMDS's address, and a veth /30 to the host."""

    def __init__(self, name: str, block: int) -> None:
        self.name = name
        self.block = block
        base = int(SUBNET.network_address) + 4 * block
        self.host_address = str(ipaddress.ip_address(base + 1))
        self.address = str(ipaddress.ip_address(base + 2))
        self.host_link = f"bgh{block}"
        self.inner_link = f"bgn{block}"

    @classmethod
    def create(cls, name: str) -> Network:
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one allocator at a time, across fleets on this host
            _check_subnet_free()
            taken = _taken_blocks()
            block = next((b for b in range(SUBNET.num_addresses // 4) if b not in taken), None)
            if block is None:
                raise MachineError(f"no free /30 left in {SUBNET} for another machine")
            if os.path.exists(f"/run/netns/{name}"):
                raise MachineError(f"network namespace {name} exists already: another fleet runs this instance "
                                   "id, or one was left behind (bluegreen-localcloud down removes it)")
            network = cls(name, block)
            try:
                network._make()
            except MachineError:
                network.remove()  # only what _make made: the name was free and the block unused
                raise
        return network

    def _make(self) -> None:
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.inner_link)
        _run("ip", "link", "set", self.inner_link, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        _run("ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inner_link)
        _run("ip", "-n", self.name, "link", "set", self.inner_link, "up")
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        _run("ip", "-n", self.name, "addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo")
        _run("ip", "-n", self.name, "route", "add", "default", "via", self.host_address)

    def remove(self) -> None:
        # Deleting the namespace deletes the veth pair with it; the host end is removed first in case the
        # namespace is already gone.
        _run("ip", "link", "del", self.host_link, check=False)
        _run("ip", "netns", "del", self.name, check=False)


def baked_root(deadline_s: float = 1800.0) -> str:
    """The baked image root, the local AMI: scripts/bake-debian-root.sh builds it once (debootstrap, then the
    project's bake recipe) and caches it under .cache/bake, keyed by what built it; a cached one takes a second."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                          "bake-debian-root.sh")
    out = subprocess.run([script], capture_output=True, text=True, timeout=deadline_s, check=False)
    if out.returncode != 0:
        raise MachineError(f"scripts/bake-debian-root.sh failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-400:]}")
    return out.stdout.strip().splitlines()[-1]


class Machine:
    def __init__(self, instance_id: str, image_root: str | list, workdir: str, user_data: bytes | str,
                 vendor_data: str = "",
                 imds=None, forwards: tuple = ()) -> None:
        self.instance_id = instance_id
        # One image root, or overlay layers over it, top first (a test's layer that removes a file)
        self.layers = [image_root] if isinstance(image_root, str) else list(image_root)
        self.image_root = self.layers[-1]
        self.workdir = os.path.abspath(workdir)
        self.user_data = user_data
        self.vendor_data = vendor_data
        self.imds = imds  # an unstarted localcloud.imds.IMDSServer, or None: no IMDS at all (unreachable)
        self.forwards = tuple(forwards)
        self.network: Network | None = None
        self._forwarders: list[Forwarder] = []
        self._proc: subprocess.Popen | None = None
        self._mounted = False
        self._cgroups: list[str] = []
        self.started_at: float | None = None

    # -- paths --------------------------------------------------------------------------------------------
    @property
    def rootfs(self) -> str:
        return os.path.join(self.workdir, "rootfs")

    @property
    def console_path(self) -> str:
        return os.path.join(self.workdir, "console.log")

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.instance_id

    @property
    def address(self) -> str | None:
        return self.network.address if self.network else None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> Machine:
        if not os.path.isdir(os.path.join(self.image_root, "etc")):
            raise MachineError(f"image root {self.image_root} is not a root file system")
        os.makedirs(self.workdir, exist_ok=True)
        try:
            self.network = Network.create(self.netns)
            if self.imds is not None:
                self.imds.start(sock=listen_in_netns(self.netns, IMDS_ADDRESS, 80))
            for port in self.forwards:
                self._forwarders.append(Forwarder(listen_in_netns(self.netns, "127.0.0.1", port), port).start())
            self._mount()
            self._seed()
            self._spawn()
        except (MachineError, OSError, subprocess.SubprocessError) as exc:
            self.stop()
            raise MachineError(f"machine {self.instance_id} did not start: {exc}") from exc
        return self

    def _mount(self) -> None:
        for part in PARTS:
            os.makedirs(os.path.join(self.workdir, part), exist_ok=True)
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={':'.join(self.layers)},upperdir={self.workdir}/upper,workdir={self.workdir}/work", self.rootfs)
        self._mounted = True

    def _seed(self) -> None:
        """EC2's datasource, as NoCloud's seed folder: meta-data (instance id, hostname), the user-data as the
        launch template carries it, and the emulation's own vendor-data."""
        seed = os.path.join(self.rootfs, "var/lib/cloud/seed/nocloud")
        os.makedirs(seed, exist_ok=True)
        files = {"meta-data": f"instance-id: {self.instance_id}\nlocal-hostname: {self.instance_id}\n",
                 "user-data": self.user_data, "vendor-data": self.vendor_data or "#cloud-config\n{}\n"}
        for name, content in files.items():
            with open(os.path.join(seed, name), "wb") as f:  # bytes: a gzip user-data stays as it was
                f.write(content if isinstance(content, bytes) else content.encode())
        path, text = CGROUP_DROPIN
        os.makedirs(os.path.dirname(os.path.join(self.rootfs, path)), exist_ok=True)
        with open(os.path.join(self.rootfs, path), "w") as f:
            f.write(text)

    def _spawn(self) -> None:
        self._cgroups = self._make_cgroups()
        # nspawn starts in the machine's own cgroups: a shell moves itself there, then execs nspawn (same pid);
        # preexec_fn would do it in Python's forked child, which is unsafe in a threaded process.
        enter = "".join(f'echo $$ > "{folder}/cgroup.procs" && ' for folder in self._cgroups)
        argv = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--link-journal=no",
                f"--machine={self.instance_id}", f"--network-namespace-path=/run/netns/{self.netns}",
                f"--bind={self.workdir}/docker:/var/lib/docker", "--capability=all",
                # runc joins a session keyring (keyctl): outside nspawn's default system call filter
                "--system-call-filter=@keyring", "-D", self.rootfs]
        with open(self.console_path, "ab") as console:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(["/bin/sh", "-c", enter + 'exec "$@"', "machine", *argv],
                                          stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.started_at = time.time()
        log.info("machine %s: booting %s at %s (pid %d)", self.instance_id, os.path.basename(self.image_root),
                 self.address, self._proc.pid)

    def _make_cgroups(self) -> list[str]:
        made = []
        for hierarchy in CGROUP_HIERARCHIES:
            if os.path.isdir(hierarchy):
                folder = os.path.join(hierarchy, CGROUP_PARENT, self.instance_id)
                os.makedirs(folder, exist_ok=True)
                made.append(folder)
        return made

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, deadline_s: float = 60.0) -> None:
        """Orderly poweroff (nspawn turns SIGTERM into a shutdown of the machine's systemd), SIGKILL past the
        deadline; then the forwarders, IMDS, the overlay and the namespace go. The console log stays."""
        if self._proc is not None and self._proc.poll() is None:
            _power_off(self._proc.pid, self._proc.wait, deadline_s, self.instance_id)
        if self.network is not None:
            _kill_namespace(self.netns)  # nothing of the machine may outlive it (see _power_off)
        for forwarder in self._forwarders:
            forwarder.stop()
        self._forwarders = []
        if self.imds is not None:
            self.imds.stop()
        if self._mounted:
            if _run("umount", self.rootfs, check=False).returncode != 0:
                _run("umount", "-l", self.rootfs, check=False)  # something still holds it: detach it now
            self._mounted = os.path.ismount(self.rootfs)
        if not self._mounted:
            _remove_parts(self.workdir)
        if self.network is not None:
            self.network.remove()
            self.network = None
        _remove_leftovers(self.instance_id)

    def console(self) -> str:
        """The most recent CONSOLE_LIMIT bytes of the console, as GetConsoleOutput gives them."""
        try:
            with open(self.console_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - CONSOLE_LIMIT))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """A command inside the running machine (tests and diagnostics: systemctl, journalctl, docker)."""
        if not self.running():
            raise MachineError(f"machine {self.instance_id} is not running")
        return run_in(self._proc.pid, *argv, timeout=timeout)

    @property
    def pid(self) -> int | None:
        """nspawn's process id, while it runs."""
        return self._proc.pid if self.running() else None

    @property
    def init_pid(self) -> int | None:
        """The machine's own PID 1 (its systemd), while it runs."""
        try:
            return _machine_init(self._proc.pid) if self.running() else None
        except (MachineError, OSError):
            return None


def run_in(nspawn_pid: int, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """A command in the machine whose nspawn process is `nspawn_pid`, in all its namespaces."""
    leader = _machine_init(nspawn_pid)
    # The machine's own environment, not this host's: a DOCKER_HOST or AWS_* set here means nothing in there.
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8"}
    return subprocess.run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _power_off(pid: int, wait, deadline_s: float, name: str) -> None:
    """SIGTERM: nspawn halts the machine in order. A machine still early in its boot may not act on it; a
    second SIGTERM makes nspawn end it at once. Last, SIGKILL to the machine's PID 1, which ends its whole PID
    namespace, and to nspawn: a SIGKILLed nspawn passes nothing on, and its machine would run on, orphaned."""
    steps = ((signal.SIGTERM, max(1.0, deadline_s - 10.0)), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
    for number, (sig, wait_s) in enumerate(steps):
        try:
            if sig == signal.SIGKILL:
                try:
                    os.kill(_machine_init(pid), signal.SIGKILL)
                except (MachineError, OSError):
                    pass
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait(wait_s)
            if number:
                log.warning("machine %s: no orderly poweroff within %.0fs: ended with %s", name, steps[0][1],
                            signal.Signals(sig).name)
            return
        except subprocess.TimeoutExpired:
            continue
    log.error("machine %s: nspawn %d outlived SIGKILL", name, pid)


def _kill_namespace(netns: str) -> None:
    """Every process still in the network namespace (a machine orphaned by a killed nspawn): SIGKILL."""
    for _ in range(30):  # SIGKILL, then until they are gone (3 s at most): their cgroups go only once empty
        out = _run("ip", "netns", "pids", netns, check=False)
        if not out.stdout.split():
            return
        for word in out.stdout.split():
            try:
                os.kill(int(word), signal.SIGKILL)
            except (ValueError, OSError):
                pass
        time.sleep(0.1)
    log.warning("processes still in %s after SIGKILL", netns)


def _remove_parts(workdir: str) -> None:
    for part in PARTS:
        shutil.rmtree(os.path.join(workdir, part), ignore_errors=True)


def _remove_leftovers(instance_id: str) -> None:
    """What nspawn leaves when it is killed: its propagation folder; and the machine's own cgroups."""
    shutil.rmtree(f"/run/systemd/nspawn/propagate/{instance_id}", ignore_errors=True)
    for hierarchy in CGROUP_HIERARCHIES:
        top = os.path.join(hierarchy, CGROUP_PARENT, instance_id)
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(folder)  # a cgroup folder goes with rmdir, leaves first, once no process is in it
            except OSError:
                pass


def sweep(instances_dir: str) -> list[str]:
    """What a fleet that stopped badly left under its instances folder: nspawn processes booting a rootfs
    there, overlay mounts, the namespaces of those instance ids. Removes them; returns the instance ids."""
    swept = []
    if not os.path.isdir(instances_dir):
        return swept
    booting = _nspawn_pids()
    for instance_id in sorted(os.listdir(instances_dir)):
        rootfs = os.path.join(os.path.abspath(instances_dir), instance_id, "rootfs")
        for pid in booting.get(rootfs, []):
            _power_off(pid, lambda t, pid=pid: _wait_gone(pid, t), 15.0, instance_id)
        netns = NETNS_PREFIX + instance_id
        if os.path.exists(f"/run/netns/{netns}"):
            _kill_namespace(netns)  # a machine whose nspawn was killed runs on in there
        left = os.path.ismount(rootfs)
        if left:
            _run("umount", "-l", rootfs, check=False)
        if os.path.exists(f"/run/netns/{netns}"):
            _run("ip", "netns", "del", netns, check=False)
            left = True
        _remove_leftovers(instance_id)
        if left:
            swept.append(instance_id)
        _remove_parts(os.path.join(instances_dir, instance_id))
    return swept


def _nspawn_pids() -> dict[str, list[int]]:
    """{root folder: the systemd-nspawn processes booting it (their -D argument)}, from one pass over /proc."""
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and b"-D" in argv[:-1]:
            root = argv[argv.index(b"-D") + 1].decode(errors="replace")
            found.setdefault(root, []).append(int(entry))
    return found


def _wait_gone(pid: int, timeout: float) -> None:
    """Popen.wait's contract for a process that is not our child: TimeoutExpired if it outlives `timeout`."""
    try:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), f"process {pid} to end", timeout, 0.1)
    except WaitTimeout:
        raise subprocess.TimeoutExpired(str(pid), timeout) from None


def _machine_init(nspawn_pid: int) -> int:
    """The machine's PID 1 (systemd), the child of the nspawn process."""
    with open(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children") as f:
        children = f.read().split()
    if not children:
        raise MachineError(f"nspawn {nspawn_pid} has no machine process yet")
    return int(children[0])
