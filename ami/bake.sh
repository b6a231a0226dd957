#!/usr/bin/env bash
# The AMI bake recipe: turns a stock Amazon Linux 2023 or Debian (bookworm or newer) image into the project's
# AMI. Runs ON the image being baked, as root, from the folder ami/prepare-artifacts.sh made (as Packer's
# shell provisioner or an Image Builder component would run it):
#
#   /tmp/bake/bake.sh
#
# It installs the Docker engine (enabled), the pinned and checksum-verified compose v2 plugin, the ECR
# credential helper and the Docker config that names it, a daemon.json with bounded logs, the agent in its own
# virtualenv from hashed wheels, the systemd units (the agent's enabled), the AWS CLI and curl for the units'
# ABANDON fallback; then removes agent state, images, containers and cloud-init's instance data, and ends
# with `bluegreen-agent preflight --bake`, whose failure fails the bake (audit F1, F2, F17, F18, F22, F25).
# Re-running it is safe: every step converges. docs/agent.md, "Baking the AMI", has the why of each step.
set -euo pipefail
art=$(cd "$(dirname "$0")" && pwd)
. "$art/versions.env"
. "$art/bake.env"
log() { echo "bake: $*" >&2; }
die() { echo "bake: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run me as root"
[ -n "${ECR_REGISTRIES:-}" ] || die "bake.env names no ECR_REGISTRIES"
[ "$(uname -m)" = "$ARCH" ] || die "artifacts are for $ARCH, this image is $(uname -m)"

VENV=/opt/bluegreen-agent/venv
PLUGIN=/usr/libexec/docker/cli-plugins/docker-compose
LIBEXEC=/usr/libexec/bluegreen-agent
booted=false
[ -d /run/systemd/system ] && booted=true  # a builder VM; false in a chroot, where nothing may start

# --- packages ----------------------------------------------------------------------------------------------
if command -v dnf >/dev/null; then
  # AL2023: docker is Moby from the AL2023 repositories (no compose plugin there: amazonlinux/amazon-linux-2023
  # #186, hence the pinned binary below); python3 stays 3.9 for the life of AL2023, so the agent gets
  # python3.12. curl-minimal and the AWS CLI v2 (awscli-2) are on the stock AMI; naming them keeps the recipe
  # right on minimal images.
  [ "$AGENT_PYTHON" = 3.12 ] || die "AL2023: prepare the artifacts with --python 3.12"
  log "dnf: docker, python3.12, amazon-ecr-credential-helper, awscli-2"
  dnf install -y -q docker "python$AGENT_PYTHON" "python$AGENT_PYTHON-pip" amazon-ecr-credential-helper awscli-2
  command -v curl >/dev/null || dnf install -y -q curl-minimal
  dnf clean all -q
elif command -v apt-get >/dev/null; then
  # Debian: docker.io is Debian's Docker engine; python3-venv because Debian splits venv/ensurepip out of
  # python3 (F22); amazon-ecr-credential-helper is packaged since bookworm (0.6.0).
  log "apt-get: docker.io, python3, python3-venv, amazon-ecr-credential-helper, awscli, curl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io python3 python3-venv amazon-ecr-credential-helper \
    awscli curl ca-certificates >/dev/null
  apt-get clean
  rm -rf /var/lib/apt/lists/*
else
  die "neither dnf (Amazon Linux 2023) nor apt-get (Debian) found"
fi
python=$(command -v "python$AGENT_PYTHON") || die "python$AGENT_PYTHON is not installed (the wheels are for it)"

# --- Docker: engine enabled, compose plugin, daemon.json, credential helper -------------------------------
systemctl enable docker.service
expected=$(eval echo "\${COMPOSE_SHA256_$ARCH:-}")
[ -n "$expected" ] || die "versions.env pins no compose binary for $ARCH"
echo "$expected  $art/docker-compose" | sha256sum --check --quiet - \
  || die "docker-compose does not match COMPOSE_SHA256_$ARCH in versions.env: not installed"
install -D -m 0755 "$art/docker-compose" "$PLUGIN"
log "compose $("$PLUGIN" version --short) at $PLUGIN"

# JSON edits with the image's Python: keep whatever else the files hold (the AMI's own settings).
merge_json() {  # FILE MODE PYTHON-EXPRESSION-ON-doc
  "$python" - "$1" "$2" "$3" <<'PY'
import json, os, sys
path, mode, expression = sys.argv[1], int(sys.argv[2], 8), sys.argv[3]
try:
    with open(path) as f:
        doc = json.load(f)
except FileNotFoundError:
    doc = {}
env = dict(os.environ)
exec(expression)
os.makedirs(os.path.dirname(path), exist_ok=True)
tmp = path + ".tmp"
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
    json.dump(doc, f, indent=2, sort_keys=True)
    f.write("\n")
os.chmod(tmp, mode)
os.replace(tmp, path)
PY
}
# Bounded container logs (F18). On AL2023, /etc/sysconfig/docker's OPTIONS must not set --log-opt too: dockerd
# refuses a directive given both as a flag and in daemon.json.
export LOG_MAX_SIZE LOG_MAX_FILE
merge_json /etc/docker/daemon.json 644 \
  'doc["log-driver"] = "json-file"; doc["log-opts"] = dict(doc.get("log-opts") or {}, **{"max-size": env["LOG_MAX_SIZE"], "max-file": env["LOG_MAX_FILE"]})'
# credHelpers, one entry per ECR registry: docker-py (the agent's pulls) and compose both read
# /root/.docker/config.json, and ask docker-credential-ecr-login for a token with the instance profile, so
# every image of the stack, sidecars included, is pulled with credentials (F5, F7). Not credsStore: that
# would send every registry, Docker Hub included, to the ECR helper, which has no credentials for them, and
# `docker login` elsewhere could not store anything.
export ECR_REGISTRIES
install -d -m 0700 /root/.docker
merge_json /root/.docker/config.json 600 \
  'doc["credHelpers"] = dict(doc.get("credHelpers") or {}, **{host: "ecr-login" for host in env["ECR_REGISTRIES"].split()})'
command -v docker-credential-ecr-login >/dev/null || die "docker-credential-ecr-login is not on PATH"
log "credHelpers ecr-login for $ECR_REGISTRIES"

# --- the agent: its own virtualenv, hashed wheels only, no index (F2) ---------------------------------------
rm -rf "$VENV"
"$python" -m venv "$VENV"
(cd "$art" && "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$art/wheels" \
   --only-binary=:all: --require-hashes -r "$art/requirements.txt")
"$VENV/bin/pip" check --disable-pip-version-check >/dev/null
ln -sfn "$VENV/bin/bluegreen-agent" /usr/local/bin/bluegreen-agent  # on operators' PATH (F25)
log "agent $("$VENV/bin/bluegreen-agent" --version) on $("$VENV/bin/python" --version)"

# --- units: every systemd/*.service, every systemd/libexec file; the agent's unit enabled -----------------
for unit in "$art"/systemd/*.service; do install -m 0644 "$unit" /etc/systemd/system/; done
if [ -d "$art/systemd/libexec" ]; then
  install -d -m 0755 "$LIBEXEC"
  for file in "$art"/systemd/libexec/*; do [ -f "$file" ] && install -m 0755 "$file" "$LIBEXEC/"; done
fi
# docs/agent.md wherever a unit's Documentation= points with a file:// URL (`systemctl help bluegreen-agent`)
for doc in $(grep -h '^Documentation=' "$art"/systemd/*.service | grep -o 'file://[^ ]*' | sed 's|^file://||' \
             | sort -u || true); do
  install -D -m 0644 "$art/docs/agent.md" "$doc"
done
$booted && systemctl daemon-reload
systemctl enable bluegreen-agent.service
systemctl enable bluegreen-agent-watch.service  # issue 16: services marked bluegreen.when: in-service

# --- nothing of this machine's own life in the image (F17) ------------------------------------------------
if $booted; then
  systemctl stop docker.socket docker.service containerd.service 2>/dev/null || true
fi
rm -rf /var/lib/docker/* /var/lib/containerd/* /opt/bluegreen
if command -v cloud-init >/dev/null; then cloud-init clean --logs; fi

log "preflight --bake"
exec /usr/local/bin/bluegreen-agent preflight --bake
