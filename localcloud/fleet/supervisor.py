"""Follows the emulated AWS and makes the machine match it: instances launched get a real agent, instances
detached or terminated lose their stack, and HAProxy follows the target groups (plan.py).

One loop, one poll interval: read new events (GET /_localcloud/events), read every known target group's
health (DescribeTargetHealth, one call per group per poll), apply the plan. Clients are made by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from agent.contract import TAG_VERSION
from localcloud.aws.cross_zone import KEY as CROSS_ZONE_KEY
from localcloud.aws.cross_zone import resolve as resolve_cross_zone
from localcloud.fleet import FleetError, FleetTimeout
from localcloud.fleet.control import ControlClient
from localcloud.fleet.haproxy import LoadBalancer
from localcloud.fleet.instances import Instance, VersionGate
from localcloud.fleet.plan import Action, merge_target_health, plan_load_balancer, plan_zone_routing, routes_by_zone
from localcloud.polling import WaitTimeout, wait_until
from localcloud.ports import NoFreePort, free_port

log = logging.getLogger(__name__)

VERSION_TAG = TAG_VERSION
_TRANSIENT = (FleetError, NoFreePort, BotoCoreError, ClientError, OSError)
LAUNCH_TRIES = 3  # polls a launch whose description cannot be read is tried on before it is given up


class Unlaunched:
    """An instance the fleet could not even make (what it launched from was unreadable): listed, never run."""

    def __init__(self, instance_id: str, group: str, version: str | None, why: str) -> None:
        self.instance_id, self.group, self.version = instance_id, group, version
        self.agent_state = f"not launched ({why})"

    def stop(self, deadline_s: float = 0.0) -> None:
        pass

    def imds_server(self):
        return None

    def as_dict(self) -> dict:
        return {"instance_id": self.instance_id, "group": self.group, "version": self.version,
                "agent": self.agent_state, "app_port": 0}


FAULTS_DIR = "imds-faults"


class FleetSupervisor:
    def __init__(self, control: ControlClient, autoscaling: Any, elbv2: Any, lb: LoadBalancer, state_dir: str,
                 aws_endpoint: str, region: str, docker_host: str, agent_settings: dict | None = None,
                 time_scale: float = 1.0, poll_interval: float = 0.2, boot_seconds: float = 0.0,
                 on_change: Callable[[], None] | None = None,
                 instance_factory: Callable[..., Instance] = Instance) -> None:
        self.control = control
        self.autoscaling = autoscaling
        self.elbv2 = elbv2
        self.lb = lb
        self.state_dir = os.path.abspath(state_dir)
        self.aws_endpoint = aws_endpoint
        self.region = region
        self.docker_host = docker_host
        self.agent_settings = agent_settings or {}
        self.time_scale = time_scale
        # AWS seconds from launch to the agent's start: EC2's own launch and the OS boot, which the fleet's
        # containers skip (0 by default; bench/rollback_time.py sets a published measurement).
        self.boot_seconds = boot_seconds
        self.poll_interval = poll_interval
        self.on_change = on_change
        self.instance_factory = instance_factory  # tests stand a tiny HTTP app in for agent + stack
        self.gate = VersionGate()
        self.instances: dict[str, Instance] = {}
        self.retired: dict[str, Instance] = {}
        self.target_groups: dict[str, dict] = {}  # arn -> {"interval", "rise", "fall"}
        self.targets: dict[str, str] = {}  # instance id -> target group state, as last read
        self.zone_of: dict[str, str] = {}  # instance id -> Availability Zone (E6: only with lb.zones)
        self.registered: dict[str, set] = {}  # target group ARN -> instance ids it lists, as last read
        self.ports_taken: set = set()
        self.fed: dict[str, str | None] = {}
        self._seq = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retiring: list[threading.Thread] = []
        self.ticks = 0
        self.last_error: str | None = None
        self._launch_failures: dict[str, int] = {}
        self._unaddressed: set = set()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> FleetSupervisor:
        self._thread = threading.Thread(target=self._loop, name="fleet-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, deadline_s: float = 90.0) -> None:
        """Stop following AWS, then stop every instance (agents, stacks, IMDS), in parallel."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(deadline_s)
        with self._lock:
            everything = list(self.instances.values())
            self.instances.clear()
        threads = [threading.Thread(target=self._stop_instance, args=(i, deadline_s)) for i in everything]
        for thread in threads:
            thread.start()
        for thread in threads + self._retiring:
            thread.join(deadline_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except _TRANSIENT as exc:
                # A daemon outlives a failed poll: say so once per distinct error and try again next poll.
                if str(exc) != self.last_error:
                    log.warning("fleet: poll failed, retrying: %s", exc)
                self.last_error = str(exc)
            self._stop.wait(self.poll_interval)

    # -- one poll -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        events, last = self.control.events(self._seq)
        for event in events:
            self._on_event(event)
        self._seq = last
        self._reconcile_load_balancer()
        self._apply_imds_faults()
        self.ticks += 1

    def _apply_imds_faults(self) -> None:
        """`bluegreen-localcloud imds-fault` (commands.imds_fault) drops a request per instance in FAULTS_DIR:
        applied to that instance's IMDS here, then removed, which is how the command knows it took effect."""
        folder = os.path.join(self.state_dir, FAULTS_DIR)
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(folder, name)
            with self._lock:
                instance = self.instances.get(name[:-len(".json")])
            imds = instance.imds_server() if instance is not None else None
            if imds is None:
                continue  # not launched yet, or gone: the command times out and says so
            try:
                with open(path) as f:
                    fault = json.load(f)
            except (OSError, ValueError):
                continue  # being written
            if fault.get("expire_tokens"):
                imds.expire_tokens()
            if "fail_for" in fault:
                imds.fail_for(float(fault["fail_for"]), int(fault.get("status", 503)))
            log.info("instance %s: IMDS fault applied: %s", instance.instance_id, fault)
            os.remove(path)

    def _on_event(self, event: dict) -> None:
        kind, instance_id = event["type"], event["instance_id"]
        if kind == "instance_launched":
            self._launch(instance_id, event.get("group"))
        elif kind in ("instance_terminated", "instance_detached"):
            self._retire(instance_id, kind)
        elif kind == "target_registered" and event.get("target_group_arn"):
            self._learn_target_group(event["target_group_arn"])

    def _launch(self, instance_id: str, group: str | None) -> None:
        with self._lock:
            if instance_id in self.instances or instance_id in self.retired:
                return
            version = self._group_version(group) if group else None
            workdir = os.path.join(self.state_dir, "instances", instance_id)
            try:
                instance = self.instance_factory(instance_id, group or "", version, free_port(self.ports_taken),
                                                 workdir, self.aws_endpoint, self.region, self.docker_host,
                                                 self.gate, self.agent_settings)
            except _TRANSIENT as exc:
                # A poll that failed is tried again (the event is read again next poll), LAUNCH_TRIES times; then
                # what it launched from cannot be read (the group or its template is gone already): this one
                # instance never boots, as on EC2 its launch would fail, and the hook's timeout ends it. One bad
                # event must not hold up every event after it for long.
                tries = self._launch_failures[instance_id] = self._launch_failures.get(instance_id, 0) + 1
                if tries < LAUNCH_TRIES:
                    raise
                log.error("fleet: instance %s of %s cannot be launched: %s", instance_id, group, exc)
                self.retired[instance_id] = Unlaunched(instance_id, group or "", version, str(exc))
                return
            self.instances[instance_id] = instance
        log.info("fleet: instance %s launched in %s (version %s, app port %d)", instance_id, group, version,
                 instance.app_port)
        if self.boot_seconds > 0:
            boot = threading.Timer(self.boot_seconds * self.time_scale, self._boot, args=(instance_id,))
            boot.daemon = True
            boot.start()
        else:
            self._start(instance)
        self._changed()

    def _start(self, instance: Instance) -> None:
        # An instance that cannot even start (a machine whose namespace or overlay failed) stays listed with
        # its failure: the launch hook's own timeout ABANDONs it, as EC2's would an instance that never booted.
        try:
            instance.start()
        except FleetError as exc:
            log.error("fleet: instance %s did not start: %s", instance.instance_id, exc)

    def _boot(self, instance_id: str) -> None:
        """The booted instance's agent starts, unless it was terminated or detached while it booted."""
        with self._lock:
            instance = self.instances.get(instance_id)
            if instance is None or self._stop.is_set():
                return
            self._start(instance)
        self._changed()

    def _retire(self, instance_id: str, why: str) -> None:
        with self._lock:
            instance = self.instances.pop(instance_id, None)
            if instance is None:
                return
            self.retired[instance_id] = instance
        log.info("fleet: instance %s %s: stopping its stack", instance_id, why.split("_", 1)[1])
        thread = threading.Thread(target=self._stop_instance, args=(instance, 60.0), daemon=True)
        self._retiring.append(thread)
        thread.start()
        self._changed()

    def _stop_instance(self, instance: Instance, deadline_s: float) -> None:
        # On AWS a terminated or detached instance has left the load balancer (draining, E2) before it goes
        # away: take it out of rotation here first and let requests in flight finish, then stop it.
        try:
            if instance.instance_id in self.lb.servers():
                self.lb.drain(instance.instance_id)
                self.lb.wait_idle(instance.instance_id, deadline_s=10.0)
        except FleetError as exc:
            log.warning("fleet: could not drain %s before stopping it: %s", instance.instance_id, exc)
        try:
            instance.stop(deadline_s)
        except FleetError as exc:
            log.error("fleet: stopping %s: %s", instance.instance_id, exc)
        self._changed()

    def _group_version(self, group: str) -> str | None:
        paginator = self.autoscaling.get_paginator("describe_tags")  # A9
        pages = paginator.paginate(Filters=[{"Name": "auto-scaling-group", "Values": [group]},
                                            {"Name": "key", "Values": [VERSION_TAG]}])
        for page in pages:
            for tag in page.get("Tags", []):
                return tag["Value"]
        return None

    def _learn_target_group(self, arn: str) -> None:
        if arn in self.target_groups:
            return
        group = self.elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
        # HAProxy checks each server as the target group would (E1), on the emulation's clock.
        interval = float(group.get("HealthCheckIntervalSeconds", 30)) * self.time_scale
        self.target_groups[arn] = {"interval": interval,
                                   "rise": int(group.get("HealthyThresholdCount", 5)),
                                   "fall": int(group.get("UnhealthyThresholdCount", 2))}
        log.info("fleet: following target group %s (checks every %ss, healthy after %d, unhealthy after %d)",
                 arn.rsplit(":", 1)[-1], *self.target_groups[arn].values())

    # -- the load balancer ------------------------------------------------------------------------------------
    def _reconcile_load_balancer(self) -> None:
        descriptions = [self.elbv2.describe_target_health(TargetGroupArn=arn) for arn in list(self.target_groups)]
        targets = merge_target_health(descriptions)
        membership = {}
        registered: dict[str, set] = {}
        for arn, description in zip(list(self.target_groups), descriptions):
            for item in description.get("TargetHealthDescriptions", []):
                membership.setdefault(item["Target"]["Id"], arn)
                registered.setdefault(arn, set()).add(item["Target"]["Id"])
        self.registered = registered
        servers = self.lb.servers()
        with self._lock:
            ports = {i: inst.app_port for i, inst in self.instances.items()}
        actions = plan_load_balancer(targets, servers, ports, self.fed)
        changed = targets != self.targets
        self.targets = targets
        for action in actions:
            self._apply(action, membership.get(action.instance_id))
        if self.lb.zones:
            self._route_zones(targets)
        if actions or changed:
            self._changed()

    def _route_zones(self, targets: dict[str, str]) -> None:
        """E6: each zone's node routes as the target groups' cross-zone setting says (plan.routes_by_zone)."""
        missing = sorted(i for i in targets if i not in self.zone_of)
        for start in range(0, len(missing), 50):  # A9: at most 50 ids a call
            answer = self.autoscaling.describe_auto_scaling_instances(InstanceIds=missing[start:start + 50])
            for item in answer.get("AutoScalingInstances", []):
                self.zone_of[item["InstanceId"]] = item["AvailabilityZone"]
        routes = routes_by_zone(targets, self.zone_of, self.lb.zones, self._cross_zone())
        zone_servers = {zone: self.lb.zone_servers(zone) for zone in self.lb.zones}
        for zone, instance_id, routed in plan_zone_routing(routes, zone_servers, self.lb.servers()):
            self.lb.route_in_zone(zone, instance_id, routed)

    def _cross_zone(self) -> bool:
        """E6: on when any followed target group has it on (HAProxy stands for one load balancer)."""
        for arn in list(self.target_groups):
            attributes = {a["Key"]: a["Value"] for a in
                          self.elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
            group = self.elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
            lb_type = lb_value = None
            for lb_arn in group.get("LoadBalancerArns", [])[:1]:
                lb_type = self.elbv2.describe_load_balancers(LoadBalancerArns=[lb_arn])["LoadBalancers"][0]["Type"]
                lb_value = {a["Key"]: a["Value"] for a in self.elbv2.describe_load_balancer_attributes(
                    LoadBalancerArn=lb_arn)["Attributes"]}.get(CROSS_ZONE_KEY)
            if resolve_cross_zone(attributes.get(CROSS_ZONE_KEY), lb_type, lb_value):
                return True
        return False

    def _apply(self, action: Action, target_group_arn: str | None) -> None:
        name = action.instance_id
        if action.kind == "add":
            checks = self.target_groups.get(target_group_arn, {})
            with self._lock:
                instance = self.instances.get(name)
            # A machine has its own address (machine_instance.py); a process instance listens on loopback.
            address = getattr(instance, "address", "127.0.0.1")
            if address is None:
                if name not in self._unaddressed:  # once: the same plan comes back every poll
                    self._unaddressed.add(name)
                    log.warning("fleet: %s has no address (its machine did not start): not added", name)
                return
            self.lb.add_server(name, address, int(action.value), checks.get("interval"), checks.get("rise"),
                               checks.get("fall"))
        elif action.kind == "route":
            self.lb.route(name)
        elif action.kind == "drain":
            self.lb.drain(name)
        elif action.kind == "reset":
            self.lb.reset_health(name)
        elif action.kind == "remove":
            self.lb.remove_server(name, deadline_s=5.0)
        elif action.kind == "feed":
            # None hands the target back to the emulation's own (out-of-reach) timer: `initial`.
            self.control.set_target_health(name, action.value)
            if action.value is None:
                self.fed.pop(name, None)
            else:
                self.fed[name] = action.value
            if action.value == "healthy":
                with self._lock:
                    instance = self.instances.get(name)
                if hasattr(instance, "mark"):
                    instance.mark("healthy")  # a machine's boot-to-healthy (docs/benchmarks.md)
            log.info("fleet: target %s reported %s by the load balancer's checks", name, action.value or "initial")

    # -- reporting --------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except OSError as exc:
                log.warning("fleet: could not record state: %s", exc)

    def snapshot(self) -> dict:
        try:
            servers = self.lb.servers()
        except FleetError:
            servers = {}
        with self._lock:
            instances = [dict(i.as_dict(), state="running") for i in self.instances.values()]
            instances += [dict(i.as_dict(), state="stopped") for i in self.retired.values()]
        for item in instances:
            server = servers.get(item["instance_id"])
            item["target"] = self.targets.get(item["instance_id"])
            item["lb"] = None if server is None else ("routed" if server.routed else "not routed") + (
                ", up" if server.up else ", down")
        return {"instances": instances, "target_groups": sorted(self.target_groups), "last_error": self.last_error}

    def layout(self) -> tuple[dict[str, set], dict[str, str]]:
        """({target group ARN: instance ids it lists}, {instance id: its group}) for the metrics (metrics.py);
        retired instances keep their group, so counts from their last requests still find it."""
        with self._lock:
            groups = {i: inst.group for i, inst in list(self.retired.items()) + list(self.instances.items())}
        return {arn: set(ids) for arn, ids in self.registered.items()}, groups

    def routed_count(self) -> int:
        """Targets the target group calls healthy and HAProxy routes to."""
        servers = self.lb.servers()
        return sum(1 for i, s in servers.items() if s.routed and self.targets.get(i) == "healthy")

    def wait_for(self, predicate: Callable[[], Any], what: str, deadline_s: float, interval: float = 0.2) -> Any:
        """wait_until, with the whole fleet's state in the error: the predicate's own value says little."""
        try:
            return wait_until(predicate, what, deadline_s, interval)
        except WaitTimeout:
            raise FleetTimeout(f"timed out after {deadline_s}s waiting for {what}; last state: {self.snapshot()}") \
                from None
