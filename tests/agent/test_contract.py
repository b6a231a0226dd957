"""The contract module (agent/contract.py): the tag registry and A12, the version rule, the manifest, atomic
writes, `bluegreen:running`, the vocabulary. S3 URLs have their own module (test_s3_urls.py)."""

import glob
import inspect
import os
import re
import stat
from importlib import metadata

import pytest

from agent import contract, errors
from agent.contract import ContractError, Running

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHA = "sha256:" + "0123456789abcdef" * 4


PACKAGES = ("agent/*.py", "deployer/*.py", "localcloud/**/*.py")


def product_files(patterns=PACKAGES + ("iam/*.json", "cloud-init/*", "systemd/**", "bench/*.py", "scripts/*")):
    for pattern in patterns:
        yield from (p for p in glob.glob(os.path.join(ROOT, pattern), recursive=True) if os.path.isfile(p))


# -- the registry ---------------------------------------------------------------------------------------------
def test_every_bluegreen_key_in_the_product_is_registered():
    used = set()
    for path in product_files():
        with open(path, errors="replace") as f:
            used |= set(re.findall(r"bluegreen:[a-z][a-z-]*[a-z]", f.read()))
    assert used, "premise: the scan finds the keys"
    assert used <= set(contract.REGISTRY), f"unregistered: {sorted(used - set(contract.REGISTRY))}"


def test_no_other_module_spells_a_tag_key_of_its_own():
    # Keys come from the contract's constants; a quoted "bluegreen:..." literal elsewhere is a second copy.
    for path in product_files(PACKAGES):
        if not path.endswith(os.path.join("agent", "contract.py")):
            with open(path) as f:
                copies = re.findall(r"[\"']bluegreen:[a-z-]+[\"']", f.read())
            assert not copies, f"{os.path.relpath(path, ROOT)} spells {copies}"


def test_the_registry_is_well_formed():
    keys = [spec.key for spec in contract.TAGS]
    assert len(keys) == len(set(keys)) == len(contract.REGISTRY)
    constants = {value for name, value in vars(contract).items() if name.startswith("TAG_") and
                 isinstance(value, str) and value.startswith("bluegreen:")}
    assert constants == set(keys), "every TAG_* constant is a registered key and the other way round"
    for spec in contract.TAGS:
        contract.check_tag(spec.key, "x")
        assert spec.where in (contract.ON_GROUP, contract.ON_INSTANCE)
        assert spec.owner in (contract.OWNER_TEMPLATE, contract.OWNER_DEPLOYER, contract.OWNER_AGENT)
        if spec.where == contract.ON_INSTANCE:
            assert not spec.propagate, f"{spec.key}: only group tags propagate"
        if spec.owner == contract.OWNER_AGENT:
            assert spec.where == contract.ON_INSTANCE, "the agent writes only its own instance's tags"
    # The agent publishes about itself under its own keys, never the group's version (propagated from it).
    assert contract.REGISTRY[contract.TAG_VERSION].propagate
    assert contract.REGISTRY[contract.TAG_RUNNING].owner == contract.OWNER_AGENT


def test_docs_contract_lists_the_registry_as_it_is():
    with open(os.path.join(ROOT, "docs", "contract.md")) as f:
        rows = re.findall(r"^\| `(bluegreen:[a-z-]+)` \| (\w+) \| (\w+) \| [^|]+ \| (yes|no) \|", f.read(), re.MULTILINE)
    documented = {key: (where, owner, propagated == "yes") for key, where, owner, propagated in rows}
    assert documented == {s.key: (s.where, s.owner, s.propagate) for s in contract.TAGS}


def test_the_a12_budget():
    assert contract.OPERATOR_TAGS_LEFT == 50 - len(contract.GROUP_TAG_KEYS) == 35
    contract.check_tags({f"k{n}": "v" * 256 for n in range(50)})
    contract.check_tags(dict({f"k{n}": "v" for n in range(50)}, **{"aws:cloudformation:stack-name": "s"}))
    with pytest.raises(ContractError, match="51 tags; a group or instance holds 50"):
        contract.check_tags({f"k{n}": "v" for n in range(51)})
    with pytest.raises(ContractError, match="257 characters; a tag value holds 256"):
        contract.check_tags({contract.TAG_BOOTSTRAP: "x" * 257})
    with pytest.raises(ContractError, match="must be 1-128 characters"):
        contract.check_tag("k" * 129, "v")
    with pytest.raises(ContractError, match="aws: prefix is reserved"):
        contract.check_tag("AWS:mine", "v")


