#!/usr/bin/env bash
# Regenerate ami/agent-requirements.txt: every package the agent-only wheel needs, pinned, with the SHA-256
# of every file PyPI publishes for that version (all platforms and Pythons), so `pip install --require-hashes`
# accepts the wheels for AL2023's python3.12 and Debian bookworm's python3.11 alike (audit F2).
# Needs pip-tools (pip install pip-tools) and PyPI; run it by hand when setup.cfg's install_requires change,
# then commit the result. The bake itself never resolves anything.
set -euo pipefail
cd "$(dirname "$0")/.."
in=$(mktemp --suffix=.in)
trap 'rm -f "$in"' EXIT
python3 ami/build-agent-wheel.py --print-requires > "$in"
# Only PyPI: this machine's pip configuration may add local mirrors whose files are not what instances get.
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= \
  pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --index-url https://pypi.org/simple \
  --output-file ami/agent-requirements.txt "$in"
sed -i "s|$in|ami/build-agent-wheel.py --print-requires (setup.cfg install_requires)|" ami/agent-requirements.txt
