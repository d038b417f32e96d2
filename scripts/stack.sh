#!/usr/bin/env bash
# Brings up everything the manager and the tests need on this machine, idempotently:
# Docker engine, Redis, the Temporal dev server, the local base image, node_modules and the build.
# Each step checks first and does nothing when its part is already there, so a second run is fast.
#
# Use an existing service instead of a local one by setting its address:
#   TEMPORAL_ADDRESS=host:7233   skip building and starting the Temporal dev server
#   REDIS_URL=redis://host:6379  skip installing and starting Redis
#   DOCKER_HOST=tcp://host:2375  skip installing and starting dockerd
# `stack.sh redis` brings up only the local Redis (WM_REDIS_PORT, WM_DATA_DIR and
# WM_REDIS_PASSWORD_FILE choose another one: the tests start theirs so).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/defaults.sh # the local Redis's password (REDIS_URL, REDISCLI_AUTH)

TEMPORAL_VERSION="v1.5.1"
TOOLS="$ROOT/.tools"
DATA="${WM_DATA_DIR:-$ROOT/.data}"
TEMPORAL_BIN="$TOOLS/temporal-$TEMPORAL_VERSION/temporal"
# Also kept per user, outside the checkout: every fresh clone (CI makes one per run) reuses it.
TEMPORAL_USER_CACHE="${WM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/worker-manager}/temporal-$TEMPORAL_VERSION/temporal"
BASE_IMAGE="debian:bookworm-slim"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$TOOLS" "$DATA"

log() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[stack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for "what" timeout_seconds command...: polls a readiness check instead of sleeping blindly.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
  log "$what is ready"
}

APT_UPDATED=0
apt_install() {
  local missing=()
  # dpkg -s also succeeds for removed packages whose config files remain: check the state.
  for pkg in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "need the Debian packages ${missing[*]} but apt-get is not available"
  log "installing ${missing[*]} (apt)"
  if ((APT_UPDATED == 0)); then apt-get update -qq >"$DATA/apt.log" 2>&1 || die "apt-get update failed, see $DATA/apt.log"; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$DATA/apt.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed, see $DATA/apt.log"
}

# ---------------------------------------------------------------- Docker engine
ensure_docker() {
  if [[ -n "${DOCKER_HOST:-}" ]]; then
    docker version >/dev/null 2>&1 || die "DOCKER_HOST=$DOCKER_HOST does not answer"
    log "using the Docker engine at $DOCKER_HOST"; return
  fi
  if docker version >/dev/null 2>&1; then log "Docker engine already running"; return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  log "starting dockerd (log: $DATA/dockerd.log)"
  nohup dockerd >"$DATA/dockerd.log" 2>&1 &
  wait_for "Docker engine" 60 docker version || die "dockerd did not come up, see $DATA/dockerd.log"
}

# ---------------------------------------------------------------- base image
ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "$BASE_IMAGE present"; return; fi
  if timeout 60 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then log "pulled $BASE_IMAGE"; return; fi
  apt_install debootstrap
  log "making $BASE_IMAGE locally with debootstrap (no registry reachable; about 30 s)"
  local rootfs="$DATA/rootfs-bookworm"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$DATA/debootstrap.log" 2>&1 \
    || die "debootstrap failed, see $DATA/debootstrap.log"
  # Same apt behaviour as the official slim image: no docs, no recommends, clean caches.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "imported $BASE_IMAGE"
}

