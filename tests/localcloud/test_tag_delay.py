"""X1 as a fault: with `tag_visibility_delay_s`, a tag CreateTags writes is not returned by DescribeTags or
matched by a DescribeInstances tag filter until that many AWS seconds have passed on the layer's clock."""

from __future__ import annotations


def _tags(world, iid: str) -> dict[str, str]:
    reply = world.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])
    return {t["Key"]: t["Value"] for t in reply["Tags"]}


def _matching(world, key: str, value: str) -> list[str]:
    reply = world.ec2.describe_instances(Filters=[{"Name": f"tag:{key}", "Values": [value]}])
    return [i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]]


def test_x1_a_new_tag_is_invisible_for_the_delay_then_visible(world, stopped_clock):
    (iid,) = world.instances(1)
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": "phase", "Value": "old"}])  # before the fault
    world.cloud.configure_faults(tag_visibility_delay_s=30)
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": "bluegreen:detached", "Value": "run-1"},
                                                  {"Key": "phase", "Value": "new"}])
    # X1: the new key is not returned, the overwritten one still reads as before.
    assert _tags(world, iid) == {"phase": "old"}
    assert _matching(world, "bluegreen:detached", "run-1") == []
    assert _matching(world, "phase", "new") == []
    assert _matching(world, "phase", "old") == [iid]
    stopped_clock.advance(29)
    assert _tags(world, iid) == {"phase": "old"}
    stopped_clock.advance(1)
    assert _tags(world, iid) == {"bluegreen:detached": "run-1", "phase": "new"}
    assert _matching(world, "bluegreen:detached", "run-1") == [iid]


def test_x1_without_the_fault_a_tag_is_visible_at_once(world, stopped_clock):
    (iid,) = world.instances(1)
    world.ec2.create_tags(Resources=[iid], Tags=[{"Key": "bluegreen:detached", "Value": "run-1"}])
    assert _matching(world, "bluegreen:detached", "run-1") == [iid]
