"""Resolved settings: flags > the group's tags > the config file > defaults, decided here and nowhere else.

Pure: given the three sources as plain dicts, return validated Settings or raise SettingsError/ConfigError.
Every value is checked before anything on the instance is touched.
"""
from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field

from agent.contract import (
    TAG_BOOTSTRAP,
    TAG_DIGEST,
    TAG_HEALTH_URL,
    TAG_IMAGE,
    TAG_LIFECYCLE_HOOK,
    TAG_VERSION,
    ContractError,
    format_s3_url,
    is_version,
    parse_s3_url,
)
from agent.errors import ConfigError, SettingsError

DEFAULT_CONFIG = "/etc/bluegreen/agent.yml"
CONFIG_ENV = "BLUEGREEN_AGENT_CONFIG"
DEFAULT_WORKDIR = "/opt/bluegreen"

# The group's tags the agent reads (A12: the group's, never the instance's own).
TAG_KEYS = {
    TAG_VERSION: "version",
    TAG_IMAGE: "image",
    TAG_BOOTSTRAP: "bootstrap",
    TAG_HEALTH_URL: "health_url",
    TAG_LIFECYCLE_HOOK: "lifecycle_hook",
    # images (issue 11 part 3, audit F8): the digest `deploy` resolved for bluegreen:version.
    TAG_DIGEST: "digest",
}

# Settings that only the instance's own config may set (one machine can run many agents side by side).
LOCAL_DEFAULTS = {
    "workdir": DEFAULT_WORKDIR,
    "compose_project": "bluegreen",
    "compose_env": {},
    "compose_command": None,
    "s3_unsigned": False,
    "allowed_buckets": [],
    "imds_deadline": 120.0,
    "group_deadline": 120.0,
    "pull_timeout": 600.0,
    "compose_timeout": 600.0,
    "health_timeout": 300.0,
    "health_interval": 0.5,
    "heartbeat_interval": 60.0,
    "keep_releases": 2,
    # health (issue 11 part 4; audit F6, F12): healthy means health_successes passing polls in a row, the first
    # at least health_stable_s seconds back. 3 polls at health_interval 0.5 s and a 2 s window: a single lucky
    # 2xx or an instant of `running` no longer passes, a process that dies within 2 s of its first passing poll
    # is seen (Docker restarts it within ~0.1-0.2 s, so RestartCount moves inside the window), and a healthy
    # stack pays 2 s once per boot, against the >= 10 s the load balancer's own checks take after CONTINUE (E1).
    "health_successes": 3,
    "health_stable_s": 2.0,
    # boot (issue 11): one deadline for the whole run, which clips every step's own wait (audit F13); below the
    # unit's TimeoutStartSec (30 min) with room to ABANDON and write status.json.
    "run_deadline": 1500.0,
    # images (issue 11 parts 3 and 7, audit F13, F18): no progress from a pull for this long is a stall
    # (pull_timeout bounds each pull as a whole); old images of the app repository pruned after a success.
    "pull_stall_timeout": 60.0,
    "prune_images": True,
}
CONFIG_KEYS = set(TAG_KEYS.values()) | set(LOCAL_DEFAULTS)

# Docker's reference grammar (distribution/reference): a repository without tag or digest (the tag, the
# version, is the contract's rule).
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
HOOK_RE = re.compile(r"^[A-Za-z0-9_./-]{1,255}$")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME_RE = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)
DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
URL_RE = re.compile(r"^https?://[^/\s:]+(?::[0-9]{1,5})?(?:/\S*)?$")

# secrets (issue 11, audit F15): a compose_env value may be a reference the agent resolves at run time
# (agent/secrets.py), so that no secret lives in user-data, the config file or the bundle. A mapping, not a
# string prefix: a plain value can never be mistaken for a reference (a password that happens to start with
# "ssm:"), and an older agent refuses the mapping (exit 5) instead of passing the reference on as the value.
#   DB_PASSWORD: {ssm: /bluegreen/web/db-password}            SSM Parameter Store, GetParameter WithDecryption
#   API_TOKEN: {secretsmanager: bluegreen/web/api, key: token}  Secrets Manager, GetSecretValue, one JSON field
_ARN_PREFIX = r"arn:aws[a-z-]*:{service}:[a-z0-9-]+:[0-9]{{12}}:"
# A parameter name or ARN, optionally with a :version or :label selector (GetParameter takes both).
SSM_NAME_RE = re.compile(rf"^(?:{_ARN_PREFIX.format(service='ssm')}parameter)?/?[A-Za-z0-9_.\-/]{{1,1011}}"
                         r"(?::[A-Za-z0-9_.\-]{1,100})?$")