# -- the version rule ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["1.0", "v2", "2024-01-01_build.7", "_x", "A" * 128])
def test_valid_versions(version):
    assert contract.check_version(version) == version


@pytest.mark.parametrize("version", ["", None, "1.0 rc", ".1", "-1", "a" * 129, "1.0:latest", "x/y", "1.0\n"])
def test_invalid_versions(version):
    with pytest.raises(ContractError, match=r"is not a valid Docker tag \(\[A-Za-z0-9_\]"):
        contract.check_version(version)


# -- the manifest ---------------------------------------------------------------------------------------------
def test_manifest_round_trip_is_sorted_and_stable():
    entries = [("docker-compose.yml", "A" * 64), ("conf/app.env", "b" * 64)]
    doc = contract.build_manifest(entries)
    assert doc == {"schema_version": 1, "files": [{"path": "conf/app.env", "sha256": "b" * 64},
                                                  {"path": "docker-compose.yml", "sha256": "a" * 64}]}
    raw = contract.manifest_bytes(doc)
    assert raw == contract.manifest_bytes(contract.build_manifest(reversed(entries)))  # same bundle, same id
    assert contract.parse_manifest(raw) == [("conf/app.env", "b" * 64), ("docker-compose.yml", "a" * 64)]


@pytest.mark.parametrize("entries,words", [
    ([("conf/app.env", "a" * 64)], "does not list docker-compose.yml"),
    ([("docker-compose.yml", "a" * 64), (".complete", "a" * 64)], "reserved name"),
    ([("docker-compose.yml", "a" * 64), ("../x", "a" * 64)], "escapes the bundle"),
    ([("docker-compose.yml", "a" * 64), ("a\\b", "a" * 64)], "escapes the bundle"),
    ([("docker-compose.yml", "xyz")], "no valid SHA-256"),
    ([("docker-compose.yml", "a" * 64), ("docker-compose.yml/x", "a" * 64)], "both as a file and as a folder"),
])
def test_what_the_agent_would_refuse_is_never_built(entries, words):
    with pytest.raises(ContractError, match=words):
        contract.build_manifest(entries)


