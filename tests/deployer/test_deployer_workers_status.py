"""`bluegreen status` shows whether each instance's in-service-only services run (issue 16), from the
`bluegreen:workers` tag its agent's watch keeps current; nothing for an instance without the tag."""

from __future__ import annotations

import json

from agent import contract
from tests.helpers import expect_exit


def test_status_shows_each_instances_workers_tag(make_harness):
    fleet = make_harness(capacity=2)
    out = fleet.bluegreen("status", "demo", "--output", "json")
    expect_exit(out, 0)
    data = json.loads(out.stdout)
    ids = [i["id"] for i in data["groups"][data["live"]]["instances"]]
    assert len(ids) == 2 and {i["workers"] for i in data["groups"][data["live"]]["instances"]} == {None}
    fleet.session.client("ec2").create_tags(Resources=[ids[0]],
                                            Tags=[{"Key": contract.TAG_WORKERS, "Value": "stopped"}])
    data = json.loads(fleet.bluegreen("status", "demo", "--output", "json").stdout)
    shown = {i["id"]: i["workers"] for i in data["groups"][data["live"]]["instances"]}
    assert shown == {ids[0]: "stopped", ids[1]: None}
    text = fleet.bluegreen("status", "demo").stdout
    [line] = [line for line in text.splitlines() if ids[0] in line]
    assert line.endswith("workers stopped")
    assert "workers" not in next(line for line in text.splitlines() if ids[1] in line)