SECRET_ID_RE = re.compile(rf"^(?:{_ARN_PREFIX.format(service='secretsmanager')}secret:)?[A-Za-z0-9/_+=.@\-]{{1,512}}$")
SECRET_SOURCES = {"ssm": SSM_NAME_RE, "secretsmanager": SECRET_ID_RE}


@dataclass(frozen=True)
class SecretRef:
    source: str  # "ssm" or "secretsmanager"
    id: str  # parameter name or ARN; secret name or ARN
    key: str | None = None  # a field of the secret's JSON value

    @property
    def region(self):
        """The Region an ARN names (None for a plain name: the instance's own Region)."""
        return self.id.split(":")[3] if self.id.startswith("arn:") else None

    def as_config(self):
        return {self.source: self.id, **({"key": self.key} if self.key is not None else {})}

    def __str__(self):
        return f"{self.source}:{self.id}" + (f" key {self.key}" if self.key is not None else "")


def secret_ref(name, value):
    """A compose_env mapping value as a SecretRef, validated. Pure."""
    sources = [k for k in value if k in SECRET_SOURCES]
    unknown = sorted(str(k) for k in value if k not in SECRET_SOURCES and k != "key")
    if len(sources) != 1 or unknown:
        raise SettingsError(f"compose_env: {name} must be a plain value, {{ssm: NAME}} or "
                            f"{{secretsmanager: ID, key: FIELD}}, got the keys {', '.join(map(str, value)) or 'none'}")
    source = sources[0]
    ident, key = value[source], value.get("key")
    if not isinstance(ident, str) or not SECRET_SOURCES[source].match(ident):
        raise SettingsError(f"compose_env: {name}: {ident!r} is not a valid {source} name or ARN")
    if key is not None and (source != "secretsmanager" or not isinstance(key, str) or not key):
        raise SettingsError(f"compose_env: {name}: key (a field of a JSON secret) goes with secretsmanager only, "
                            "as a non-empty string")
    return SecretRef(source, ident, key)


@dataclass(frozen=True)
class Settings:
    version: str
    image: str
    bucket: str
    prefix: str
    health_url: str | None
    lifecycle_hook: str | None
    workdir: str
    compose_project: str
    compose_env: dict[str, str]
    compose_command: tuple[str, ...] | None
    s3_unsigned: bool
    allowed_buckets: tuple[str, ...]
    imds_deadline: float
    group_deadline: float
    pull_timeout: float
    compose_timeout: float
    health_timeout: float
    health_interval: float
    heartbeat_interval: float
    keep_releases: int
    health_successes: int
    health_stable_s: float
    digest: str | None
    pull_stall_timeout: float
    prune_images: bool
    compose_secrets: dict[str, SecretRef] = field(default_factory=dict)
    run_deadline: float = LOCAL_DEFAULTS["run_deadline"]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self):
        return format_s3_url(self.bucket, self.prefix)

    def as_dict(self):
        out = {k: getattr(self, k) for k in ("version", "image", "bootstrap", "health_url", "lifecycle_hook",
                                             "workdir", "compose_project", "compose_env", "s3_unsigned",
                                             "allowed_buckets", "imds_deadline", "group_deadline",
                                             "pull_timeout", "compose_timeout", "health_timeout",
                                             "health_interval", "heartbeat_interval", "keep_releases",
                                             "health_successes", "health_stable_s", "run_deadline",
                                             "digest", "pull_stall_timeout", "prune_images")}
        # compose_env may carry secrets for interpolation: `show` and `--dry-run` print the names, not those values.
        out["compose_env"] = {k: "<redacted>" if SECRET_NAME_RE.search(k) else v for k, v in self.compose_env.items()}
        # F15: a secret reference is printed as the reference, as written in the config; its value is never here.
        out["compose_env"].update({k: ref.as_config() for k, ref in self.compose_secrets.items()})
        out["compose_command"] = list(self.compose_command) if self.compose_command else None
        out["allowed_buckets"] = list(self.allowed_buckets)
        out["sources"] = dict(self.sources)
        return out


