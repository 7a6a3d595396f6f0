#!/usr/bin/env bash
# Provision a Docker engine and the compose v2 plugin on a Debian bookworm machine.
#
# Idempotent and fast when everything is already there: each step first checks
# whether its result exists and skips itself.  Facts behind each step are in
# docs/ENGINES.md: the machine has no registry access, bookworm has no compose v2,
# so the plugin comes from Debian trixie's `docker-compose` .deb, fetched with a
# throw-away apt configuration that never adds trixie to the system sources.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${CI_CACHE_DIR:-$REPO/.ci/cache}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

log() { printf '[provision-docker] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# True when PID is a live (not zombie) process whose command name is NAME.
alive_as() {
    local pid=$1 name=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

drop_stale_pidfile() {
    local file=$1 name=$2 pid
    [ -f "$file" ] || return 0
    pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
    if ! alive_as "$pid" "$name"; then
        log "removing stale $file (pid ${pid:-none} is not a running $name)"
        as_root rm -f "$file"
    fi
}

# 1. Packages: the engine (docker.io brings containerd and runc) and debootstrap,
#    which build-base-image.sh needs.  Only touch apt when something is missing.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    log "dockerd and debootstrap already installed"
fi

# 2. The engine.  Started detached in its own session so it outlives this
#    script's process group and never holds our stdout open.
if docker info >/dev/null 2>&1; then
    log "engine already answering"
elif pgrep -x dockerd >/dev/null 2>&1; then
    log "a dockerd is running but not answering yet; waiting for it"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd does not answer; see $DOCKERD_LOG"; exit 1; }
else
    # A dockerd that ended abruptly leaves pid files behind. dockerd trusts them
    # with kill(pid, 0), so a dead containerd whose pid is a zombie or was
    # reused makes the new dockerd wait forever for it: drop pid files that do
    # not point at a live process of the expected name.
    drop_stale_pidfile /var/run/docker.pid dockerd
    drop_stale_pidfile /var/run/docker/containerd/containerd.pid containerd
    log "starting dockerd (log: $DOCKERD_LOG)"
    as_root setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        log "dockerd did not answer within 60 s; last log lines:"
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    log "engine up: $(docker version --format '{{.Server.Version}}')"
fi

# 3. The compose v2 plugin from trixie's docker-compose .deb (a static-ish Go
#    binary needing glibc >= 2.34).  The .deb is cached so re-runs need no network.
if docker compose version >/dev/null 2>&1; then
    log "compose plugin present: $(docker compose version --short)"
else
    mkdir -p "$CACHE_DIR"
    deb=$(ls "$CACHE_DIR"/docker-compose_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "fetching docker-compose .deb from Debian trixie"
        apt_tmp=$(mktemp -d)
        mkdir -p "$apt_tmp/lists/partial"
        # apt downloads as the unprivileged _apt user; let it into the temp dir.
        chmod 0755 "$apt_tmp"
        chown _apt "$apt_tmp/lists/partial" 2>/dev/null || true
        echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
            >"$apt_tmp/trixie.list"
        # Private lists AND private package caches: the system's apt state must
        # not learn about trixie.
        apt_opts=(
            -o "Dir::Etc::sourcelist=$apt_tmp/trixie.list"
            -o "Dir::Etc::sourceparts=-"
            -o "Dir::State::Lists=$apt_tmp/lists"
            -o "Dir::Cache::pkgcache=$apt_tmp/pkgcache.bin"
            -o "Dir::Cache::srcpkgcache=$apt_tmp/srcpkgcache.bin"
            -o "Acquire::Languages=none"
        )
        as_root apt-get "${apt_opts[@]}" update -qq
        (cd "$apt_tmp" && as_root apt-get "${apt_opts[@]}" download docker-compose 2>&1 \
            | grep -v "couldn't be accessed by user '_apt'" || true)
        cp "$apt_tmp"/docker-compose_*.deb "$CACHE_DIR"/
        rm -rf "$apt_tmp"
        deb=$(ls "$CACHE_DIR"/docker-compose_*.deb | head -n 1)
    fi
    log "installing compose plugin from $(basename "$deb")"
    x_tmp=$(mktemp -d)
    dpkg-deb -x "$deb" "$x_tmp"
    as_root install -D -m 0755 "$x_tmp/usr/libexec/docker/cli-plugins/docker-compose" \
        "$PLUGIN_DIR/docker-compose"
    rm -rf "$x_tmp"
    docker compose version
fi
