#!/usr/bin/env bash
# A Debian bookworm root folder baked by the project's own recipe: `debootstrap --variant=minbase` (a stand-in
# for a stock Debian cloud image: systemd and cloud-init, nothing else), then ami/prepare-artifacts.sh and ami/bake.sh run in it
# with chroot, ending with `bluegreen-agent preflight --bake`. The tests check it (tests/agent/test_bake.py);
# a booted check (systemd-nspawn) can reuse it.
#
#   scripts/bake-debian-root.sh [OUT]
#
# Prints the baked root's path: a cache entry, .cache/bake/root-<key>, that callers must not change (copy it,
# or mount an overlay on it). With OUT, the root is also copied to OUT. Two cache levels, each keyed by a hash
# of what built it: the debootstrap base (suite, mirror, packages) and the baked root (the base plus ami/,
# the agent's sources, systemd/, setup.cfg and this script). A rerun with nothing changed takes a second; a
# change in the agent re-bakes on the cached base. Needs root and debootstrap (scripts/host-setup.sh).
# ECR_REGISTRY (default a made-up account's registry) is the bake's --ecr-registry.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${1:-}
suite=bookworm
# debootstrap's own set (minbase, plus systemd), then what a stock Debian cloud image adds and the recipe
# relies on, installed with apt in the chroot (debootstrap --include cannot configure cloud-init's
# dependencies): cloud-init, since the agent's unit is ordered after it and the recipe runs `cloud-init clean`;
# locales with en_US.UTF-8 generated and set, as on Debian's cloud images: cloud-init's locale module sets
# that locale at every first boot and fails without it (the booted machines of localcloud/machines.py);
# iproute2, which the cloud images have too.
debootstrap_packages=systemd,systemd-sysv
cloud_packages="cloud-init locales iproute2"
ecr_registry=${ECR_REGISTRY:-123456789012.dkr.ecr.eu-west-1.amazonaws.com}
[ "$(id -u)" = 0 ] || { echo "bake-debian-root: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "bake-debian-root: debootstrap missing (scripts/host-setup.sh)" >&2; exit 1; }

# The host's Debian mirror (deb822 sources first, then sources.list), else Debian's own.
host_mirror() {
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } | grep -v security | grep '/debian/\?$' | head -1 || true
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

cache=$repo/.cache/bake
mkdir -p "$cache"
base_key=$(printf '%s\n' "$suite" "$mirror" "$debootstrap_packages" "$cloud_packages" minbase-3 | sha256sum | cut -c1-16)
bake_key=$( { echo "$base_key" "$ecr_registry"; cat "$0" setup.cfg; \
              find ami agent systemd docs/agent.md -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
                | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
base=$cache/base-$base_key
root=$cache/root-$bake_key
exec 9>"$cache/.lock"
flock 9  # one builder at a time per clone

# Run a command in a root, as the builder would on a booted machine but with no service started: policy-rc.d
# says no (docker.io's postinst would start dockerd), /proc, /sys and /dev from the host, the host's DNS.
in_chroot() {  # ROOT COMMAND...
  local dir=$1; shift
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  mount -t proc proc "$dir/proc"
  mount --rbind /sys "$dir/sys"
  mount --bind /dev "$dir/dev"
  mount --bind /dev/pts "$dir/dev/pts"
  trap "for m in dev/pts dev proc sys; do umount -l '$dir'/\$m 2>/dev/null || true; done" EXIT
  local rc=0
  chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
  for m in dev/pts dev proc sys; do umount -l "$dir/$m"; done
  trap - EXIT
  rm -f "$dir/usr/sbin/policy-rc.d"
  return $rc
}

if [ ! -d "$root" ]; then
  start=$SECONDS
  if [ ! -d "$base" ]; then
    rm -rf "$cache"/base-* "$base.tmp"
    echo "bake-debian-root: debootstrap $suite from $mirror" >&2
    debootstrap --variant=minbase --include="$debootstrap_packages" "$suite" "$base.tmp" "$mirror" \
      >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    in_chroot "$base.tmp" /bin/sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      $cloud_packages >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/* \
      && echo 'en_US.UTF-8 UTF-8' > /etc/locale.gen && locale-gen >/dev/null && update-locale LANG=en_US.UTF-8" >&2
    mv "$base.tmp" "$base"
    echo "bake-debian-root: base in $((SECONDS - start)) s" >&2
  fi
  # An older root stays while a machine's overlay still names it as its lower layer (localcloud/machines.py):
  # deleting files under a mounted overlay is undefined behaviour. The next bake removes it.
  for old in "$cache"/root-*; do
    [ -e "$old" ] || continue
    if grep -qF "lowerdir=$old" /proc/mounts || grep -qF ":$old," /proc/mounts; then
      echo "bake-debian-root: keeping $old: a running machine's overlay uses it" >&2
    else
      rm -rf "$old"
    fi
  done
  cp -a "$base" "$root.tmp"
  ami/prepare-artifacts.sh "$root.tmp/tmp/bake" --ecr-registry "$ecr_registry" --python 3.11 >/dev/null
  in_chroot "$root.tmp" /bin/bash /tmp/bake/bake.sh >&2  # preflight's lines too: stdout is for the path
  rm -rf "$root.tmp/tmp/bake"
  mv "$root.tmp" "$root"
  echo "bake-debian-root: baked in $((SECONDS - start)) s" >&2
fi
if [ -n "$out" ]; then rm -rf "$out"; cp -a "$root" "$out"; fi
echo "$root"