def config_path(flag_value, environ):
    """--config > BLUEGREEN_AGENT_CONFIG > /etc/bluegreen/agent.yml; the second value says if it must exist."""
    if flag_value:
        return flag_value, True
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], True
    return DEFAULT_CONFIG, False


def load_config(path, required):
    """Read the YAML config file into a dict; unknown keys are refused so that a typo is not silently ignored."""
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    import yaml  # lazily: keeps `--help` fast

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        names, known = ", ".join(map(str, unknown)), ", ".join(sorted(CONFIG_KEYS))
        raise ConfigError(f"config file {path}: unknown setting(s) {names} (known: {known})")
    if data.get("allowed_buckets") == []:
        # What a template rendered with envsubst and an unset variable leaves (audit F15): refuse it rather
        # than read it as "any bucket". Leaving the key out still allows any.
        raise ConfigError(f"config file {path}: allowed_buckets is empty; name the bootstrap bucket, or leave "
                          "the key out to allow any bucket")
    return data


def tags_to_settings(tags):
    """The group's tags ({key: value}) as setting names; tags the agent does not know are ignored."""
    return {TAG_KEYS[k]: v for k, v in tags.items() if k in TAG_KEYS}


def local_number(config, name):
    """A numeric instance-local setting needed before the group's tags are read (e.g. the IMDS deadline)."""
    value = config.get(name)
    return _positive({name: LOCAL_DEFAULTS[name] if value is None else value}, name)


def resolve_workdir(flags, config):
    return _first(flags, config, "workdir") or DEFAULT_WORKDIR


def _first(flags, config, name):
    for source in (flags, config):
        if source.get(name) is not None:
            return source[name]
    return None


def resolve(flags, tags, config):
    """Merge flags > tags > config > defaults and validate every value. tags are setting names, not tag keys."""
    merged, sources = {}, {}
    for name in sorted(CONFIG_KEYS):
        for source_name, source in (("flag", flags), ("tag", tags), ("config", config)):
            if source_name == "tag" and name not in TAG_KEYS.values():
                continue
            if source.get(name) is not None:
                merged[name], sources[name] = source[name], source_name
                break
        else:
            merged[name], sources[name] = LOCAL_DEFAULTS.get(name), "default"

    version = _required(merged, "version", TAG_VERSION)
    if not is_version(version):
        raise SettingsError(f"version {version!r} (from {sources['version']}) is not a valid Docker tag")
    image = _required(merged, "image", TAG_IMAGE)
    if not REPOSITORY_RE.match(image):
        raise SettingsError(f"image {image!r} (from {sources['image']}) is not a valid image repository "
                            "(no tag, no digest)")
    allowed = tuple(_str_list(merged["allowed_buckets"], "allowed_buckets"))
    bucket, prefix = bootstrap_location(_required(merged, "bootstrap", TAG_BOOTSTRAP))
    if allowed and bucket not in allowed:
        raise SettingsError(f"bootstrap bucket {bucket!r} is not in allowed_buckets ({', '.join(allowed)})")
    project = str(merged["compose_project"])
    if not PROJECT_RE.match(project):
        raise SettingsError(f"compose_project {project!r} must be lowercase letters, digits, '-' or '_'")
    compose_env, compose_secrets = _env_map(merged["compose_env"])
    health_url = _health_url(merged["health_url"], compose_env, compose_secrets)
    hook = merged["lifecycle_hook"]
    if hook is not None and not HOOK_RE.match(str(hook)):
        raise SettingsError(f"lifecycle hook name {hook!r} is not valid")
    digest = _digest(merged, sources)
    command = merged["compose_command"]
    if command is not None:
        if isinstance(command, str):
            command = command.split()
        command = tuple(_str_list(command, "compose_command"))
        if not command:
            raise SettingsError("compose_command must not be empty")
    return Settings(
        version=version, image=image, bucket=bucket, prefix=prefix, health_url=health_url,
        lifecycle_hook=str(hook) if hook is not None else None,
        workdir=str(merged["workdir"]), compose_project=project, compose_env=compose_env,
        compose_secrets=compose_secrets,
        compose_command=command, s3_unsigned=_bool(merged["s3_unsigned"], "s3_unsigned"),
        allowed_buckets=allowed,
        imds_deadline=_positive(merged, "imds_deadline"), group_deadline=_positive(merged, "group_deadline"),
        pull_timeout=_positive(merged, "pull_timeout"), compose_timeout=_positive(merged, "compose_timeout"),
        health_timeout=_positive(merged, "health_timeout"), health_interval=_positive(merged, "health_interval"),
        heartbeat_interval=_positive(merged, "heartbeat_interval"),
        keep_releases=int(_positive(merged, "keep_releases")), run_deadline=_positive(merged, "run_deadline"),
        digest=digest, pull_stall_timeout=_positive(merged, "pull_stall_timeout"),
        prune_images=_bool(merged["prune_images"], "prune_images"), sources=sources, **_health_policy(merged))


