"""push-bootstrap: URL parsing, the manifest's exact form, and the upload order against the emulated S3."""

import hashlib
import json
import os
import re

import boto3
import pytest

from deployer import bootstrap
from deployer.errors import UsageError


# The rules are the contract's, one set for push-bootstrap and the agent: tests/agent/test_s3_urls.py drives
# every edge case through both CLIs. Here: they reach the deployer as usage errors (exit 2) with the rule.
@pytest.mark.parametrize("url,expected", [("s3://bucket-1/demo/", ("bucket-1", "demo/")),
                                          ("s3://bucket-1/a/b", ("bucket-1", "a/b/")),
                                          ("s3://bucket-1", ("bucket-1", ""))])
def test_s3_urls(url, expected):
    assert bootstrap.parse_s3_url(url) == expected


@pytest.mark.parametrize("url,words", [("https://bucket-1/x/", "is not an s3://bucket/prefix/ URL"),
                                       ("s3://Bad_Bucket/x/", "is not a valid S3 bucket name"),
                                       ("s3://bucket-1/x//y/", "empty path segment"),
                                       ("s3://bucket-1/./x/", "'.' or '..' segments"),
                                       ("s3://ab/", "is not a valid S3 bucket name")])
def test_bad_s3_urls_are_usage_errors(url, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        bootstrap.parse_s3_url(url)


def bundle(tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.env").write_text("A=1\n")
    return tmp_path


def test_manifest_lists_every_file_with_its_sha256(tmp_path):
    folder = bundle(tmp_path)
    (folder / "manifest.json").write_text("stale")  # never listed in itself
    _, _, uploads, manifest = bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")
    assert manifest == {"schema_version": 1, "files": [
        {"path": "conf/app.env", "sha256": hashlib.sha256(b"A=1\n").hexdigest()},
        {"path": "docker-compose.yml", "sha256": hashlib.sha256(b"services: {}\n").hexdigest()}]}
    assert [key for _, key in uploads] == ["demo/conf/app.env", "demo/docker-compose.yml"]


def test_links_and_missing_compose_file_are_refused(tmp_path):
    folder = bundle(tmp_path)
    os.symlink("/etc/passwd", folder / "escape")
    with pytest.raises(UsageError, match="not a regular file"):
        bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")
    os.unlink(folder / "escape")
    # What the agent would refuse is refused before anything is uploaded (the manifest's rules, one copy).
    (folder / ".complete").write_text("")
    with pytest.raises(UsageError, match="cannot be pushed: manifest.json: .complete is listed twice or is a reserved"):
        bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")
    os.unlink(folder / ".complete")
    os.unlink(folder / "docker-compose.yml")
    with pytest.raises(UsageError, match="cannot be pushed: manifest.json does not list docker-compose.yml"):
        bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")


def test_push_uploads_the_manifest_last_and_it_verifies(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket-1")
    order = []
    s3.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: order.append(params["Key"]))
    bucket, prefix, uploads, manifest = bootstrap.plan_push(str(bundle(tmp_path)), "s3://bucket-1/demo/")
    assert bootstrap.push(s3, bucket, prefix, uploads, manifest) == 3
    assert order == ["demo/conf/app.env", "demo/docker-compose.yml", "demo/manifest.json"]
    stored = json.loads(s3.get_object(Bucket="bucket-1", Key="demo/manifest.json")["Body"].read())
    for entry in stored["files"]:
        body = s3.get_object(Bucket="bucket-1", Key="demo/" + entry["path"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]


def test_cli_push_is_what_the_agent_fetches_and_verifies(aws, tmp_path):
    from agent.bundle import SignedReader, fetch
    from tests.deployer.fleet import run_bluegreen

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket-1")
    (tmp_path / "src").mkdir()
    folder = bundle(tmp_path / "src")
    dry = run_bluegreen("push-bootstrap", str(folder), "s3://bucket-1/demo", "--dry-run")
    assert dry.returncode == 0 and "PutObject demo/manifest.json (last)" in dry.stdout
    assert s3.list_objects_v2(Bucket="bucket-1").get("KeyCount") == 0  # the dry run uploaded nothing
    proc = run_bluegreen("push-bootstrap", str(folder), "s3://bucket-1/demo", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["objects"] == 3 and summary["aws_calls"] == 3
    fetched = fetch(SignedReader(s3, "bucket-1"), "demo/", str(tmp_path / "work"))
    assert dict(fetched.files) == {f["path"]: f["sha256"] for f in summary["manifest"]["files"]}
    with open(os.path.join(fetched.path, "conf", "app.env")) as f:
        assert f.read() == "A=1\n"
