"""One emulated EC2 instance as a booted machine (localcloud/machines.py): the fleet's default instance kind.

The fleet's supervisor makes one per launched instance through `MachineFactory`, which reads what EC2 would
launch it from: the group's launch template (ImageId, UserData, IamInstanceProfile, MetadataOptions). The
machine then boots the image root that ImageId names, cloud-init applies the user-data, systemd runs the baked
agent unit, and the agent finds its instance, Region and credentials through IMDS at 169.254.169.254, its group
and bundle through the emulated AWS, and pulls from the local registry into the machine's own Docker engine.
Nothing of the agent is started by the fleet.

MetadataOptions.HttpEndpoint "disabled" turns the machine's IMDS off (every request answers 403, I1), as EC2
does, and with it the user-data, which EC2's datasource reads from IMDS: cloud-init runs with none, writes no
settings, the agent unit's condition fails, and only the launch hook's own timeout releases the launch (A6).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from typing import Any, Callable

from localcloud.fleet import FleetError
from localcloud.imds import IMDSServer
from localcloud.machines import Machine, MachineError

log = logging.getLogger(__name__)

APP_PORT = 8080  # every machine has its own address, so every app listens on the template's AppPort
AGENT_UNIT = "bluegreen-agent.service"
CLOUD_FINAL = "cloud-final.service"  # cloud-init's last stage: its end splits a boot in docs/benchmarks.md
# How often the agent unit's state is read while it runs (one nsenter + systemctl): the milestones come from
# systemd's own time stamps, so a slower read loses no precision.
FOLLOW_INTERVAL = 1.0


class LaunchSpec:
    """What EC2 launches an instance from, read from its group's launch template."""

    def __init__(self, image_id: str, user_data: bytes, role: str | None, imds_enabled: bool) -> None:
        self.image_id = image_id
        self.user_data = user_data
        self.role = role
        self.imds_enabled = imds_enabled


def _launch_data(autoscaling: Any, ec2: Any, group: str) -> dict:
    """The LaunchTemplateData of the version the group launches from."""
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    if not found:
        raise FleetError(f"group {group} is gone: nothing to launch from")
    spec = found[0].get("LaunchTemplate") or (found[0].get("MixedInstancesPolicy") or {}).get(
        "LaunchTemplate", {}).get("LaunchTemplateSpecification")
    if not spec:
        raise FleetError(f"group {group} has no launch template (the fleet boots launch templates only)")
    selector = {"LaunchTemplateId": spec["LaunchTemplateId"]} if spec.get("LaunchTemplateId") else {
        "LaunchTemplateName": spec["LaunchTemplateName"]}
    versions = ec2.describe_launch_template_versions(Versions=[str(spec.get("Version") or "$Default")], **selector)
    if not versions.get("LaunchTemplateVersions"):
        raise FleetError(f"group {group}'s launch template {selector} has no version {spec.get('Version')}")
    return versions["LaunchTemplateVersions"][0].get("LaunchTemplateData") or {}


def _profile_name(profile: dict | None) -> str:
    profile = profile or {}
    return profile.get("Name") or (profile.get("Arn") or "").rsplit("/", 1)[-1]


def _spec(iam: Any, group: str, data: dict, image_id: str, user_data: bytes, profile: str) -> LaunchSpec:
    role = _role_of(iam, profile, group) if profile else None
    imds_enabled = (data.get("MetadataOptions") or {}).get("HttpEndpoint", "enabled") != "disabled"
    return LaunchSpec(image_id, user_data, role, imds_enabled)


def read_launch_spec(autoscaling: Any, ec2: Any, iam: Any, group: str) -> LaunchSpec:
    data = _launch_data(autoscaling, ec2, group)
    user_data = base64.b64decode(data["UserData"]) if data.get("UserData") else b""  # bytes: gzip stays gzip
    return _spec(iam, group, data, data.get("ImageId", ""), user_data, _profile_name(data.get("IamInstanceProfile")))


def _role_of(iam: Any, profile: str, group: str) -> str | None:
    try:
        roles = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
        return roles[0]["RoleName"] if roles else None
    except Exception as exc:  # noqa: BLE001 -- a profile the emulation does not know: no credentials, as on EC2
        log.warning("fleet: instance profile %s of group %s: %s", profile, group, exc)
        return None


def read_instance_spec(autoscaling: Any, ec2: Any, iam: Any, group: str, instance_id: str) -> LaunchSpec:
    """The launch template's spec, with the ImageId, user-data and instance profile the instance itself was
    launched with (a group on $Latest or $Default may have a newer version by the time the fleet reads the
    template). MetadataOptions stay the template's: moto gives every instance default options of its own."""
    data = _launch_data(autoscaling, ec2, group)
    image_id = data.get("ImageId", "")
    user_data = base64.b64decode(data["UserData"]) if data.get("UserData") else b""
    profile = _profile_name(data.get("IamInstanceProfile"))
    try:
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        image_id = found.get("ImageId") or image_id
        profile = _profile_name(found.get("IamInstanceProfile")) or profile
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = (attribute.get("UserData") or {}).get("Value")
        if value:
            user_data = base64.b64decode(value)
    except (IndexError, KeyError):
        pass
    return _spec(iam, group, data, image_id, user_data, profile)


