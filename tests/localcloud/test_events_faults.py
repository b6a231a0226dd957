"""The emulator's PutEvents partial failure (localcloud/aws/events_faults.py): HTTP 200, FailedEntryCount, and
nothing on the bus; without the fault moto's own PutEvents answers, and delivers."""

import json

import boto3
import pytest

from localcloud.aws.errors import BadControlRequest


def test_put_events_failures_fail_every_entry_of_the_next_requests_and_put_nothing(aws):
    session = boto3.session.Session()
    events, sqs = session.client("events"), session.client("sqs")
    events.create_event_bus(Name="bus")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="r", EventBusName="bus", EventPattern=json.dumps({"source": ["test"]}))
    events.put_targets(Rule="r", EventBusName="bus", Targets=[{"Id": "q", "Arn": arn}])
    entry = {"Source": "test", "DetailType": "t", "Detail": "{}", "EventBusName": "bus"}

    aws.configure_faults(put_events_failures=1)
    failed = events.put_events(Entries=[entry, entry])
    assert failed["FailedEntryCount"] == 2
    assert [e["ErrorCode"] for e in failed["Entries"]] == ["ThrottlingException"] * 2
    assert sqs.receive_message(QueueUrl=queue).get("Messages") is None
    assert aws.state.faults.put_events_failures == 0

    put = events.put_events(Entries=[entry])
    assert put["FailedEntryCount"] == 0 and put["Entries"][0]["EventId"]
    assert len(sqs.receive_message(QueueUrl=queue)["Messages"]) == 1


@pytest.mark.parametrize("bad", [-1, 1001, True, "2"])
def test_a_bad_count_is_refused(aws, bad):
    with pytest.raises(BadControlRequest, match="put_events_failures"):
        aws.configure_faults(put_events_failures=bad)
