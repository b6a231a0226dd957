#!/usr/bin/env bash
# The whole suite with the Docker engine and registry up (see with-infra.sh).
exec "$(dirname "$0")/with-infra.sh" python -m pytest "$@"
