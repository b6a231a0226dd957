"""The bootstrap bundle: manifest rules, verified staging, the atomic swap, and both S3 readers against the
emulated S3 over HTTP."""

import hashlib
import json
import os

import boto3
import pytest
import requests

from agent import bundle, contract
from agent.bundle import (
    Reader,
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


class DictReader(Reader):
    """An in-memory S3 prefix: the readers' one-method interface (copy), for the pure staging/swap logic."""

    bucket = "mem"

    def __init__(self, objects):
        self.objects, self.reads = objects, []

    def copy(self, key, sink):
        self.reads.append(key)
        if key not in self.objects:
            raise BundleError("missing object s3://mem/" + key)
        data = self.objects[key]
        for i in range(0, len(data), 3):  # in small chunks, as a stream arrives
            sink.write(data[i:i + 3])


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


# -- issue 11: partitions, modes, limits, trust, and the error wording (audit F3, F4, F10, F20, F24) ---------


def test_unsigned_url_uses_the_partitions_dns_suffix_and_path_style_for_dots():
    # S3, audit F3: the suffix from botocore's partitions.json; a dotted bucket goes path style in every one.
    assert unsigned_base_url("b", "cn-northwest-1", {}) == "https://b.s3.cn-northwest-1.amazonaws.com.cn/"
    assert unsigned_base_url("a.b.c", "cn-north-1", {}) == "https://s3.cn-north-1.amazonaws.com.cn/a.b.c/"
    assert unsigned_base_url("b", "us-gov-west-1", {}) == "https://b.s3.us-gov-west-1.amazonaws.com/"
    assert unsigned_base_url("b", "us-iso-east-1", {}) == "https://b.s3.us-iso-east-1.c2s.ic.gov/"
    assert unsigned_base_url("b", "us-isob-east-1", {}) == "https://b.s3.us-isob-east-1.sc2s.sgov.gov/"
    assert unsigned_base_url("b", "eusc-de-east-1", {}) == "https://b.s3.eusc-de-east-1.amazonaws.eu/"
    # The fallback table (an agent whose botocore has no partitions.json) says the same for every partition.
    for pattern, suffix in bundle._PARTITIONS_FALLBACK:
        loaded = dict(bundle._load_partitions())
        assert loaded.get(pattern) == suffix, pattern


def test_modes_from_the_manifest_and_folders_0755_whatever_the_umask(tmp_path):
    files = {"docker-compose.yml": COMPOSE, "bin/entry.sh": b"#!/bin/sh\n", "conf/app.env": b"A=1"}
    doc = contract.build_manifest([(p, sha(d), 0o755 if p.endswith(".sh") else 0o644) for p, d in files.items()])
    # Only a mode other than 0644 is written: a bundle without executables has the manifest it always had.
    assert [f.get("mode") for f in doc["files"]] == ["0755", None, None]
    objs = {"p/" + k: v for k, v in files.items()}
    objs["p/manifest.json"] = contract.manifest_bytes(doc)
    old = os.umask(0o077)  # what a hardened unit sets (UMask=0077): modes must not depend on it
    try:
        fetched = fetch(DictReader(objs), "p/", str(tmp_path))
    finally:
        os.umask(old)

    def mode(*parts):
        return oct(os.stat(os.path.join(fetched.path, *parts)).st_mode & 0o7777)

    assert mode() == oct(0o755) and mode("bin") == oct(0o755) and mode("conf") == oct(0o755)
    assert mode("bin", "entry.sh") == oct(0o755)
    assert mode("conf", "app.env") == oct(0o644) and mode("manifest.json") == oct(0o644)
    # A file whose mode changed on disk is not reused: the release is fetched again.
    os.chmod(os.path.join(fetched.path, "bin", "entry.sh"), 0o644)
    again = fetch(DictReader(objs), "p/", str(tmp_path))
    assert not again.reused and mode("bin", "entry.sh") == oct(0o755)


@pytest.mark.parametrize("value,words", [("0777", "at most 0755"), ("4755", "octal text"), ("04755", "octal"),
                                         ("0666", "at most 0755"), (493, "octal text"), ("rwx", "octal text")])
def test_bad_modes_are_refused(value, words):
    doc = json.dumps({"files": [{"path": "docker-compose.yml", "sha256": "ab" * 32, "mode": value}]})
    with pytest.raises(BundleError, match=words):
        parse_manifest(doc)


def test_a_file_or_bundle_over_the_limit_is_refused_while_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "BUNDLE_FILE_MAX", 10)
    reader = DictReader(objects(big=b"x" * 11))
    with pytest.raises(BundleError, match=r"s3://mem/p/big is larger than 10 bytes, the limit \(F24\)"):
        fetch(reader, "p/", str(tmp_path))
    assert reader.reads[-1] == "p/big" and os.listdir(tmp_path / "releases") == []
    monkeypatch.setattr(bundle, "BUNDLE_FILE_MAX", 100)
    monkeypatch.setattr(bundle, "BUNDLE_MAX", len(COMPOSE) + 15)
    with pytest.raises(BundleError, match=r"is larger than \d+ bytes, what is left of the bundle's \d+ after the files "
                                          r"before it \(F24\)"):
        fetch(DictReader(objects(a=b"x" * 10, b=b"y" * 10)), "p/", str(tmp_path))


