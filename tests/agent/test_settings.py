"""Settings: flags > the group's tags > the config file > defaults, and every value validated first."""

import pytest

from agent.errors import ConfigError, SettingsError
from agent.settings import config_path, load_config, resolve, tags_to_settings

TAGS = {"bluegreen:version": "1.0", "bluegreen:image": "127.0.0.1:5000/web",
        "bluegreen:bootstrap": "s3://boot-bucket/web", "Name": "ignored"}


def settings(flags=None, tags=None, config=None):
    return resolve(flags or {}, tags_to_settings(TAGS if tags is None else tags), config or {})


def test_flags_beat_tags_beat_config_beat_defaults():
    s = settings(flags={"version": "3.0"}, config={"version": "0.1", "image": "other/web",
                                                   "compose_project": "site", "workdir": "/srv/bg"})
    assert (s.version, s.sources["version"]) == ("3.0", "flag")
    assert (s.image, s.sources["image"]) == ("127.0.0.1:5000/web", "tag")
    assert (s.compose_project, s.sources["compose_project"]) == ("site", "config")
    assert (s.health_timeout, s.sources["health_timeout"]) == (300.0, "default")
    assert (s.bucket, s.prefix, s.bootstrap) == ("boot-bucket", "web/", "s3://boot-bucket/web/")


def test_config_fills_what_the_group_does_not_tag():
    s = settings(tags={"bluegreen:version": "1.0"},
                 config={"image": "registry.example.com:443/team/web", "bootstrap": "s3://b-1/x/"})
    assert s.image == "registry.example.com:443/team/web" and s.sources["image"] == "config"


def test_only_instance_local_settings_ignore_tags():
    # compose_project is not a tag key: a group tag cannot move where or how the stack runs on the instance.
    s = settings(tags=dict(TAGS, **{"bluegreen:compose-project": "evil"}))
    assert s.compose_project == "bluegreen"


@pytest.mark.parametrize("version", ["1.0", "v2", "2024-01-01_build.7", "A" * 128])
def test_valid_versions(version):
    assert settings(flags={"version": version}).version == version


@pytest.mark.parametrize("version", ["", "1.0 rc", ".1", "-1", "a" * 129, "1.0:latest", "x/y"])
def test_invalid_versions_are_refused(version):
    with pytest.raises(SettingsError, match="version|no version"):
        settings(flags={"version": version})


@pytest.mark.parametrize("image", ["web", "team/web", "127.0.0.1:5000/web", "localhost:5000/a/b-c",
                                   "123456789012.dkr.ecr.us-east-1.amazonaws.com/web", "a__b/c.d"])
def test_valid_images(image):
    assert settings(tags=dict(TAGS, **{"bluegreen:image": image})).image == image


@pytest.mark.parametrize("image", ["Web", "web:1.0", "web@sha256:" + "a" * 64, "-web", "web//x", "web/", "ho st/w"])
def test_invalid_images_are_refused(image):
    with pytest.raises(SettingsError, match="not a valid image repository"):
        settings(tags=dict(TAGS, **{"bluegreen:image": image}))


def test_a_bad_bootstrap_url_is_a_settings_error_naming_the_rule():
    # The rules themselves are the contract's (tests/agent/test_contract.py, both CLIs in test_s3_urls.py).
    with pytest.raises(SettingsError, match=r"bootstrap 's3://boot-bucket/\./x/': the prefix must not contain"):
        settings(tags=dict(TAGS, **{"bluegreen:bootstrap": "s3://boot-bucket/./x/"}))


def test_bucket_allow_list():
    assert settings(config={"allowed_buckets": ["boot-bucket"]}).bucket == "boot-bucket"
    with pytest.raises(SettingsError, match="'boot-bucket' is not in allowed_buckets"):
        settings(config={"allowed_buckets": ["other"]})


def test_missing_required_tag_names_the_tag():
    with pytest.raises(SettingsError, match="set the group tag bluegreen:version"):
        settings(tags={"bluegreen:image": "web", "bluegreen:bootstrap": "s3://bbb/"})


def test_health_url_may_name_compose_env_variables():
    s = settings(tags=dict(TAGS, **{"bluegreen:health-url": "http://127.0.0.1:${APP_PORT}/health"}),
                 config={"compose_env": {"APP_PORT": 18001, "DEBUG": True}})
    assert s.health_url == "http://127.0.0.1:18001/health"
    assert s.compose_env == {"APP_PORT": "18001", "DEBUG": "true"}
    with pytest.raises(SettingsError, match="unknown compose_env variable"):
        settings(tags=dict(TAGS, **{"bluegreen:health-url": "http://127.0.0.1:${NOPE}/"}))
    with pytest.raises(SettingsError, match="not an http"):
        settings(tags=dict(TAGS, **{"bluegreen:health-url": "ftp://x/"}))


@pytest.mark.parametrize("config,words", [
    ({"compose_project": "Has Spaces"}, "compose_project"),
    ({"compose_env": {"1BAD": "x"}}, "not a valid variable name"),
    ({"compose_env": ["A=1"]}, "mapping"),
    ({"health_timeout": 0}, "positive"),
    ({"imds_deadline": "soon"}, "must be a number"),
    ({"s3_unsigned": "maybe"}, "true or false"),
    ({"allowed_buckets": "b"}, "list of strings"),
    ({"compose_command": []}, "must not be empty"),
])
def test_bad_config_values_are_refused(config, words):
    with pytest.raises(SettingsError, match=words):
        settings(config=config)


def test_config_file_lookup_order(tmp_path):
    assert config_path("/x.yml", {"BLUEGREEN_AGENT_CONFIG": "/y.yml"}) == ("/x.yml", True)
    assert config_path(None, {"BLUEGREEN_AGENT_CONFIG": "/y.yml"}) == ("/y.yml", True)
    assert config_path(None, {}) == ("/etc/bluegreen/agent.yml", False)


def test_config_file_errors(tmp_path):
    assert load_config(str(tmp_path / "absent.yml"), required=False) == {}
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "absent.yml"), required=True)
    typo = tmp_path / "typo.yml"
    typo.write_text("compose_projekt: web\n")
    with pytest.raises(ConfigError, match="unknown setting.*compose_projekt"):
        load_config(str(typo), required=True)
    broken = tmp_path / "broken.yml"
    broken.write_text("a: [\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(broken), required=True)
    good = tmp_path / "good.yml"
    good.write_text("compose_project: web\ncompose_env: {APP_PORT: '18001'}\n")
    assert load_config(str(good), required=True) == {"compose_project": "web", "compose_env": {"APP_PORT": "18001"}}


def test_settings_needed_before_the_tags_are_validated_too():
    from agent.settings import local_number

    assert local_number({}, "imds_deadline") == 120.0
    assert local_number({"imds_deadline": 5}, "imds_deadline") == 5.0
    with pytest.raises(SettingsError, match="imds_deadline must be a number"):
        local_number({"imds_deadline": "soon"}, "imds_deadline")


def test_printed_settings_hide_secret_looking_compose_env_values():
    s = settings(config={"compose_env": {"APP_PORT": "18001", "DB_PASSWORD": "hunter2", "api_token": "t0k"}})
    printed = s.as_dict()
    assert printed["compose_env"] == {"APP_PORT": "18001", "DB_PASSWORD": "<redacted>", "api_token": "<redacted>"}
    assert s.compose_env["DB_PASSWORD"] == "hunter2"  # compose itself still gets the value
