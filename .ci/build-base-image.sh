#!/usr/bin/env bash
# Build the local Python base image the Dockerfiles start FROM (no registry here).
#
# debootstrap a minimal Debian bookworm with Python 3.11, venv and pip, copy in
# this machine's CA bundle (package downloads go through an intercepting proxy
# whose CA only the host bundle holds, see docs/ENGINES.md), and `docker import` it.
# The rootfs tarball is cached under .ci/cache (gitignored), keyed by the CA
# bundle's hash, so a re-run on the same machine needs neither network nor
# debootstrap.  Skips everything when the image tag already exists.
#
# Usage: build-base-image.sh [TAG]   (default: $PYTHON_IMAGE or chat-local/python:3.11-bookworm)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${CI_CACHE_DIR:-$REPO/.ci/cache}
TAG=${1:-${PYTHON_IMAGE:-chat-local/python:3.11-bookworm}}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=/etc/ssl/certs/ca-certificates.crt

log() { printf '[build-base-image] %s\n' "$*"; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already present"
    exit 0
fi

mkdir -p "$CACHE_DIR"
ca_hash=$(sha256sum "$HOST_CA" | cut -c1-12)
tarball="$CACHE_DIR/rootfs-$SUITE-python3-$ca_hash.tar"

if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d /tmp/chat-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $SUITE into $rootfs (about a minute)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        tail -n 40 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    # The host bundle = Debian's CAs + the proxy CA.  Installed over Debian's own
    # bundle so every TLS client in the image (pip, python, apt) trusts it.
    cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # Smaller image: downloaded .debs and apt lists are not needed at runtime.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
else
    log "reusing cached rootfs $(basename "$tarball")"
fi

log "importing $tarball as $TAG"
docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change 'CMD ["/usr/bin/python3"]' \
    "$tarball" "$TAG" >/dev/null
log "built $TAG: $(docker run --rm "$TAG" python3 --version)"