# -- atomic writes --------------------------------------------------------------------------------------------
def test_atomic_write_sets_its_mode_whatever_the_umask(tmp_path):
    path = str(tmp_path / "status.json")
    old = os.umask(0o077)
    try:
        contract.atomic_write(path, "one\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        contract.atomic_write(path, b"two\n", mode=0o600)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)
    with open(path) as f:
        assert f.read() == "two\n" and os.listdir(tmp_path) == ["status.json"]


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace",)) or real_replace(a, b))
    contract.atomic_write(str(tmp_path / "f"), "x")
    assert events == [("fsync", False), ("replace",), ("fsync", True)]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("old")

    def broken(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        contract.atomic_write(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


# -- bluegreen:running and bluegreen:workers ----------------------------------------------------------------
def test_running_round_trip():
    running = Running(version="2.0", digest=SHA, agent="0.1.0", result="success")
    value = contract.encode_running(running)
    assert value == f"version=2.0;digest={SHA};agent=0.1.0;result=success"
    assert contract.decode_running(value) == running


def test_running_worst_case_fits_a_tag_and_keeps_the_whole_version():
    version = "v" * 128
    running = Running(version=version, digest=SHA, agent="1.2.3.dev45+g0123456789abcdef.d20250101.local-x",
                      result="failed:lifecycle")
    value = contract.encode_running(running)
    assert len(value) <= contract.TAG_VALUE_MAX
    decoded = contract.decode_running(value)
    assert decoded.version == version and decoded.result == "failed:lifecycle"
    assert len(decoded.agent) == contract.AGENT_VERSION_MAX
    assert decoded.digest != SHA and contract.same_digest(SHA, decoded.digest)  # shortened, still its prefix
    assert len(decoded.digest) >= len("sha256:") + contract.DIGEST_MIN_HEX
    assert not contract.same_digest("sha256:" + "f" * 64, decoded.digest)


def test_running_before_any_version_served_and_bad_values():
    first_boot = Running(version=None, digest=None, agent="0.1.0", result="failed:image")
    assert contract.encode_running(first_boot) == "agent=0.1.0;result=failed:image"
    assert contract.decode_running("agent=0.1.0;result=failed:image;future=x") == first_boot
    for bad in (Running("1.0 rc", None, "0.1.0", "success"), Running("1.0", "md5:x", "0.1.0", "success"),
                Running("1.0", None, "0.1.0", "failed:nowhere"), Running("1.0", None, "0.1;0", "success")):
        with pytest.raises(ContractError):
            contract.encode_running(bad)
    with pytest.raises(ContractError, match="lacks agent= or result="):
        contract.decode_running("version=1.0")


def test_workers_values():
    assert [contract.check_workers(v) for v in ("running", "stopped")] == ["running", "stopped"]
    with pytest.raises(ContractError, match="must be running or stopped"):
        contract.check_workers("paused")


# -- the vocabulary -----------------------------------------------------------------------------------------
def test_every_phase_the_deployer_records_is_in_the_vocabulary():
    with open(os.path.join(ROOT, "deployer", "plan.py")) as f:
        recorded = set(re.findall(r"phase=\"([a-z-]+)\"", f.read()))
    assert recorded, "premise: the scan finds the phases"
    known = {phase for phases in contract.PHASES.values() for phase in phases}
    assert recorded <= known, f"not in the contract: {sorted(recorded - known)}"


def test_every_step_the_agent_records_or_fails_in_is_in_the_vocabulary():
    with open(os.path.join(ROOT, "agent", "run.py")) as f:
        recorded = set(re.findall(r"status\.step\(\"([a-z-]+)\"\)", f.read()))
    assert recorded and recorded <= set(contract.AGENT_STEPS)
    failing = {cls.step for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.AgentError)}
    assert failing <= set(contract.AGENT_ERROR_STEPS), sorted(failing - set(contract.AGENT_ERROR_STEPS))


def test_events_are_distinct_lowercase_words():
    assert len(set(contract.EVENTS)) == len(contract.EVENTS) == 9
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)?", event) for event in contract.EVENTS)


# -- the tool's own version -----------------------------------------------------------------------------------
def test_own_version_comes_from_the_distribution_or_the_checkout(monkeypatch):
    assert contract.__version__ == metadata.version(contract.DIST_NAME)

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        declared = re.search(r"^version\s*=\s*(\S+)", f.read(), re.MULTILINE).group(1)
    assert contract._own_version() == declared


# -- content-addressed bundles and manifest modes (issue 11; audit F9, F10, F24) ------------------------------
def test_bundle_addresses_and_bases():
    h = "c" * 64
    assert contract.bundle_address(f"web/{h}/") == h and contract.bundle_base(f"web/{h}/") == "web/"
    assert contract.bundle_address(f"{h}/") == h and contract.bundle_base(f"{h}/") == ""
    for old_style in ("web/", "", "web/v1/", "web/" + "C" * 64 + "/", "web/" + "c" * 63 + "/"):
        assert contract.bundle_address(old_style) is None and contract.bundle_base(old_style) == old_style
    body = b'{"files": []}\n'
    url = contract.bundle_url("boot-bucket", "team/web/", body)
    assert url == f"s3://boot-bucket/team/web/{contract.sha256_hex(body)}/"
    contract.check_bundle_address(contract.parse_s3_url(url)[1], body)
    contract.check_bundle_address("team/web/", b"anything")  # old style: nothing to check against
    with pytest.raises(ContractError, match="not to the name of its prefix"):
        contract.check_bundle_address(contract.parse_s3_url(url)[1], body + b" ")
    with pytest.raises(ContractError, match="a tag value holds 256"):
        contract.bundle_url("boot-bucket", "x" * 190 + "/", body)


def test_manifest_modes_are_optional_and_old_manifests_read_the_same():
    a, b = "a" * 64, "b" * 64
    plain = contract.build_manifest([("docker-compose.yml", a)])
    assert plain == {"schema_version": 1, "files": [{"path": "docker-compose.yml", "sha256": a}]}
    assert contract.build_manifest([("docker-compose.yml", a, 0o644)]) == plain  # same bytes, same release id
    doc = contract.build_manifest([("run.sh", b, 0o755), ("docker-compose.yml", a)])
    assert doc["files"][1] == {"path": "run.sh", "sha256": b, "mode": "0755"}
    entries = contract.parse_manifest_entries(contract.manifest_bytes(doc))
    assert [(e.path, e.mode) for e in entries] == [("docker-compose.yml", 0o644), ("run.sh", 0o755)]
    assert contract.parse_manifest(contract.manifest_bytes(doc)) == [("docker-compose.yml", a), ("run.sh", b)]
    with pytest.raises(ContractError, match="at most 0755"):
        contract.build_manifest([("docker-compose.yml", a, 0o775)])
    with pytest.raises(ContractError, match="bytes; at most"):
        contract.parse_manifest_entries(b" " * (contract.MANIFEST_MAX + 1))
