"""The Auto Scaling faults of localcloud/aws/faults_asg.py (A11, deployer-audit finding 20): what a client sees."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localcloud.aws import faults_asg
from tests.localcloud.support import aws_error


def test_scaling_activity_in_progress_answers_400_changes_nothing_and_is_not_retried_by_botocore(world):
    world.group("g", desired=0)
    faults_asg.configure(world.cloud, scaling_activity_in_progress={"UpdateAutoScalingGroup": 1})
    standard = boto3.client("autoscaling", config=Config(retries={"mode": "standard", "max_attempts": 4}))
    with pytest.raises(ClientError) as excinfo:
        standard.update_auto_scaling_group(AutoScalingGroupName="g", MaxSize=7)
    code, message = aws_error(excinfo)
    assert code == "ScalingActivityInProgress" and "is in progress and blocks this action" in message
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert excinfo.value.response["ResponseMetadata"]["RetryAttempts"] == 0  # a 400: standard mode gives up
    assert world.describe("g")["MaxSize"] == 10  # nothing changed
    standard.update_auto_scaling_group(AutoScalingGroupName="g", MaxSize=7)  # the count is spent
    assert world.describe("g")["MaxSize"] == 7


def test_a_lost_response_lands_the_call_and_botocore_retries_into_a_validation_error(world):
    world.group("g", desired=1, min_size=0)
    (iid,) = world.wait_in_service("g", 1)
    faults_asg.configure(world.cloud, lost_responses={"EnterStandby": 1})
    standard = boto3.client("autoscaling", config=Config(retries={"mode": "standard", "max_attempts": 4}))
    with pytest.raises(ClientError) as excinfo:
        standard.enter_standby(AutoScalingGroupName="g", InstanceIds=[iid], ShouldDecrementDesiredCapacity=True)
    # The first attempt moved it (A1); its 500 was retried, and the retry meets an instance no longer InService.
    assert aws_error(excinfo)[0] == "ValidationError"
    assert excinfo.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert world.states("g")[iid] in ("EnteringStandby", "Standby")


def test_the_faults_are_checked_and_cleared_by_reset(world):
    with pytest.raises(ValueError, match="counts 0-100"):
        faults_asg.configure(world.cloud, lost_responses={"EnterStandby": -1})
    faults_asg.configure(world.cloud, lost_responses={"EnterStandby": 3})
    world.cloud.reset()
    assert faults_asg.faults_of(world.cloud.state).lost == {}
