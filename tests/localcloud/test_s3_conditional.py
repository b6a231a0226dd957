"""S3 conditional writes (aws-rules.md X2), through boto3 over HTTP: 412 PreconditionFailed, 404 for If-Match on
a missing key, conflicting conditional PUTs resolved one at a time, and the 409 ConditionalRequestConflict fault
(conditional_conflicts=N) that a client survives by re-reading and retrying."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.localcloud.support import NO_RETRIES

BUCKET = "x2-conditional"
KEY = "state/lock.json"


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", config=NO_RETRIES)
    client.create_bucket(Bucket=BUCKET)
    return client


def status_and_code(excinfo) -> tuple[int, str]:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def body(s3) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()


def test_x2_if_none_match_creates_once_then_412(s3):
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"second", IfNoneMatch="*")
    assert status_and_code(excinfo) == (412, "PreconditionFailed")
    assert body(s3) == b"first"


def test_x2_if_match_replaces_only_the_version_read(s3):
    first = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1", IfNoneMatch="*")["ETag"]
    second = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v2", IfMatch=first)["ETag"]
    assert second != first and s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"] == second
    with pytest.raises(ClientError) as excinfo:  # a stale ETag: someone wrote since it was read
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v3", IfMatch=first)
    assert status_and_code(excinfo) == (412, "PreconditionFailed")
    assert body(s3) == b"v2"
    third = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v3", IfMatch=second.strip('"'))["ETag"]  # quotes optional
    assert body(s3) == b"v3" and third not in (first, second)


def test_x2_if_match_on_a_missing_key_is_404_and_writes_nothing(s3):
    """AWS: 404 Not Found when no current object has that name (s3_conditional.py says where that is written)."""
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1", IfMatch='"9dd4e461268c8034f5c8564e155c67a6"')
    assert status_and_code(excinfo) == (404, "NoSuchKey")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    etag = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1")["ETag"]
    s3.delete_object(Bucket=BUCKET, Key=KEY)
    with pytest.raises(ClientError) as excinfo:  # deleted since it was read
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v2", IfMatch=etag)
    assert status_and_code(excinfo) == (404, "NoSuchKey")


def race_to_create(clients: list, key: str) -> list[object]:
    """Every client PUTs `key` with If-None-Match: * at the same instant; each one's answer, by client."""
    barrier = threading.Barrier(len(clients))

    def create(n: int) -> object:
        barrier.wait(timeout=30)
        try:
            clients[n].put_object(Bucket=BUCKET, Key=key, Body=f"writer {n}".encode(), IfNoneMatch="*")
            return 200
        except ClientError as exc:
            return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        return list(pool.map(create, range(len(clients))))


def test_x2_concurrent_creates_exactly_one_wins_every_round(s3):
    """8 clients, each its own connection, If-None-Match on one key at once: one 200, seven 412, ten times."""
    clients = [boto3.client("s3", config=NO_RETRIES) for _ in range(8)]
    for round_ in range(10):
        key = f"{KEY}.{round_}"
        answers = race_to_create(clients, key)
        assert answers.count(200) == 1 and answers.count((412, "PreconditionFailed")) == 7, (round_, answers)
        winner = answers.index(200)
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == f"writer {winner}".encode()


def test_x2_conflict_fault_answers_409_and_writes_nothing(s3, aws):
    etag = s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1")["ETag"]
    aws.configure_faults(conditional_conflicts=2)
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v2", IfMatch=etag)
    assert status_and_code(excinfo) == (409, "ConditionalRequestConflict")
    assert "conflicting operation" in excinfo.value.response["Error"]["Message"]
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"x")  # an unconditional PUT is not counted
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=BUCKET, Key="new.json", Body=b"n", IfNoneMatch="*")
    assert status_and_code(excinfo) == (409, "ConditionalRequestConflict")
    assert body(s3) == b"v1"  # neither conflicting write reached moto
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == ["plain", KEY]
    assert aws.state.faults.conditional_conflicts == 0
    assert s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v2", IfMatch=etag)["ETag"] != etag  # spent: writes again


def test_x2_a_client_that_rereads_and_retries_after_409_succeeds(s3, aws):
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1")
    aws.configure_faults(conditional_conflicts=3)
    conflicts = 0
    for _ in range(5):
        current = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]  # X2: re-read the ETag, then retry
        try:
            s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v2", IfMatch=current)
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalRequestConflict"
            conflicts += 1
    assert conflicts == 3 and body(s3) == b"v2"


def test_x2_conflict_fault_over_the_control_endpoint_and_its_bounds(s3, aws):
    def post(payload: dict) -> int:
        request = urllib.request.Request(aws.endpoint + "/_localcloud/faults", data=json.dumps(payload).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert [post({"conditional_conflicts": bad}) for bad in (-1, 1001, 1.5, "2", True)] == [400] * 5
    assert post({"conditional_conflicts": 1}) == 200
    assert aws.state.faults.as_dict()["conditional_conflicts"] == 1
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1", IfNoneMatch="*")
    assert status_and_code(excinfo) == (409, "ConditionalRequestConflict")
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"v1", IfNoneMatch="*")
    aws.configure_faults(conditional_conflicts=1)
    aws.reset()  # reset clears the fault with every other one
    assert aws.state.faults.conditional_conflicts == 0
