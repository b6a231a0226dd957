#!/usr/bin/env bash
# The agent runs on Amazon Linux 2023's Python 3.9. Where a 3.9 interpreter exists (pyenv on the build machines),
# install the agent into a 3.9 virtualenv and run its whole test group against that build. Debian has no 3.9
# package, so elsewhere this says so and `make lint`'s vermin check is what holds the agent to 3.9.
set -uo pipefail
cd "$(dirname "$0")/.."
py39=""
for candidate in $(ls -d /root/.pyenv/versions/3.9*/bin/python3.9 2>/dev/null) $(command -v python3.9 || true); do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then py39=$candidate; break; fi
done
if [ -z "$py39" ]; then
  echo "test-agent-py39: no python3.9 on this machine; the agent's 3.9 compatibility is checked by vermin (make lint)"
  exit 0
fi
VENV39=${VENV39:-.venv39}
stamp="$VENV39/.installed-$(cat setup.cfg pyproject.toml agent/*.py | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV39"
  "$py39" -m venv "$VENV39" || exit 1
  "$VENV39/bin/pip" install -q --disable-pip-version-check . 2>&1 | grep -v "^WARNING: Location" || true
  rm -rf build
  touch "$stamp"
fi
"$VENV39/bin/python" --version
BLUEGREEN_AGENT_BIN="$PWD/$VENV39/bin/bluegreen-agent" exec scripts/run-tests.sh tests/agent "$@"