def vendor_data(aws_endpoint_port: int) -> str:
    """The emulation-only channel: where the emulated AWS answers. On EC2 the SDK's default endpoints do; here
    the machine reaches the host's emulated AWS at the same loopback port (machines.py's forwarders), named
    with AWS_ENDPOINT_URL (C1) in the agent units' optional EnvironmentFile. Never in the user-data.

    A vendor-data script, not cloud-config: cloud-init merges a vendor-data cloud-config UNDER the user-data's,
    so the user-data's own write_files would replace a vendor write_files. Vendor scripts run in cloud-final
    (scripts_vendor, before the user's runcmd), and the agent unit is ordered after cloud-final."""
    return ("#!/bin/sh\n"
            "# localcloud only: the emulated AWS's endpoint for the agent and its fallback (C1)\n"
            "set -e\n"
            "mkdir -p /etc/bluegreen\n"
            "# appended: the user-data's own write_files may have written this file first (init stage)\n"
            f"printf '\\nAWS_ENDPOINT_URL=http://127.0.0.1:{aws_endpoint_port}\\n' >> /etc/bluegreen/agent.env\n")


class MachineInstance:
    """The supervisor's view of one machine: the same face as instances.Instance (start, stop, agent_state)."""

    kind = "machine"

    def __init__(self, instance_id: str, group: str, version: str | None, workdir: str, machine: Machine,
                 image_id: str, on_console: Callable[[str, str], None] | None = None,
                 agent_deadline_s: float = 300.0) -> None:
        self.instance_id = instance_id
        self.group = group
        self.version = version
        self.app_port = APP_PORT
        self.workdir = os.path.abspath(workdir)
        self.machine = machine
        self.image_id = image_id
        self.on_console = on_console
        self.agent_deadline_s = agent_deadline_s
        self.agent_state = "not started"  # -> booting, running, succeeded, failed (...), stopped
        self.agent_exit: int | None = None
        self.timings: dict[str, float] = {}  # seconds from launch: booted, cloud-init, agent
        self._launched = time.time()
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def address(self) -> str | None:
        return self.machine.address

    def start(self) -> MachineInstance:
        self.agent_state = "booting"
        try:
            self.machine.start()
        except MachineError as exc:
            self.agent_state = f"failed ({exc})"
            raise FleetError(str(exc)) from exc
        self._watch = threading.Thread(target=self._follow, name=f"machine-{self.instance_id}", daemon=True)
        self._watch.start()
        return self

    # -- following the boot ---------------------------------------------------------------------------------
    def unit(self, name: str) -> dict:
        """systemctl show of a unit inside the machine: ActiveState, Result, ExecMainStatus, timestamps."""
        out = self.machine.run("systemctl", "show", name, "--property=ActiveState,Result,ExecMainStatus,"
                               "ConditionResult,ConditionTimestampMonotonic,ActiveEnterTimestampMonotonic,"
                               "InactiveExitTimestampMonotonic,ExecMainExitTimestampMonotonic", timeout=15)
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def _follow(self) -> None:
        """Follows the agent unit to its end (or the deadline), then posts the console (GetConsoleOutput)."""
        deadline = time.monotonic() + self.agent_deadline_s
        last = None
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if not self.machine.running():  # nspawn (or its cgroup wrapper) ended before the agent did
                code = self.machine.exit_code()
                self.agent_state = f"failed (the machine exited, code {code}: see its console)"
                log.error("instance %s: %s", self.instance_id, self.agent_state)
                self._post_console()
                break
            try:
                agent = self.unit(AGENT_UNIT)
            except (MachineError, OSError, ValueError):
                agent = {}
            state = self._agent_state(agent)
            final = state.startswith(("succeeded", "failed", "skipped"))
            if final:
                self._measure(agent)  # before the state says so: whoever sees "succeeded" finds the timings
                if agent.get("ExecMainStatus", "").isdigit():
                    self.agent_exit = int(agent["ExecMainStatus"])
            if state != last:
                last = state
                self.agent_state = state
                log.info("instance %s: agent %s", self.instance_id, state)
                self._post_console()
            if final:
                break
            self._stopping.wait(FOLLOW_INTERVAL)

    @staticmethod
    def _agent_state(unit: dict) -> str:
        active, result = unit.get("ActiveState", ""), unit.get("Result", "")
        if not active:
            return "booting"
        if active == "failed":
            return f"failed ({result}, exit {unit.get('ExecMainStatus', '?')})"
        if active == "active":
            return "succeeded"
        if active == "activating":
            return "running"
        # A failed condition changes no state: systemd only stamps the check (ConditionTimestamp).
        if unit.get("ConditionResult") == "no" and unit.get("ConditionTimestampMonotonic", "0") not in ("", "0"):
            return "skipped (a unit condition failed: no /etc/bluegreen/agent.yml?)"
        return "booting"

    def _measure(self, agent: dict) -> None:
        """Seconds from launch to each boot milestone, from the machine's own monotonic clock (docs/benchmarks.md)."""
        try:
            up = float(self.machine.run("cat", "/proc/uptime").stdout.split()[0])
            final = self.unit(CLOUD_FINAL)
        except (MachineError, OSError, ValueError, IndexError):
            return
        now = time.time()
        boot_at = self.machine.started_at or self._launched

        def at(value: str) -> float | None:
            # systemd's monotonic stamps are the host's CLOCK_MONOTONIC (one kernel): now - (uptime - stamp)
            return None if not value or value == "0" else round(now - (up - int(value) / 1e6) - self._launched, 2)

        self.timings.update({"machine_start": round(boot_at - self._launched, 2),
                             "agent_start": at(agent.get("InactiveExitTimestampMonotonic", "")),
                             "cloud_init_done": at(final.get("ActiveEnterTimestampMonotonic", "")),
                             "agent_done": at(agent.get("ExecMainExitTimestampMonotonic", ""))})

    def mark(self, milestone: str) -> None:
        """A milestone the fleet sees from outside (the target group's first `healthy`), in seconds from launch."""
        self.timings.setdefault(milestone, round(time.time() - self._launched, 2))

    def _post_console(self) -> None:
        if self.on_console is not None:
            try:
                self.on_console(self.instance_id, self.machine.console())
            except FleetError as exc:
                log.warning("instance %s: could not post the console: %s", self.instance_id, exc)

    def stop(self, deadline_s: float = 60.0) -> None:
        """Termination: an orderly poweroff; the console is posted once more, after the machine is gone."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(10)
        try:
            self.machine.stop(deadline_s)
        except (MachineError, OSError) as exc:
            raise FleetError(f"machine {self.instance_id}: {exc}") from exc
        if not self.agent_state.startswith(("succeeded", "failed", "skipped")):
            self.agent_state = "stopped"
        self._post_console()
        log.info("instance %s: machine powered off", self.instance_id)

    def imds_server(self) -> IMDSServer | None:
        """Its IMDS, for the fleet's fault requests (supervisor._apply_imds_faults)."""
        return self.machine.imds

    def as_dict(self) -> dict:
        return {"instance_id": self.instance_id, "group": self.group, "version": self.version, "kind": self.kind,
                "image_id": self.image_id, "address": self.address, "app_port": self.app_port,
                "pid": self.machine.pid, "init_pid": self.machine.init_pid, "netns": self.machine.netns,
                "workdir": self.workdir, "console": self.machine.console_path, "agent": self.agent_state,
                "agent_exit": self.agent_exit, "timings": self.timings}


