"""One set of S3 URL rules on both sides (docs/contract.md, "S3 URLs"): every case below goes through the
contract's parser, through `bluegreen push-bootstrap DIR URL --dry-run` and through `bluegreen-agent run
--dry-run` with the URL as the group's `bluegreen:bootstrap` tag, and all three must agree.

Every refused case names a valid bucket unless the bucket is what is under test, so that the rule under test
is the one that refuses it.
"""

import json

import pytest

from agent import contract
from agent.contract import ContractError, format_s3_url, parse_s3_url
from tests.agent.conftest import AgentRunner, Group, agent_error
from tests.helpers import Outcome, expect_exit

TOO_LONG = "s3://boot-bucket/" + "a/" * 120  # 257 characters: no tag can carry it (A12)

# (case, URL, (bucket, prefix) when accepted else None, words of the one error line when refused)
CASES = [
    ("dot segment", "s3://boot-bucket/./x/", None, "must not contain '.' or '..' segments"),
    ("dot-dot segment", "s3://boot-bucket/a/../x/", None, "must not contain '.' or '..' segments"),
    ("leading empty segment", "s3://boot-bucket//x/", None, "the prefix has an empty path segment"),
    ("inner empty segment", "s3://boot-bucket/x//y/", None, "the prefix has an empty path segment"),
    ("dotted bucket", "s3://boot.example.com/web/", ("boot.example.com", "web/"), None),
    ("trailing slash added", "s3://boot-bucket/team/web", ("boot-bucket", "team/web/"), None),
    ("trailing slash kept", "s3://boot-bucket/team/web/", ("boot-bucket", "team/web/"), None),
    ("keys with spaces", "s3://boot-bucket/my web/v 1/", ("boot-bucket", "my web/v 1/"), None),
    ("surrounding whitespace", " s3://boot-bucket/web/ ", ("boot-bucket", "web/"), None),
    ("empty prefix", "s3://boot-bucket", ("boot-bucket", ""), None),
    ("empty prefix with slash", "s3://boot-bucket/", ("boot-bucket", ""), None),
    ("IP-address bucket", "s3://192.168.1.1/x/", None, "formatted as an IP address"),
    ("adjacent dots", "s3://boot..bucket/x/", None, "two adjacent dots"),
    ("uppercase bucket", "s3://Boot-Bucket/x/", None, "3-63 lowercase letters"),
    ("bucket too short", "s3://ab/x/", None, "3-63 lowercase letters"),
    ("reserved bucket prefix", "s3://xn--boot/x/", None, "the prefix xn-- is reserved"),
    ("reserved bucket suffix", "s3://boot-s3alias/x/", None, "the suffix -s3alias is reserved"),
    ("not s3", "https://boot-bucket/x/", None, "is not an s3://bucket/prefix/ URL"),
    ("longer than a tag value", TOO_LONG, None, "a tag value holds 256 (A12)"),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("case,url,accepted,words", CASES, ids=IDS)
def test_the_contracts_parser(case, url, accepted, words):
    if accepted:
        assert parse_s3_url(url) == accepted
        assert parse_s3_url(format_s3_url(*accepted)) == accepted  # the canonical form reads back the same
    else:
        with pytest.raises(ContractError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_s3_url(url)


def test_control_characters_are_refused():
    for url in ("s3://boot-bucket/a\tb/", "s3://boot-bucket/a\nb/", "s3://boot-bucket/a\x7fb/"):
        with pytest.raises(ContractError, match="control character"):
            parse_s3_url(url)


def push_dry_run(bundle_dir, url, capsys):
    from deployer import cli

    capsys.readouterr()
    code = cli.main(["push-bootstrap", str(bundle_dir), url, "--dry-run", "--output", "json"])
    out = capsys.readouterr()
    return Outcome(code, out.out, out.err)


def test_push_bootstrap_applies_the_rules(aws, tmp_path, capsys):
    (tmp_path / contract.COMPOSE_FILE).write_text("services: {}\n")
    for case, url, accepted, words in CASES:
        result = push_dry_run(tmp_path, url, capsys)
        if accepted:
            expect_exit(result, 0)
            summary = json.loads(result.stdout)
            assert (summary["bucket"], summary["base"]) == accepted, case  # bundles go under base/<sha256>/
        else:
            # exit 2 and one line; --output json adds the same error as JSON on stdout
            expect_exit(result, 2, words, prog="bluegreen")
            assert words in json.loads(result.stdout)["error"], case


def test_the_agent_applies_the_same_rules(aws, imds_for, tmp_path, capsys):
    group = Group(aws.endpoint, "web-urls", {contract.TAG_VERSION: "1.0", contract.TAG_IMAGE: "127.0.0.1:5000/web",
                                             contract.TAG_BOOTSTRAP: "s3://boot-bucket/web/"})
    runner = AgentRunner(tmp_path, imds_for(group.instance_ids[0], aws.endpoint))
    for case, url, accepted, words in CASES:
        if len(url) > contract.TAG_VALUE_MAX:
            continue  # no group tag can carry it: only push-bootstrap can be given it
        group.set_tags(bootstrap=url)
        result = runner.in_process(capsys, "run", "--dry-run")
        if accepted:
            expect_exit(result, 0)
            assert json.loads(result.stdout)["settings"]["bootstrap"] == format_s3_url(*accepted), case
        else:
            line = agent_error(result, 5)  # docs/agent.md: a setting is missing or invalid
            assert line.startswith("bluegreen-agent: settings failed: bootstrap ") and words in line, case
