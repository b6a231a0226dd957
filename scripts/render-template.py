#!/usr/bin/env python3
"""Render infra/cloudformation/service.yaml from service.src.yaml, iam/*.json and the cloud-init template.

One source for each document (issue 15): the IAM policies live in iam/*.json, the user-data in
cloud-init/user-data.yaml.tmpl; the template carries copies made here, never edited by hand. Markers of the
source, each alone on its line's value:

  {{iam NAME.json}}    the policy iam/NAME.json, its placeholders mapped to the stack (PLACEHOLDERS below)
  {{user-data}}        Fn::Base64 of Fn::Sub of the cloud-init template, every one of its variables given
  # {{for color in blue green}} ... # {{end for}}
                       the block once per color, @color@ and @Color@ replaced (the groups are symmetric)

`scripts/render-template.py` writes service.yaml; `--check` exits 1 when the committed one is not current
(tests/deployer/test_template.py runs it). Deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "infra", "cloudformation", "service.src.yaml")
OUTPUT = os.path.join(ROOT, "infra", "cloudformation", "service.yaml")
IAM_DIR = os.path.join(ROOT, "iam")
USER_DATA = os.path.join(ROOT, "cloud-init", "user-data.yaml.tmpl")

# iam/*.json are written for an example pair (service demo, bucket bluegreen-bootstrap, account 123456789012,
# partition aws). Each example value becomes the stack's own, in this order; a string that changed becomes an
# Fn::Sub. IAM's own policy variables (${ec2:InstanceID}) come first: Fn::Sub must leave them literal (${!...}).
PLACEHOLDERS = (
    (re.compile(r"\$\{"), "${!"),
    (re.compile(r"\barn:aws:"), "arn:${AWS::Partition}:"),
    (re.compile(r"\b123456789012\b"), "${AWS::AccountId}"),
    (re.compile(r"\bbluegreen-bootstrap\b"), "${BucketName}"),
    (re.compile(r"\bdemo\b"), "${ServiceName}"),
)
# The cloud-init template's variables, each from a parameter (deployer/userdata.py CHECKS names the same three).
USER_DATA_VALUES = {"COMPOSE_PROJECT": "ServiceName", "BOOTSTRAP_BUCKET": "BucketName", "S3_UNSIGNED": "S3Unsigned"}

MARKER_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z]+): \{\{(?P<what>[a-z-]+)(?: (?P<arg>[A-Za-z0-9._-]+))?\}\}$")
PLAIN_KEY_RE = re.compile(r"\A[A-Za-z][A-Za-z0-9]*(::[A-Za-z]+)?\Z")
LOOP_RE = re.compile(r"^ *# \{\{for color in (?P<colors>[a-z ]+)\}\}$")
END_RE = re.compile(r"^ *# \{\{end for\}\}$")


class RenderError(Exception):
    pass


def map_value(value):
    """A JSON value of a policy with the example values replaced: strings that changed become {"Fn::Sub": ...}."""
    if isinstance(value, dict):
        return {k: map_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [map_value(v) for v in value]
    if isinstance(value, str):
        text = value
        for pattern, replacement in PLACEHOLDERS:
            text = pattern.sub(lambda _m, r=replacement: r, text)
        return {"Fn::Sub": text} if text != value else value
    return value


def plain_key(key):
    """Whether a key reads as itself unquoted (not `Null`, `true`, ... which YAML would take for values)."""
    import yaml

    return bool(PLAIN_KEY_RE.match(key)) and yaml.safe_load(key) == key


def emit(value, indent):
    """YAML block lines for a JSON value (strings JSON-quoted: valid YAML, no surprises with ':' or '*')."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            head = f"{pad}{key if plain_key(key) else json.dumps(key)}:"
            if isinstance(item, (dict, list)) and item:
                lines += [head] + emit(item, indent + 2)
            else:
                lines.append(f"{head} {json.dumps(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = emit(item, indent + 2)
                lines += [f"{pad}- {sub[0].lstrip()}"] + sub[1:]
            else:
                lines.append(f"{pad}- {json.dumps(item)}")
        return lines
    return [pad + json.dumps(value)]


def iam_block(name, indent, key):
    with open(os.path.join(IAM_DIR, name)) as f:
        doc = json.load(f)
    return [f"{' ' * indent}{key}:"] + emit(map_value(doc), indent + 2)


def user_data_block(indent, key, template):
    sys.path.insert(0, ROOT)
    from deployer.userdata import placeholders  # the renderer's own rule: only ${NAME}, no other dollar sign

    names = placeholders(template)
    if sorted(USER_DATA_VALUES) != names:
        raise RenderError(f"the cloud-init template's variables {names} are not the ones mapped here "
                          f"{sorted(USER_DATA_VALUES)}: update USER_DATA_VALUES (strict: every one given)")
    if not template.endswith("\n") or template.endswith("\n\n"):
        raise RenderError("the cloud-init template must end with exactly one newline (a YAML | block keeps one)")
    pad = " " * indent
    lines = [f"{pad}{key}:", f"{pad}  Fn::Base64:", f"{pad}    Fn::Sub:", f"{pad}      - |"]
    lines += [(f"{pad}        {line}" if line else "") for line in template[:-1].split("\n")]
    lines.append(f"{pad}      - " + "{" + ", ".join(f"{n}: !Ref {p}" for n, p in sorted(USER_DATA_VALUES.items()))
                 + "}")
    return lines


def render(source, template):
    out, loop = [], None
    for line in source.split("\n"):
        if loop is not None:
            if END_RE.match(line):
                for color in loop["colors"]:
                    out += [b.replace("@color@", color).replace("@Color@", color.capitalize()) for b in loop["body"]]
                loop = None
            else:
                loop["body"].append(line)
            continue
        m = LOOP_RE.match(line)
        if m:
            loop = {"colors": m.group("colors").split(), "body": []}
            continue
        m = MARKER_RE.match(line)
        if m:
            indent, key, what = len(m.group("indent")), m.group("key"), m.group("what")
            if what == "iam":
                out += iam_block(m.group("arg"), indent, key)
            elif what == "user-data":
                out += user_data_block(indent, key, template)
            else:
                raise RenderError(f"unknown marker {{{{{what}}}}} in {line.strip()!r}")
            continue
        if "{{" in line and not line.lstrip().startswith("#"):
            raise RenderError(f"a marker that is not alone on its line: {line.strip()!r}")
        out.append(line)
    if loop is not None:
        raise RenderError("a {{for}} block without its {{end for}}")
    return "# Generated by scripts/render-template.py from service.src.yaml, iam/*.json and\n" \
           "# cloud-init/user-data.yaml.tmpl: do not edit; edit those and run `make template`.\n" + "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if service.yaml is not current; write nothing")
    args = parser.parse_args(argv)
    with open(SOURCE) as f:
        source = f.read()
    with open(USER_DATA) as f:
        template = f.read()
    try:
        text = render(source, template)
    except RenderError as exc:
        print(f"render-template: {exc}", file=sys.stderr)
        return 2
    if args.check:
        try:
            with open(OUTPUT) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"render-template: {os.path.relpath(OUTPUT, ROOT)} is not current: run `make template`",
                  file=sys.stderr)
            return 1
        return 0
    tmp = OUTPUT + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
