"""push-bootstrap: URL parsing, the manifest's exact form, and the upload order against the emulated S3."""

import hashlib
import json
import os
import re

import boto3
import pytest

from agent import contract
from agent.contract import manifest_bytes
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
    plan = bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")
    assert plan.manifest == {"schema_version": 1, "files": [
        {"path": "conf/app.env", "sha256": hashlib.sha256(b"A=1\n").hexdigest()},
        {"path": "docker-compose.yml", "sha256": hashlib.sha256(b"services: {}\n").hexdigest()}]}
    # Content-addressed (issue 11, F9): the prefix is named by the manifest's own hash.
    address = hashlib.sha256(manifest_bytes(plan.manifest)).hexdigest()
    assert plan.prefix == f"demo/{address}/" and plan.url == f"s3://bucket-1/demo/{address}/"
    assert [key for _, key in plan.uploads] == [f"demo/{address}/conf/app.env", f"demo/{address}/docker-compose.yml"]
    assert plan.latest_key == "demo/LATEST"
    # A file's content changes the address; the same content gives the same one.
    assert bootstrap.plan_push(str(folder), "s3://bucket-1/demo").url == plan.url
    (folder / "conf" / "app.env").write_text("A=2\n")
    assert bootstrap.plan_push(str(folder), "s3://bucket-1/demo/").url != plan.url


def test_a_push_into_a_bundle_prefix_is_refused(tmp_path):
    with pytest.raises(UsageError, match="already names a content-addressed bundle; push to its base s3://bucket-1/demo/"):
        bootstrap.plan_push(str(bundle(tmp_path)), "s3://bucket-1/demo/" + "a" * 64 + "/")


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


