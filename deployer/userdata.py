"""`bluegreen user-data`: render cloud-init/user-data.yaml.tmpl strictly (audit F15).

string.Template.substitute semantics: every placeholder of the template needs a value, a value the template
does not name is refused too (a typo), and each value is checked against the rule the agent will apply, so a
bad one fails here, on the operator's machine, and not on every instance at boot. An empty bucket never
renders: `allowed_buckets: []` would mean "any bucket" to the agent. Pure functions; the CLI reads the file.

The same template is rendered by CloudFormation's Fn::Sub, which fills the same `${NAME}` placeholders: the
template therefore holds no other dollar sign (tests/agent/test_boot_files.py checks both).
"""

from __future__ import annotations

import os
import re
import string

import yaml

from agent.contract import bucket_problem
from agent.settings import CONFIG_KEYS, PROJECT_RE

from .errors import UsageError

TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cloud-init",
                        "user-data.yaml.tmpl")
CONFIG_PATH = "/etc/bluegreen/agent.yml"
CONFIG_MODE = "0600"
# ${NAME} only: the one form both string.Template and Fn::Sub read the same way.
PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DOLLAR_RE = re.compile(r"\$")


def _project(value):
    if not PROJECT_RE.match(value):
        return "lowercase letters, digits, '-' or '_', starting with a letter or digit"
    return None


def _bucket(value):
    if not value:
        return "empty: the agent would read from any bucket"
    return bucket_problem(value)


def _boolean(value):
    return None if value in ("true", "false") else "true or false"


# Each variable the template may name, with the check of its value (the agent's own rule).
CHECKS = {"COMPOSE_PROJECT": _project, "BOOTSTRAP_BUCKET": _bucket, "S3_UNSIGNED": _boolean}


def placeholders(template):
    """The variable names a template uses; UsageError if it holds a dollar sign that is not `${NAME}`."""
    names = PLACEHOLDER_RE.findall(template)
    if len(DOLLAR_RE.findall(template)) != len(names):
        raise UsageError("the user-data template holds a dollar sign that is not a ${NAME} placeholder "
                         "(Fn::Sub and string.Template would read it differently)")
    return sorted(set(names))


def render(template, values):
    """The rendered user-data text; UsageError naming the first missing, unknown or invalid variable."""
    wanted = placeholders(template)
    missing = [n for n in wanted if n not in values]
    if missing:
        raise UsageError(f"user-data: no value for {', '.join(missing)}")
    unknown = sorted(set(values) - set(wanted))
    if unknown:
        raise UsageError(f"user-data: the template has no variable {', '.join(unknown)}")
    for name in wanted:
        value = values[name]
        check = CHECKS.get(name)
        problem = "no check is known for it" if check is None else check(value)
        if not isinstance(value, str) or problem:
            raise UsageError(f"user-data: {name}={value!r} is not valid ({problem})")
    text = string.Template(template).substitute(values)  # strict: a missing name raises (checked above)
    check_rendered(text)
    return text


def check_rendered(text):
    """The rendered document is cloud-config that writes the agent's config, root-only, with known keys."""
    if not text.startswith("#cloud-config\n"):
        raise UsageError("user-data must start with #cloud-config")
    doc = yaml.safe_load(text)
    files = {f.get("path"): f for f in doc.get("write_files", [])}
    entry = files.get(CONFIG_PATH)
    if entry is None or entry.get("permissions") != CONFIG_MODE:
        raise UsageError(f"user-data must write {CONFIG_PATH} with permissions {CONFIG_MODE}")
    config = yaml.safe_load(entry["content"]) or {}
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise UsageError(f"user-data writes unknown agent settings: {', '.join(unknown)}")
    if not config.get("allowed_buckets"):
        raise UsageError("user-data writes an empty allowed_buckets")
    return doc


def read_template(path=None):
    path = path or TEMPLATE
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read the user-data template {path}: {exc.strerror} (pass --template)") from None
