#!/usr/bin/env bash
# Starts (or reuses) the Docker engine and registry, runs pytest, then stops only what THIS run started.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
record=$(mktemp /tmp/bluegreen-infra.XXXXXX)
python -m localcloud.infra up --state .infra --record "$record" >/dev/null || exit 1
trap 'python -m localcloud.infra down --state .infra --record "$record"; rm -f "$record"' EXIT
set -a; . .infra/env; set +a
python -m pytest "$@"
