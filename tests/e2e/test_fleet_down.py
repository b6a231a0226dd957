"""`bluegreen-localcloud down` on a fleet of its own: it stops and removes everything `up` made.

Apart from test_fleet.py, whose fleet its tests share: a module's fleet is stopped before the next module
starts one, so this test's fleet never runs beside it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.e2e


def test_down_stops_and_removes_everything_it_made(own_fleet):
    fleet = own_fleet
    local = fleet.localcloud_status()["state"]
    machines = {i["instance_id"]: i for i in local["fleet"]["instances"] if i["state"] == "running"}
    assert len(machines) == 3 and set(machines) <= set(fleet.containers())
    haproxy_pid = local["haproxy_pid"]
    assert os.path.exists(f"/proc/{haproxy_pid}")
    for item in machines.values():
        assert os.path.exists(f"/proc/{item['pid']}") and os.path.exists(f"/run/netns/{item['netns']}")
        assert os.path.ismount(os.path.join(item["workdir"], "rootfs"))
    out = fleet.localcloud("down")
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(f"/proc/{haproxy_pid}")
    assert not os.path.exists(fleet.state_dir)
    # Every machine powered off (its systemd too: nothing orphaned), its namespace, veth, overlay and cgroups gone.
    links = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for item in machines.values():
        assert not os.path.exists(f"/proc/{item['pid']}") and not os.path.exists(f"/proc/{item['init_pid']}")
        assert not os.path.exists(f"/run/netns/{item['netns']}")
        host_end = ".".join(item["address"].split(".")[:3] + [str(int(item["address"].split(".")[3]) - 1)])
        assert f" {host_end}/30 " not in links, links
        for hierarchy in ("systemd", "unified"):
            assert not os.path.exists(f"/sys/fs/cgroup/{hierarchy}/bluegreen-machines/{item['instance_id']}")
        assert not os.path.exists(f"/run/systemd/nspawn/propagate/{item['instance_id']}")
    with open("/proc/self/mounts") as f:
        assert fleet.state_dir not in f.read()
    after = fleet.localcloud("status")
    assert after.returncode == 3 and "no local fleet is running" in after.stdout
    # The shared engine and registry were running before `up`, so `down` left them alone.
    assert fleet.run("docker", "version").returncode == 0