# ---------------------------------------------------------------- Redis
# The host's address on the default bridge: what host.docker.internal resolves to inside
# containers started with --add-host host.docker.internal:host-gateway. As src/host/bridgeAddress.ts
# reads it: the IPv4 gateway when Docker recorded one, else the IPv4 subnet's first host address
# (a fresh engine records no gateway for the bridge it created itself; its IPAM gave the bridge
# that address). Read from the engine, not from `ip addr docker0`: the bridge may be named otherwise.
bridge_gateway() {
  local gw subnet addr prefix a b c d n
  while read -r gw subnet; do
    if [[ "$gw" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then printf '%s' "$gw"; return; fi
    [[ -z "${addr:-}" && "$subnet" =~ ^([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)/([0-9]+)$ ]] || continue
    addr="${BASH_REMATCH[1]}"; prefix="${BASH_REMATCH[2]}"
  done < <(docker network inspect bridge -f '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}}{{else}}-{{end}} {{.Subnet}}{{"\n"}}{{end}}' 2>/dev/null || true)
  [[ -n "${addr:-}" ]] && (( prefix <= 30 )) || return 0
  IFS=. read -r a b c d <<<"$addr"
  n=$(( ((a << 24 | b << 16 | c << 8 | d) & ~((1 << (32 - prefix)) - 1) & 0xffffffff) + 1 ))
  printf '%d.%d.%d.%d' $(( n >> 24 & 255 )) $(( n >> 16 & 255 )) $(( n >> 8 & 255 )) $(( n & 255 ))
}

REDIS_PORT="${WM_REDIS_PORT:-6379}"

# What the local Redis answers to PING on an address: with its password (REDISCLI_AUTH, from
# defaults.sh) or, with `anonymous`, as a client without credentials.
redis_ping() {
  if [[ "${2:-}" == anonymous ]]; then env -u REDISCLI_AUTH redis-cli -h "$1" -p "$REDIS_PORT" ping 2>&1 || true
  else redis-cli --no-auth-warning -h "$1" -p "$REDIS_PORT" ping 2>&1 || true; fi
}

# Stops the local Redis (its append-only file is flushed: no acknowledged write is lost).
stop_redis() {
  redis-cli --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
  wait_for "old Redis stop" 20 bash -c "! redis-cli -h 127.0.0.1 -p $REDIS_PORT ping" || die "the Redis on port $REDIS_PORT did not stop"
}

ensure_redis() {
  # Local: the URL defaults.sh made (REDIS_URL was unset). Any other is a Redis of your own.
  if [[ -z "${REDISCLI_AUTH:-}" || "$REDIS_URL" != "redis://:$REDISCLI_AUTH@127.0.0.1:$REDIS_PORT" ]]; then
    log "using the Redis at ${REDIS_URL/\/\/*@/\/\/***@} (not starting a local one)"; return
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  local gw; gw="$(bridge_gateway)"
  [[ -n "$gw" ]] || die "could not read the Docker bridge gateway address"
  local open; open="$(redis_ping 127.0.0.1 anonymous)"
  if [[ "$open" == PONG ]]; then
    # Started before the local stack had a password: anyone (any worker) gets in as `default`.
    log "Redis on port $REDIS_PORT lets clients in without a password: restarting it with the one in $WM_REDIS_PASSWORD_FILE"
    stop_redis
  elif [[ "$open" == *NOAUTH* ]]; then
    [[ "$(redis_ping 127.0.0.1)" == PONG ]] || die "the Redis on 127.0.0.1:$REDIS_PORT refuses the password in $WM_REDIS_PASSWORD_FILE.
  Put its password in that file (or set WM_REDIS_PASSWORD_FILE), or set REDIS_URL to use it as a Redis of your own"
    # Already up: make sure worker containers can reach it through the gateway too.
    if [[ "$(redis_ping "$gw")" == PONG ]]; then log "Redis already running"; return; fi
    log "Redis is running but not on the Docker gateway $gw: restarting it"
    stop_redis
  fi
  log "starting Redis on 127.0.0.1 and $gw:$REDIS_PORT (log: $DATA/redis.log)"
  # The default user's password comes on stdin, never on a command line others can read. Protected
  # mode stays on: should the password ever be missing, only loopback clients get in. Keyspace
  # notifications on streams let the manager notice input for paused workers. The append-only file
  # keeps commands and worker input across a Redis restart (a crash of the process loses nothing
  # acknowledged; a crash of the machine at most the last second).
  printf 'requirepass %s\n' "$REDISCLI_AUTH" | redis-server - --daemonize yes --port "$REDIS_PORT" --bind "127.0.0.1 $gw" --protected-mode yes \
    --dir "$DATA" --dbfilename redis.rdb --logfile "$DATA/redis.log" \
    --notify-keyspace-events Kt --save "60 1000" --appendonly yes >/dev/null
  wait_for "Redis" 20 bash -c "redis-cli --no-auth-warning -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG" || die "Redis did not start, see $DATA/redis.log"
}

# ---------------------------------------------------------------- Temporal
ensure_temporal_binary() {
  if [[ -x "$TEMPORAL_BIN" ]]; then return; fi
  if [[ -x "$TEMPORAL_USER_CACHE" ]]; then
    mkdir -p "$(dirname "$TEMPORAL_BIN")" && cp "$TEMPORAL_USER_CACHE" "$TEMPORAL_BIN"
    log "Temporal CLI $TEMPORAL_VERSION taken from $TEMPORAL_USER_CACHE"
    return
  fi
  command -v go >/dev/null || apt_install golang-go
  log "building the Temporal CLI $TEMPORAL_VERSION from Go modules (first time only, a few minutes; log: $DATA/temporal-build.log)"
  mkdir -p "$(dirname "$TEMPORAL_BIN")"
  if ! GOBIN="$(dirname "$TEMPORAL_BIN")" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_VERSION" >"$DATA/temporal-build.log" 2>&1; then
    tail -n 20 "$DATA/temporal-build.log" >&2
    die "building the Temporal CLI failed (full log: $DATA/temporal-build.log).
  To use an existing Temporal server instead, set TEMPORAL_ADDRESS=host:port (and TEMPORAL_NAMESPACE)
  and register the Keyword search attributes WorkerId, AgentType, WorkerStatus and DockerHost on it:
    temporal operator search-attribute create --name WorkerStatus --type Keyword ..."
  fi
  mkdir -p "$(dirname "$TEMPORAL_USER_CACHE")" && cp "$TEMPORAL_BIN" "$TEMPORAL_USER_CACHE" || true
}

temporal_ready() {
  "$TEMPORAL_BIN" operator cluster health --address 127.0.0.1:7233 2>/dev/null | grep -qi serving
}

ensure_temporal() {
  if [[ -n "${TEMPORAL_ADDRESS:-}" && "${TEMPORAL_ADDRESS}" != "127.0.0.1:7233" && "${TEMPORAL_ADDRESS}" != "localhost:7233" ]]; then
    log "using the Temporal server at $TEMPORAL_ADDRESS (not starting the dev server)"; return
  fi
  ensure_temporal_binary
  if temporal_ready; then log "Temporal dev server already running (UI http://localhost:8233)"; return; fi
  log "starting the Temporal dev server (SQLite: $DATA/temporal.db, log: $DATA/temporal.log)"
  # Dynamic config: suggest continue-as-new after 200 events (production servers: 4K+), so the
  # long-lived capacity semaphore continues as new during tests and development, not only in prod.
  nohup "$TEMPORAL_BIN" server start-dev \
    --dynamic-config-value limit.historyCount.suggestContinueAsNew=200 \
    --ip 127.0.0.1 --port 7233 --ui-port 8233 \
    --db-filename "$DATA/temporal.db" \
    --namespace default \
    --search-attribute WorkerId=Keyword \
    --search-attribute AgentType=Keyword \
    --search-attribute WorkerStatus=Keyword \
    --search-attribute DockerHost=Keyword \
    --log-level warn >"$DATA/temporal.log" 2>&1 &
  wait_for "Temporal dev server" 90 temporal_ready || die "the Temporal dev server did not come up, see $DATA/temporal.log"
}

# The lifecycle workflows' Keyword search attributes, on a dev server that already runs (started
# by an earlier version, before one of them existed). Registering one that exists is skipped.
SEARCH_ATTRIBUTES=(WorkerId AgentType WorkerStatus DockerHost)
ensure_search_attributes() {
  if [[ -n "${TEMPORAL_ADDRESS:-}" && "${TEMPORAL_ADDRESS}" != "127.0.0.1:7233" && "${TEMPORAL_ADDRESS}" != "localhost:7233" ]]; then return; fi
  local have name
  have="$("$TEMPORAL_BIN" operator search-attribute list --address 127.0.0.1:7233 --namespace default 2>/dev/null | awk '{print $1}')"
  for name in "${SEARCH_ATTRIBUTES[@]}"; do
    if grep -qx "$name" <<<"$have"; then continue; fi
    log "registering the search attribute $name on the running Temporal dev server"
    "$TEMPORAL_BIN" operator search-attribute create --address 127.0.0.1:7233 --namespace default --name "$name" --type Keyword >/dev/null \
      || die "could not register the search attribute $name"
  done
}

# ---------------------------------------------------------------- Node project
ensure_node_modules() {
  # A link to another checkout's node_modules (git worktrees share one) is that checkout's to
  # install: npm ci here would empty it through the link.
  if [[ -L node_modules ]]; then return; fi
  # Re-install only when the lockfile changed since the last install.
  local stamp="node_modules/.package-lock.json"
  if [[ -d node_modules && -f "$stamp" && ! package-lock.json -nt "$stamp" ]]; then return; fi
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >"$DATA/npm-ci.log" 2>&1 || { tail -n 30 "$DATA/npm-ci.log" >&2; die "npm ci failed, see $DATA/npm-ci.log"; }
}

ensure_build() {
  local stamp="$DATA/build.stamp"
  if [[ -f "$stamp" && -f dist/src/manager.js && -f dist/wrapper/wrapper.js && -f dist/workflows.bundle.js ]] \
    && [[ -z "$(find src workflows activities scripts test bench docker tsconfig.json package-lock.json -newer "$stamp" -print -quit)" ]]; then
    return
  fi
  log "building TypeScript and the in-container wrapper"
  npm run --silent build >"$DATA/build.log" 2>&1 || { cat "$DATA/build.log" >&2; die "build failed"; }
  touch "$stamp"
}

main() {
  local started=$SECONDS
  if [[ "${1:-}" == redis ]]; then ensure_redis; return; fi
  # --test: also what the test suite uses (docker-compose to validate temporal-dev.yml; openssl
  # makes the throwaway certificates of test/integration/tls.test.ts; Debian's chromium, driven by
  # playwright-core, for the Temporal UI browser test).
  if [[ "${1:-}" == "--test" ]]; then
    command -v docker-compose >/dev/null || apt_install docker-compose
    command -v openssl >/dev/null || apt_install openssl
    apt_install chromium
  fi
  ensure_docker
  ensure_redis
  ensure_temporal
  ensure_search_attributes
  ensure_base_image
  ensure_node_modules
  ensure_build
  log "stack ready in $((SECONDS - started)) s: Temporal 127.0.0.1:7233 (UI http://localhost:8233), Redis 127.0.0.1:6379"
}

main "$@"