class MachineFactory:
    """The supervisor's instance_factory for machines. `images` maps an ImageId to an image root; any other
    ImageId boots `default_root` (the baked image, scripts/bake-debian-root.sh)."""

    def __init__(self, autoscaling: Any, ec2: Any, iam: Any, default_root: str, aws_port: int,
                 registry_port: int | None, images: dict | None = None,
                 on_console: Callable[[str, str], None] | None = None, agent_deadline_s: float = 300.0,
                 extra_forwards: tuple = ()) -> None:
        self.autoscaling, self.ec2, self.iam = autoscaling, ec2, iam
        self.default_root = default_root
        self.aws_port = aws_port
        self.registry_port = registry_port
        self.images = dict(images or {})
        self.on_console = on_console
        self.agent_deadline_s = agent_deadline_s
        self.extra_forwards = tuple(extra_forwards)  # more host loopback ports a machine reaches (a work queue)

    def __call__(self, instance_id: str, group: str, version: str | None, app_port: int, workdir: str,
                 aws_endpoint: str, region: str, docker_host: str, gate: Any,
                 agent_settings: dict | None = None) -> MachineInstance:
        spec = read_instance_spec(self.autoscaling, self.ec2, self.iam, group, instance_id)
        root = self.images.get(spec.image_id, self.default_root)
        imds = IMDSServer(instance_id, region=region, aws_endpoint=aws_endpoint, role=spec.role)
        imds.disabled = not spec.imds_enabled  # MetadataOptions.HttpEndpoint: disabled answers 403 (I1)
        forwards = tuple(p for p in (self.aws_port, self.registry_port, *self.extra_forwards) if p)
        # EC2's datasource reads the user-data from IMDS: with the endpoint disabled cloud-init still runs (EC2 is
        # recognised without IMDS) but gets no user-data, so the machine's seed carries an empty one.
        user_data = spec.user_data if spec.imds_enabled else b""
        machine = Machine(instance_id, root, workdir, user_data, vendor_data(self.aws_port), imds=imds,
                          forwards=forwards)
        return MachineInstance(instance_id, group, version, workdir, machine, spec.image_id, self.on_console,
                               self.agent_deadline_s)