def test_a_content_addressed_prefix_must_hold_the_manifest_it_is_named_by(aws, tmp_path):
    # Audit F10: against the emulated S3, through the signed reader.
    files = {"docker-compose.yml": COMPOSE}
    body = contract.manifest_bytes(contract.build_manifest([("docker-compose.yml", sha(COMPOSE))]))
    prefix = f"web/{sha(body)}/"
    upload_bundle(aws.endpoint, files, prefix=prefix)
    s3 = boto3.client("s3", region_name="us-east-1")
    workdir = str(tmp_path / "w")
    good = fetch(SignedReader(s3, BUCKET), prefix, workdir)
    activate(workdir, good.release_id)
    # Someone with s3:PutObject on the bucket replaces the manifest (same files, other bytes): refused before
    # anything switched, as a checksum mismatch (exit 6).
    s3.put_object(Bucket=BUCKET, Key=prefix + "manifest.json", Body=body.replace(b"\n", b"\n\n", 1))
    with pytest.raises(BundleError, match=r"checksum mismatch for s3://bluegreen-bootstrap/web/[0-9a-f]{64}/manifest"
                                          r"\.json: .* not to the name of its prefix"):
        fetch(SignedReader(s3, BUCKET), prefix, str(tmp_path / "other"))
    assert current_release(workdir) == good.release_id
    # An old-style prefix has no name to check: read as before.
    upload_bundle(aws.endpoint, files, prefix="legacy/")
    assert fetch(SignedReader(s3, BUCKET), "legacy/", str(tmp_path / "legacy")).files


def test_access_denied_names_its_causes_and_a_missing_key_reads_as_missing():
    from botocore.stub import Stubber

    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    reader = SignedReader(s3, BUCKET)
    with Stubber(s3) as stub:
        # S3: without s3:ListBucket on the key a missing one answers 403; the prefix-scoped listing tells.
        stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
        stub.add_response("list_objects_v2", {"KeyCount": 0}, {"Bucket": BUCKET, "Prefix": "web/typo", "MaxKeys": 1})
        with pytest.raises(BundleError, match=r"^missing object s3://bluegreen-bootstrap/web/typo \(GetObject "):
            reader.read("web/typo")
        stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
        stub.add_response("list_objects_v2", {"Contents": [{"Key": "web/x"}]},
                          {"Bucket": BUCKET, "Prefix": "web/x", "MaxKeys": 1})
        with pytest.raises(BundleError, match=r"AccessDenied although the object exists: .*kms:Decrypt, S4"):
            reader.read("web/x")
        stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
        stub.add_client_error("list_objects_v2", "AccessDenied", http_status_code=403)
        with pytest.raises(BundleError, match=r"AccessDenied: no s3:GetObject on it, the object is missing \(without "
                                              r"s3:ListBucket .*SSE-KMS"):
            reader.read("web/y")


def test_unsigned_403_names_policy_missing_and_kms_causes():
    import http.server
    import threading

    answers = {"/b/denied": (403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
               "/b/kms": (400, (b"<Error><Code>InvalidArgument</Code><Message>Requests specifying Server Side "
                               b"Encryption with AWS KMS managed keys require AWS Signature Version 4.</Message>"
                               b"</Error>"))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            code, body = answers[self.path]
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reader = UnsignedReader(requests.Session(), f"http://127.0.0.1:{server.server_address[1]}/b/", "b")
        with pytest.raises(BundleError, match=r"answered 403 AccessDenied: the bucket policy does not allow unsigned "
                                              r"reads here .*missing .*SSE-KMS encrypted, which unsigned reads cannot"):
            reader.read("denied")
        with pytest.raises(BundleError, match=r"answered 400 InvalidArgument: the object is SSE-KMS encrypted, which "
                                              r"unsigned reads cannot decrypt \(S4\)"):
            reader.read("kms")
    finally:
        server.shutdown()
        server.server_close()
