#!/usr/bin/env bash
# `make demo`: a whole blue/green fleet on this machine (bluegreen-localcloud up), then, as an operator would:
# canary 2.0, deploy 2.0, rollback, deploy 2.0, finalize, and a deploy of 3.0 (which never turns healthy)
# that aborts on its own. After each step: the `bluegreen status` table and the versions the load balancer
# answered over 20 requests. Exits 0 when every step did what it should; stops everything it started unless
# --keep (or `make demo KEEP=1`) is given, in which case `bluegreen-localcloud down` stops it later.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=${KEEP:-0}
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    *) echo "demo: unknown argument $arg (usage: scripts/demo.sh [--keep])" >&2; exit 2 ;;
  esac
done

VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
STATE=.localcloud
POLL=(--poll-interval 1)   # the fleet checks health every 1 s; the deployer's default 5 s poll would dominate

cleanup() {
  if [ "$KEEP" = 1 ]; then
    echo "demo: the fleet keeps running (--keep): '. $STATE/env' to use it, 'bluegreen-localcloud down' to stop it"
  else
    bluegreen-localcloud down --state "$STATE"
  fi
}
trap cleanup EXIT

banner() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

failed_total=0
versions() {
  # 20 requests through the load balancer, one connection each: which versions answered.
  local answers failed=0
  answers=$(for _ in $(seq 20); do curl -sf --max-time 2 "$BLUEGREEN_LB_URL/" || echo FAILED; done)
  failed=$(grep -c FAILED <<<"$answers" || true)
  failed_total=$((failed_total + failed))
  echo "load balancer $BLUEGREEN_LB_URL answered over 20 requests:"
  sort <<<"$answers" | uniq -c | sed 's/^/  /'
  LAST_VERSIONS=$(grep -v FAILED <<<"$answers" | sort -u | tr '\n' ' ' | sed 's/ $//')
}

expect_versions() {
  if [ "$LAST_VERSIONS" != "$1" ]; then
    echo "demo: expected the load balancer to answer '$1', got '$LAST_VERSIONS'" >&2
    exit 1
  fi
}

step() {
  banner "$1"
  shift
  echo "\$ $*"
  local started=$SECONDS
  "$@"
  echo "($((SECONDS - started)) s)"
}

if bluegreen-localcloud status --state "$STATE" >/dev/null; then
  # A fleet left by `make demo KEEP=1` has been deployed to already: start the walk-through from scratch.
  echo "demo: a local fleet is already running in $STATE; stopping it to start from scratch"
  bluegreen-localcloud down --state "$STATE"
fi

banner "bluegreen-localcloud up: emulated AWS, HAProxy, the demo service at 1.0 on 3 real instances"
bluegreen-localcloud up --state "$STATE"
set -a
# shellcheck disable=SC1090,SC1091
. "$STATE/env"
set +a
bluegreen status demo
versions; expect_versions "1.0"

step "canary 2.0: one instance of the idle group serves beside the live fleet" \
  bluegreen canary demo 2.0 "${POLL[@]}"
bluegreen status demo
versions; expect_versions "1.0 2.0"

step "deploy 2.0: green takes blue's capacity, blue moves to Standby (still running)" \
  bluegreen deploy demo 2.0 "${POLL[@]}"
bluegreen status demo
versions; expect_versions "2.0"

step "rollback: blue's Standby instances go back into service, then green is emptied" \
  bluegreen rollback demo "${POLL[@]}"
bluegreen status demo
versions; expect_versions "1.0"

# Straight after the rollback: green's instances are still draining (15 s of AWS time, 3 s here), and the
# deploy waits for them to terminate before it launches new ones.
step "deploy 2.0 again, while the emptied green group still scales in" bluegreen deploy demo 2.0 "${POLL[@]}"
bluegreen status demo
versions; expect_versions "2.0"

step "finalize: detach, then terminate, blue's Standby instances; green is live" \
  bluegreen finalize demo "${POLL[@]}"
bluegreen status demo
versions; expect_versions "2.0"

banner "deploy 3.0, a version whose health check never passes: the deploy must abort on its own"
echo "\$ bluegreen deploy demo 3.0 --timeout 40 ${POLL[*]}"
started=$SECONDS
set +e
bluegreen deploy demo 3.0 --timeout 40 "${POLL[@]}"
code=$?
set -e
echo "(exit $code after $((SECONDS - started)) s)"
if [ "$code" != 1 ]; then
  echo "demo: expected the 3.0 deploy to abort with exit 1, got $code" >&2
  exit 1
fi
bluegreen status demo
versions; expect_versions "2.0"

banner "done: $failed_total of $((20 * 7)) sampled requests failed"
if [ "$failed_total" != 0 ]; then exit 1; fi
