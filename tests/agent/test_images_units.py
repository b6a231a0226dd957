"""The pure parts of the images work (issue 11 part 3): ECR host forms (F7), what the compose model asks to pull
(F5), the digest setting (F8), which credentials a pull uses, and the pull's own checks against a scripted
engine stream (its deadline, an error in the stream, a digest the engine does not report). The real engine,
registries and the stall itself: tests/agent/test_agent_images.py."""

import base64

import pytest
from docker.auth import AuthConfig

from agent import images
from agent.compose import other_images
from agent.errors import ImageError, SettingsError
from agent.settings import resolve, tags_to_settings

ACCOUNT = "123456789012"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("host,region", [
    (f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"),
    (f"{ACCOUNT}.dkr.ecr-fips.us-east-1.amazonaws.com", "us-east-1"),
    (f"{ACCOUNT}.dkr-ecr.eu-west-1.on.aws", "eu-west-1"),  # dual-stack (IPv6 subnets)
    (f"{ACCOUNT}.dkr-ecr-fips.us-gov-west-1.on.aws", "us-gov-west-1"),
    (f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1"),
    (f"{ACCOUNT}.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn", "cn-northwest-1"),
    (f"{ACCOUNT}.dkr.ecr.us-iso-east-1.c2s.ic.gov", "us-iso-east-1"),
])
def test_every_ecr_host_form_is_recognised(host, region):
    assert images.ecr_registry(f"{host}/team/web") == (ACCOUNT, region)
    # A pull-through cache repository lives on the same host, under its prefix.
    assert images.ecr_registry(f"{host}/docker-hub/library/nginx") == (ACCOUNT, region)


@pytest.mark.parametrize("repository", [
    "public.ecr.aws/nginx/nginx", "1234.dkr.ecr.eu-west-1.amazonaws.com/web", "127.0.0.1:5000/web",
    f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com.evil.example/web", "web",
])
def test_other_hosts_are_not_ecr(repository):
    assert images.ecr_registry(repository) is None


def test_the_compose_model_names_what_to_pull_besides_the_app_image():
    model = {"services": {
        "web": {"image": "127.0.0.1:5000/web:live"},
        "web2": {"image": "127.0.0.1:5000/web:live-admin"},  # the app's other fixed tag: the retag covers it
        "log": {"image": "docker.io/fluent/fluent-bit:3.0"},
        "log2": {"image": "fluent/fluent-bit:3.0", "pull_policy": "always"},
        "cache": {"image": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/redis@{DIGEST}", "pull_policy": "never"},
        "built": {"image": "local/thing:dev", "pull_policy": "build", "build": "."},
        "nobody": {"build": "."},
    }}
    assert other_images(model, "127.0.0.1:5000/web") == [
        (f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/redis@{DIGEST}", "never"),
        ("docker.io/fluent/fluent-bit:3.0", "missing"),
        ("fluent/fluent-bit:3.0", "always"),
    ]


def test_a_shared_image_takes_the_strictest_policy():
    model = {"services": {"a": {"image": "nginx:1", "pull_policy": "always"}, "b": {"image": "nginx:1"}}}
    assert other_images(model, "web") == [("nginx:1", "always")]


TAGS = {"bluegreen:version": "2.0", "bluegreen:image": "127.0.0.1:5000/web",
        "bluegreen:bootstrap": "s3://boot-bucket/web/"}


def test_the_groups_digest_applies_to_the_groups_version():
    s = resolve({}, tags_to_settings(dict(TAGS, **{"bluegreen:digest": DIGEST})), {})
    assert s.digest == DIGEST and s.as_dict()["digest"] == DIGEST


def test_an_app_version_flag_drops_the_groups_digest():
    # The digest is of IMAGE:<bluegreen:version>; a canary of another version is pulled by its tag.
    s = resolve({"version": "3.0"}, tags_to_settings(dict(TAGS, **{"bluegreen:digest": DIGEST})), {})
    assert s.version == "3.0" and s.digest is None


@pytest.mark.parametrize("bad", ["sha256:ABAB", "sha512:" + "ab" * 64, "ab" * 32, "sha256:" + "AB" * 32])
def test_a_malformed_digest_is_refused(bad):
    with pytest.raises(SettingsError, match="is not sha256:<64 lowercase hex>"):
        resolve({}, tags_to_settings(dict(TAGS, **{"bluegreen:digest": bad})), {})


def test_new_local_settings_have_defaults_and_are_validated():
    s = resolve({}, tags_to_settings(TAGS), {})
    assert (s.pull_stall_timeout, s.prune_images, s.digest) == (60.0, True, None)
    with pytest.raises(SettingsError, match="pull_stall_timeout must be a positive number"):
        resolve({}, tags_to_settings(TAGS), {"pull_stall_timeout": 0})


# -- credentials: the Docker config first, the agent's own ECR token only where it covers nothing ----------
class FakeEcr:
    def __init__(self):
        self.calls = []

    def get_authorization_token(self, registryIds):
        self.calls.append(registryIds)
        token = base64.b64encode(b"AWS:very-secret").decode()
        return {"authorizationData": [{"authorizationToken": token}]}


ECR_IMAGE = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/web"
ECR_HOST = ECR_IMAGE.split("/")[0]


@pytest.mark.parametrize("config,covered", [
    ({"credHelpers": {ECR_HOST: "ecr-login"}}, True),
    ({"credsStore": "ecr-login"}, True),
    ({"auths": {f"https://{ECR_HOST}": {"auth": "eDp5"}}}, True),
    ({"credHelpers": {"999999999999.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}}, False),
    ({}, False),
])
def test_ecr_uses_the_docker_config_when_it_covers_the_host_else_the_agents_own_token(config, covered):
    ecr = FakeEcr()
    regions = []

    def ecr_for(region):
        regions.append(region)
        return ecr

    auth = images.registry_auth(ECR_IMAGE, ecr_for, AuthConfig(config))
    if covered:
        assert auth is None and ecr.calls == []
    else:
        assert auth == {"username": "AWS", "password": "very-secret"}
        assert ecr.calls == [[ACCOUNT]] and regions == ["eu-west-1"]


def test_other_registries_always_use_the_docker_config():
    assert images.registry_auth("ghcr.io/team/web", lambda region: pytest.fail("no ECR call"), AuthConfig({})) is None
    assert images.docker_config_covers("docker.io", AuthConfig({"auths": {"https://index.docker.io/v1/": {}}}))


# -- the pull's own checks, against a scripted engine -----------------------------------------------------------
class ScriptedApi:
    """What images.pull uses of docker-py's APIClient, answering a scripted progress stream."""

    def __init__(self, events, repo_digests, clock=None):
        self.events, self.repo_digests, self.clock = events, repo_digests, clock
        self.closed = False
        self.posted = None

    def _url(self, path):
        return path

    def _post(self, url, params, headers, stream, timeout):
        self.posted = (url, params, timeout, headers)
        return self

    def _raise_for_status(self, response):
        pass

    def close(self):
        self.closed = True

    def _stream_helper(self, response, decode):
        for event in self.events:
            if self.clock is not None:
                self.clock.t += 10
            yield event

    def inspect_image(self, ref):
        return {"Id": "sha256:" + "cd" * 32, "RepoDigests": self.repo_digests}


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


AUTH = {"username": "u", "password": "p"}


def test_a_digest_pull_is_checked_against_the_engines_repo_digests():
    api = ScriptedApi([{"status": "Pulling"}], [f"127.0.0.1:5000/web@{DIGEST}"])
    pulled = images.pull(api, "127.0.0.1:5000/web", digest=DIGEST, auth=AUTH, stall_timeout=7)
    assert (pulled.digest, pulled.reference) == (DIGEST, f"127.0.0.1:5000/web@{DIGEST}")
    _, params, timeout, headers = api.posted
    assert params == {"fromImage": "127.0.0.1:5000/web", "tag": DIGEST} and timeout == (30, 7)
    assert "X-Registry-Auth" in headers and api.closed


def test_a_digest_the_engine_does_not_report_is_an_error():
    other = "sha256:" + "ef" * 32
    api = ScriptedApi([], [f"127.0.0.1:5000/web@{other}"])
    with pytest.raises(ImageError, match=f"reports digest\\(s\\) {other}"):
        images.pull(api, "127.0.0.1:5000/web", digest=DIGEST, auth=AUTH)


def test_an_error_in_the_progress_stream_fails_the_pull_and_closes_it():
    api = ScriptedApi([{"status": "Pulling"}, {"error": "unauthorized: authentication required"}], [])
    with pytest.raises(ImageError, match="pull 127.0.0.1:5000/web:2.0 failed: unauthorized"):
        images.pull(api, "127.0.0.1:5000/web", tag="2.0", auth=AUTH)
    assert api.closed


def test_a_pull_that_keeps_trickling_is_cut_at_the_overall_deadline():
    clock = Clock()
    api = ScriptedApi([{"progress": n} for n in range(100)], [], clock=clock)
    with pytest.raises(ImageError, match="did not finish within 60s \\(pull_timeout\\)"):
        images.pull(api, "127.0.0.1:5000/web", tag="2.0", auth=AUTH, deadline=60, clock=clock)
    assert api.closed and clock.t <= 80


def test_compose_pull_policies_come_down_to_three():
    model = {"services": {"a": {"image": "a:1", "pull_policy": "daily"}, "b": {"image": "b:1", "pull_policy": "every_12h"},
                          "c": {"image": "c:1", "pull_policy": "if_not_present"}, "d": {"image": "d:1"}}}
    assert other_images(model, "web") == [("a:1", "always"), ("b:1", "always"), ("c:1", "missing"),
                                          ("d:1", "missing")]
