#!/usr/bin/env bash
# The project's virtualenv (.venv, or $VENV): the project and its test tools, installed editable. All that
# `make unit` and `make lint` need; scripts/host-setup.sh adds what the Docker, HAProxy and fleet tests need.
# Idempotent: a second run installs nothing until setup.cfg or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian splits venv/ensurepip out of python3: the one package a virtualenv needs.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" != 0 ]; then echo "venv-setup: python3 cannot create a virtualenv; as root: apt-get install python3-venv" >&2; exit 1; fi
  echo "venv-setup: installing python3-venv" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  # (pip's config here lists local mirror folders that may not exist: drop its warnings about them)
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test,local]' 2>&1 | { grep -v "^WARNING: Location" || true; }
  touch "$stamp"
fi
