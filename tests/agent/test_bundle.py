"""The bootstrap bundle: manifest rules, verified staging, the atomic swap, and both S3 readers against the
emulated S3 over HTTP."""

import hashlib
import json
import os

import boto3
import pytest
import requests

from agent import contract
from agent.bundle import (
    SignedReader,
    UnsignedReader,
    activate,
    check_path,
    current_release,
    fetch,
    parse_manifest,
    unsigned_base_url,
)
from agent.errors import BundleError
from tests.agent.conftest import BUCKET, upload_bundle

COMPOSE = b"services:\n  web:\n    image: web:live\n"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def manifest(*files, **extra):
    """The contract's manifest of files [(path, bytes)], with extra top-level keys (which readers ignore)."""
    doc = contract.build_manifest((path, sha(data)) for path, data in files)
    return contract.manifest_bytes(dict(doc, **extra))


class DictReader:
    """An in-memory S3 prefix: the readers' one-method interface, for the pure staging/swap logic."""

    bucket = "mem"

    def __init__(self, objects):
        self.objects, self.reads = objects, []

    def read(self, key):
        self.reads.append(key)
        if key not in self.objects:
            raise BundleError("missing object s3://mem/" + key)
        return self.objects[key]


def objects(prefix="p/", **files):
    files.setdefault("docker-compose.yml", COMPOSE)
    out = {prefix + k.replace("__", "/"): v for k, v in files.items()}
    out[prefix + "manifest.json"] = manifest(*[(k.replace("__", "/"), v) for k, v in files.items()])
    return out


def test_manifest_form_and_extra_keys_ignored():
    files = parse_manifest(manifest(("docker-compose.yml", COMPOSE), ("conf/app.env", b"A=1"), built_by="ci"))
    assert files == [("conf/app.env", sha(b"A=1")), ("docker-compose.yml", sha(COMPOSE))]
    # The form before schema_version existed still reads, in its listed order.
    legacy = json.dumps({"files": [{"path": "docker-compose.yml", "sha256": sha(COMPOSE)},
                                   {"path": "conf/app.env", "sha256": sha(b"A=1")}]})
    assert parse_manifest(legacy) == [("docker-compose.yml", sha(COMPOSE)), ("conf/app.env", sha(b"A=1"))]


@pytest.mark.parametrize("doc,words", [
    (b"not json", "not JSON"),
    (b'{"files": {}}', "must be"),
    (b'{"files": [{"path": "docker-compose.yml"}]}', "string path and sha256"),
    (b'{"files": [{"path": "docker-compose.yml", "sha256": "xyz"}]}', "no valid SHA-256"),
    (b'{"files": [{"path": "other.yml", "sha256": "' + b"a" * 64 + b'"}]}', "does not list docker-compose.yml"),
    (json.dumps({"files": [{"path": "docker-compose.yml", "sha256": "a" * 64}] * 2}).encode(), "listed twice"),
    (json.dumps({"files": [{"path": ".complete", "sha256": "a" * 64}]}).encode(), "reserved name"),
    (json.dumps({"schema_version": 2, "files": []}).encode(), "schema_version 2; this agent reads 1"),
])
def test_bad_manifests_are_refused(doc, words):
    with pytest.raises(BundleError, match=words):
        parse_manifest(doc)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "a\\..\\b", "", "a/", "a\0b"])
def test_paths_that_escape_or_are_not_plain_are_refused(path):
    with pytest.raises(BundleError, match="escapes the bundle"):
        check_path(path)


def test_fetch_stages_verifies_and_leaves_current_alone(tmp_path):
    workdir = str(tmp_path)
    reader = DictReader(objects(conf__app__env=b"A=1"))
    fetched = fetch(reader, "p/", workdir)
    assert not fetched.reused and current_release(workdir) is None
    assert read(fetched.path, "conf", "app", "env") == b"A=1"
    assert fetch(reader, "p/", workdir).reused  # the same manifest again downloads nothing new
    assert reader.reads.count("p/docker-compose.yml") == 1


