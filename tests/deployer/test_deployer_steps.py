"""Typed steps: what a plan may contain is checked when the plan is built, and the runner's AWS adapter has a
method for every operation a plan may name."""

import pytest
from botocore import xform_name

from deployer import events, health
from deployer.aws import DeployerAws
from deployer.errors import HealthFailure, PlanError
from deployer.steps import ABORT, OPERATIONS, Call, CallStep, LockStep, UnlockStep, WaitStep


def test_every_operation_a_plan_may_name_has_an_adapter_method_and_no_other_mutation_exists():
    methods = {name for name in vars(DeployerAws) if not name.startswith("_")}
    assert {xform_name(op) for op in OPERATIONS if not op.startswith("Describe")} <= methods
    mutating = methods - {"apply"} - {m for m in methods if m.startswith("describe")}
    assert mutating == {xform_name(op) for op in OPERATIONS if not op.startswith("Describe")}


def test_the_event_sinks_make_exactly_their_own_operations_and_no_plan_names_them():
    # Events are not planned steps (a failed one never stops a command): their calls live in events.Sinks, one
    # method per operation, which the IAM coverage test reads too (test_deployer_iam.py).
    methods = {name for name in vars(events.Sinks) if not name.startswith("_")} - {"active", "describe", "put"}
    assert methods == {xform_name(op) for op in events.OPERATIONS}
    assert not events.OPERATIONS & OPERATIONS


def test_a_plan_naming_an_unknown_operation_fails_when_it_is_built_with_our_error():
    with pytest.raises(PlanError, match="'EnterStandbyy'"):
        Call("EnterStandbyy", {"AutoScalingGroupName": "g"})
    with pytest.raises(PlanError, match="needs"):
        CallStep("x", "y", needs=("polices",))
    with pytest.raises(PlanError, match="failure policy"):
        WaitStep("w", "s", "blue", health.HEALTHY, on_failure="retry")


def test_step_types_say_what_they_are_in_json():
    call = Call("DeleteTags", {"Tags": []})
    wait = WaitStep("wait-x", "wait", "green", health.DRAINED, then=call, on_failure=ABORT)
    assert CallStep("a", "b", (call,)).as_json()["kind"] == "call"
    assert LockStep("lock", "b", (call,)).as_json()["kind"] == "lock"
    assert UnlockStep("unlock", "b", (call,)).as_json()["kind"] == "unlock"
    data = wait.as_json()
    assert (data["kind"], data["wait"], data["color"], data["on_failure"], data["then"]["op"]) == (
        "wait", "drained", "green", "abort", "DeleteTags")


def test_a_wait_error_carries_its_step_and_the_last_state_as_fields():
    step = WaitStep("wait-new-healthy", "wait for green", "green", health.HEALTHY, on_failure=ABORT)
    last = {"detail": "1/3 healthy", "instances": {"i-1": {"lifecycle": "InService"}}}
    err = HealthFailure("instance i-1 is unhealthy", step, last)
    assert err.step is step and err.last is last
    assert err.details() == {"step": {"name": "wait-new-healthy", "summary": "wait for green", "wait": "healthy",
                                      "color": "green"}, "last": last}