def test_push_uploads_the_manifest_last_then_latest_and_again_nothing(aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket-1")
    order = []
    s3.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: order.append(params["Key"]))
    first = bootstrap.plan_push(str(bundle(tmp_path)), "s3://bucket-1/demo/")
    assert bootstrap.push(s3, first) == 4
    p = first.prefix
    assert order == [p + "conf/app.env", p + "docker-compose.yml", p + "manifest.json", "demo/LATEST"]
    stored = s3.get_object(Bucket="bucket-1", Key=p + "manifest.json")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == contract.bundle_address(p)  # what the agent checks (F10)
    for entry in json.loads(stored)["files"]:
        body = s3.get_object(Bucket="bucket-1", Key=p + entry["path"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert s3.get_object(Bucket="bucket-1", Key="demo/LATEST")["Body"].read() == (first.url + "\n").encode()
    assert bootstrap.latest(s3, "bucket-1", "demo/") == first.url

    # The same content again: nothing written at all.
    order.clear()
    assert bootstrap.push(s3, bootstrap.plan_push(str(tmp_path), "s3://bucket-1/demo/")) == 0
    assert order == []
    # Another bundle, then the first one again: the first's files stay, only LATEST moves back to it.
    (tmp_path / "conf" / "app.env").write_text("A=2\n")
    second = bootstrap.plan_push(str(tmp_path), "s3://bucket-1/demo/")
    assert bootstrap.push(s3, second) == 4 and bootstrap.latest(s3, "bucket-1", "demo/") == second.url
    (tmp_path / "conf" / "app.env").write_text("A=1\n")
    order.clear()
    assert bootstrap.push(s3, bootstrap.plan_push(str(tmp_path), "s3://bucket-1/demo/")) == 1
    assert order == ["demo/LATEST"] and bootstrap.latest(s3, "bucket-1", "demo/") == first.url
    # Both bundles are still there, unchanged: a push never changes a bundle a fleet runs.
    for plan, env in ((first, b"A=1\n"), (second, b"A=2\n")):
        assert s3.get_object(Bucket="bucket-1", Key=plan.prefix + "conf/app.env")["Body"].read() == env
    assert bootstrap.latest(s3, "bucket-1", "other/") is None


def test_latest_must_name_a_bundle_under_its_base(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket-1")
    s3.put_object(Bucket="bucket-1", Key="demo/LATEST", Body=b"s3://bucket-1/elsewhere/" + b"b" * 64 + b"/\n")
    with pytest.raises(UsageError, match="is no bundle pushed under s3://bucket-1/demo/"):
        bootstrap.latest(s3, "bucket-1", "demo/")


def test_cli_push_prints_the_bundle_url_the_agent_fetches_and_verifies(aws, tmp_path):
    from agent.bundle import SignedReader, fetch
    from tests.deployer.fleet import run_bluegreen

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bucket-1")
    (tmp_path / "src").mkdir()
    folder = bundle(tmp_path / "src")
    dry = run_bluegreen("push-bootstrap", str(folder), "s3://bucket-1/demo", "--dry-run")
    assert dry.returncode == 0 and "manifest.json (last)" in dry.stderr and "PutObject demo/LATEST" in dry.stderr
    assert s3.list_objects_v2(Bucket="bucket-1").get("KeyCount") == 0  # the dry run uploaded nothing
    url = dry.stdout.strip()
    assert re.fullmatch(r"s3://bucket-1/demo/[0-9a-f]{64}/", url)
    proc = run_bluegreen("push-bootstrap", str(folder), "s3://bucket-1/demo", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["objects"] == 4 and summary["url"] == url
    again = run_bluegreen("push-bootstrap", str(folder), "s3://bucket-1/demo")
    assert again.returncode == 0 and again.stdout.strip() == url  # the same URL, nothing written
    assert "pushed before, and the latest: nothing written" in again.stderr
    bucket, prefix = contract.parse_s3_url(url)
    fetched = fetch(SignedReader(s3, bucket), prefix, str(tmp_path / "work"))
    assert dict(fetched.files) == {f["path"]: f["sha256"] for f in summary["manifest"]["files"]}
    with open(os.path.join(fetched.path, "conf", "app.env")) as f:
        assert f.read() == "A=1\n"


def test_push_records_the_executable_bit_and_refuses_oversize_files(tmp_path, monkeypatch):
    folder = bundle(tmp_path)
    (folder / "entry.sh").write_text("#!/bin/sh\n")
    os.chmod(folder / "entry.sh", 0o750)
    os.chmod(folder / "conf" / "app.env", 0o600)  # not executable: the agent's default 0644, not written
    files = {f["path"]: f.get("mode") for f in bootstrap.plan_push(str(folder), "s3://bucket-1/demo/").manifest["files"]}
    assert files == {"conf/app.env": None, "docker-compose.yml": None, "entry.sh": "0755"}
    monkeypatch.setattr(contract, "BUNDLE_FILE_MAX", 12)
    with pytest.raises(UsageError, match=r"cannot be pushed: docker-compose.yml is 13 bytes, above the 12 a bundle "
                                         "file may hold"):
        bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")
    monkeypatch.setattr(contract, "BUNDLE_FILE_MAX", 100)
    monkeypatch.setattr(contract, "BUNDLE_MAX", 20)
    with pytest.raises(UsageError, match="its files hold 27 bytes, above the 20 a bundle may hold"):
        bootstrap.plan_push(str(folder), "s3://bucket-1/demo/")


def test_the_local_fleet_pushes_its_bundle_and_tags_the_url_push_bootstrap_printed(aws, tmp_path):
    # localcloud/fleet/service.py: the demo service's groups name the content-addressed bundle, not the base.
    from localcloud.fleet.service import push_bundle

    url = push_bundle(boto3.session.Session(), str(tmp_path / "bundle"), "127.0.0.1:5000", "s3://bucket-9/demo/",
                      dict(os.environ))
    bucket, prefix = contract.parse_s3_url(url)
    assert bucket == "bucket-9" and contract.bundle_base(prefix) == "demo/" and contract.bundle_address(prefix)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
    contract.check_bundle_address(prefix, body)


@pytest.mark.parametrize("code,expected", [("NoSuchKey", None), ("AccessDenied", UsageError)])
def test_latest_tells_nothing_pushed_from_a_refused_read(code, expected):
    # A 403 may be a missing grant or a missing key hidden by a missing s3:ListBucket (S3): refused with the grant
    # named, never taken as "nothing pushed" (the deploy would keep the old bundle while the new version runs).
    from botocore.stub import Stubber

    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=404 if expected is None else 403,
                              expected_params={"Bucket": "b", "Key": "web/LATEST"})
        if expected is None:
            assert bootstrap.latest(s3, "b", "web/") is None
        else:
            with pytest.raises(UsageError, match=r"s3://b/web/LATEST cannot be read \(AccessDenied\): grant"):
                bootstrap.latest(s3, "b", "web/")