def test_checksum_mismatch_leaves_no_release_behind(tmp_path):
    objs = objects()
    objs["p/docker-compose.yml"] = COMPOSE + b"# tampered\n"
    with pytest.raises(BundleError, match="checksum mismatch for s3://mem/p/docker-compose.yml"):
        fetch(DictReader(objs), "p/", str(tmp_path))
    assert os.listdir(tmp_path / "releases") == []


def test_a_corrupted_earlier_copy_is_fetched_again(tmp_path):
    reader = DictReader(objects())
    first = fetch(reader, "p/", str(tmp_path))
    with open(os.path.join(first.path, "docker-compose.yml"), "ab") as f:
        f.write(b"# edited on the instance\n")
    again = fetch(reader, "p/", str(tmp_path))
    assert not again.reused and read(again.path, "docker-compose.yml") == COMPOSE


def test_activate_swaps_atomically_and_keeps_the_previous_release(tmp_path):
    workdir = str(tmp_path)
    ids = []
    for n in range(4):
        fetched = fetch(DictReader(objects(version=str(n).encode())), "p/", workdir)
        assert activate(workdir, fetched.release_id, keep=2) == (ids[-1] if ids else None)
        ids.append(fetched.release_id)
        assert current_release(workdir) == fetched.release_id
    assert sorted(os.listdir(tmp_path / "releases")) == sorted(ids[-2:])
    assert os.readlink(tmp_path / "current") == os.path.join("releases", ids[-1])  # relative: the folder can move


def test_stale_staging_from_a_crash_is_removed(tmp_path):
    stale = tmp_path / "releases" / ".staging-dead-xyz"
    stale.mkdir(parents=True)
    fetch(DictReader(objects()), "p/", str(tmp_path))
    assert not stale.exists()


def test_unsigned_url_on_aws_and_with_an_endpoint():
    assert unsigned_base_url("b", "eu-west-1", {}) == "https://b.s3.eu-west-1.amazonaws.com/"
    # S3: a dotted name breaks the virtual-hosted certificate; path style. China Regions: amazonaws.com.cn.
    assert unsigned_base_url("boot.example.com", "eu-west-1", {}) == \
        "https://s3.eu-west-1.amazonaws.com/boot.example.com/"
    assert unsigned_base_url("b", "cn-north-1", {}) == "https://b.s3.cn-north-1.amazonaws.com.cn/"
    assert unsigned_base_url("b", "eu-west-1", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9/"}) == \
        "http://127.0.0.1:9/b/"
    assert unsigned_base_url("b", "r", {"AWS_ENDPOINT_URL": "http://x", "AWS_ENDPOINT_URL_S3": "http://s3"}) == \
        "http://s3/b/"


def test_signed_and_unsigned_readers_against_emulated_s3(aws, tmp_path):
    upload_bundle(aws.endpoint, {"docker-compose.yml": COMPOSE, "dir/with space.txt": b"x"}, public=True)
    s3 = boto3.client("s3", region_name="us-east-1")
    readers = [SignedReader(s3, BUCKET),
               UnsignedReader(requests.Session(), unsigned_base_url(BUCKET, "us-east-1", os.environ), BUCKET)]
    for n, reader in enumerate(readers):
        fetched = fetch(reader, "web/", str(tmp_path / str(n)))
        assert read(fetched.path, "dir", "with space.txt") == b"x"
        with pytest.raises(BundleError, match="missing object s3://bluegreen-bootstrap/web/nope"):
            reader.read("web/nope")


@pytest.mark.parametrize("paths", [["docker-compose.yml", "docker-compose.yml/x"], ["docker-compose.yml", "manifest.json/x"],
                                   ["docker-compose.yml", "conf", "conf/a"]])
def test_a_path_listed_both_as_a_file_and_as_a_folder_is_a_bundle_error(paths):
    manifest = json.dumps({"files": [{"path": p, "sha256": "ab" * 32} for p in paths]})
    with pytest.raises(BundleError, match="listed both as a file and as a folder"):
        parse_manifest(manifest)
