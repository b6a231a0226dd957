#!/usr/bin/env bash
# Runs a command with the Docker engine and registry up (reused if they answer, else started), then stops only
# what THIS run started. DOCKER_HOST and BLUEGREEN_REGISTRY reach the command.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
record=$(mktemp /tmp/bluegreen-infra.XXXXXX)
python -m localcloud.infra up --state .infra --record "$record" >/dev/null || exit 1
trap 'python -m localcloud.infra down --state .infra --record "$record"; rm -f "$record"' EXIT
set -a; . .infra/env; set +a
"$@"
