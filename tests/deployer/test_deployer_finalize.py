"""Finalize terminates the ids it detached, known at detach time (deployer-audit findings 13 and 23, X1), with and
without a state store, in process on the fake clock against the emulator's tag-visibility delay."""

import json

import pytest

from tests.helpers import expect_exit

BUCKET, LOCK = "bluegreen-bootstrap", "demo/.bluegreen/demo/lock.json"


def without_store(fleet):
    """No state store: the groups name no bluegreen:bootstrap (nor bluegreen:state), so the tags are the lock."""
    fleet.asg.delete_tags(Tags=[{"ResourceId": fleet.svc["groups"][c], "ResourceType": "auto-scaling-group",
                                 "Key": "bluegreen:bootstrap"} for c in ("blue", "green")])
    return fleet


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
def test_finalize_under_the_x1_tag_delay_terminates_every_detached_id(make_harness, aws, store):
    fleet = make_harness(capacity=21)  # two detach batches (A3: at most 20 ids a call)
    if not store:
        without_store(fleet)
    blue = set(fleet.lifecycles("blue"))
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 21, "2.0")
    # X1: the bluegreen:retired-from tag finalize writes stays invisible to DescribeTags for 60 AWS seconds.
    aws.configure_faults(tag_visibility_delay_s=60)
    out = fleet.bluegreen("finalize", "demo")
    expect_exit(out, 0)
    states = fleet.ec2_states(blue)
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    fleet.assert_serving_only("green", 21, "2.0")
    # With a store the ids are known: no waiting for the tags. Without one, the search backs off until the tags
    # show, so that a rerun could find them too.
    assert ("not yet found by their tag; searching again" in out.stderr) is not store


def test_the_state_store_keeps_the_detached_ids_before_each_detach(make_harness):
    fleet = make_harness(capacity=3)
    blue = set(fleet.lifecycles("blue"))
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")
    expect_exit(fleet.bluegreen("finalize", "demo", crash_at="terminate"), -9)
    doc = json.loads(fleet.session.client("s3").get_object(Bucket=BUCKET, Key=LOCK)["Body"].read())
    assert set(doc["operation"]["detached"]) == blue
    expect_exit(fleet.bluegreen("finalize", "demo"), 0)
    assert set(fleet.ec2_states(blue).values()) <= {"shutting-down", "terminated"}


def test_finalize_sets_the_old_group_to_zero_before_the_first_detach(make_harness):
    # Finding 23: detaching Standby instances while the group's sizes still ask for them is what AWS cautions
    # against; 0/0/0 first.
    fleet = make_harness(capacity=3)
    expect_exit(fleet.bluegreen("deploy", "demo", "2.0"), 0)
    fleet.assert_flipped("green", 3, "2.0")
    expect_exit(fleet.bluegreen("finalize", "demo", crash_at="detach"), -9)
    assert fleet.sizes("blue") == (0, 0, 0)
    assert sorted(fleet.lifecycles("blue").values()) == ["Standby"] * 3  # nothing detached yet