def _health_policy(merged):
    """health_successes (a whole number >= 1) and health_stable_s (>= 0, below health_timeout: a window the
    deadline cannot hold would fail every run)."""
    successes = merged["health_successes"]
    if isinstance(successes, bool) or not isinstance(successes, (int, float, str)) or \
            not str(successes).strip().isdigit() or int(str(successes).strip()) < 1:
        raise SettingsError(f"health_successes must be a whole number of at least 1, got {successes!r}")
    stable = merged["health_stable_s"]
    try:
        window = float(stable)
    except (TypeError, ValueError):
        raise SettingsError(f"health_stable_s must be a number, got {stable!r}") from None
    if isinstance(stable, bool) or window < 0:
        raise SettingsError(f"health_stable_s must be 0 or more seconds, got {stable!r}")
    if window >= _positive(merged, "health_timeout"):
        raise SettingsError(f"health_stable_s ({window:g}) must be below health_timeout "
                            f"({_positive(merged, 'health_timeout'):g}): the window could never be held")
    return {"health_successes": int(str(successes).strip()), "health_stable_s": window}


def _digest(merged, sources):
    """The digest to pull, validated; None when there is none or it names another version than the one run.

    `bluegreen:digest` is the digest of IMAGE:<bluegreen:version> (the contract): it applies only to the
    version from the same source. An operator's `--app-version` canary runs another version: pulled by tag."""
    value = merged.get("digest")
    if value is None or str(value).strip() == "":
        return None
    value = str(value).strip()
    if not DIGEST_RE.match(value):
        raise SettingsError(f"digest {value!r} (from {sources['digest']}) is not sha256:<64 lowercase hex>")
    if sources.get("digest") != sources.get("version"):
        return None
    return value


def bootstrap_location(url):
    """The bootstrap URL as (bucket, prefix), by the contract's one set of S3 URL rules."""
    try:
        return parse_s3_url(url)
    except ContractError as exc:
        raise SettingsError(f"bootstrap {exc}") from None


def _required(merged, name, tag):
    value = merged.get(name)
    if value is None or str(value).strip() == "":
        raise SettingsError(f"no {name}: set the group tag {tag} (or {name} in the config file)")
    return str(value).strip()


def _str_list(value, name):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{name} must be a list of strings")
    return list(value)


def _env_map(value):
    """compose_env as ({NAME: plain value}, {NAME: SecretRef})."""
    if not isinstance(value, dict):
        raise SettingsError("compose_env must be a mapping of NAME: value")
    out, refs = {}, {}
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise SettingsError(f"compose_env: {key!r} is not a valid variable name")
        if isinstance(val, dict):
            refs[key] = secret_ref(key, val)
            continue
        if isinstance(val, list) or val is None:
            raise SettingsError(f"compose_env: {key} must be a plain value or a secret reference "
                                "({ssm: NAME} or {secretsmanager: ID, key: FIELD})")
        out[key] = str(val).lower() if isinstance(val, bool) else str(val)
    return out, refs


def _health_url(value, compose_env, compose_secrets=None):
    """The health URL may name compose_env variables as ${NAME}, so one group tag serves many local agents."""
    if value is None or str(value).strip() == "":
        return None
    try:
        url = string.Template(str(value).strip()).substitute(compose_env)
    except (KeyError, ValueError) as exc:
        if isinstance(exc, KeyError) and exc.args and exc.args[0] in (compose_secrets or {}):
            raise SettingsError(f"health URL {value!r} names {exc.args[0]}, a secret reference: the URL is "
                                "printed and logged, a secret must not be") from None
        raise SettingsError(f"health URL {value!r} names an unknown compose_env variable {exc}") from None
    if not URL_RE.match(url):
        raise SettingsError(f"health URL {url!r} is not an http(s) URL")
    return url


def _bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise SettingsError(f"{name} must be true or false")


def _positive(merged, name):
    value = merged[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or number <= 0:
        raise SettingsError(f"{name} must be a positive number, got {value!r}")
    return number
