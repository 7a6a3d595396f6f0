#!/usr/bin/env bash
# Build the local llama.cpp server image (default tag chat-local/llamacpp:sid).
#
# Debian packages llama.cpp only in unstable (sid), and sid packages must never
# go onto the host (their libc is newer), so they go into an image: debootstrap
# a minimal sid root that already includes llama.cpp-tools (llama-server) and
# curl (for the healthcheck), strip apt's caches and the docs, `docker import`
# it as ROOTFS_TAG, then build .ci/images/llamacpp/Dockerfile on top of it for
# the entrypoint, environment and healthcheck the official image has.
#
# Idempotent: skips itself when TAG exists and carries the label of this recipe
# (a hash of this script and the Dockerfile); the rootfs tarball is cached under
# .ci/cache, so a rebuild after `docker image rm` needs no network.
#
# Usage: build-llamacpp-image.sh [TAG]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${CI_CACHE_DIR:-$REPO/.ci/cache}
TAG=${1:-${LLAMACPP_TEST_IMAGE:-chat-local/llamacpp:sid}}
ROOTFS_TAG=${ROOTFS_TAG:-chat-local/llamacpp-rootfs:sid}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=ca-certificates,curl,llama.cpp-tools
CONTEXT="$REPO/.ci/images/llamacpp"
LABEL=org.chat-local.recipe

log() { printf '[build-llamacpp-image] %s\n' "$*"; }

recipe=$(cat "${BASH_SOURCE[0]}" "$CONTEXT/Dockerfile" | sha256sum | cut -c1-16)
if [ "$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$TAG" 2>/dev/null)" = "$recipe" ]; then
    log "image $TAG already present (recipe $recipe)"
    exit 0
fi

mkdir -p "$CACHE_DIR"
tarball="$CACHE_DIR/rootfs-sid-llamacpp-$(echo "$PACKAGES" | sha256sum | cut -c1-12).tar"
if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d /tmp/chat-sid-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap sid with $PACKAGES into $rootfs (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" sid "$rootfs" "$MIRROR" \
        >"$CACHE_DIR/debootstrap-sid.log" 2>&1 || {
        tail -n 40 "$CACHE_DIR/debootstrap-sid.log" >&2
        exit 1
    }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
else
    log "reusing cached rootfs $(basename "$tarball")"
fi

log "importing the rootfs as $ROOTFS_TAG"
docker import "$tarball" "$ROOTFS_TAG" >/dev/null
log "building $TAG"
# The legacy builder (no buildx here) warns on stderr that it is deprecated:
# show its output only when the build fails.
if ! out=$(docker build -q --label "$LABEL=$recipe" --build-arg "ROOTFS_IMAGE=$ROOTFS_TAG" \
        -t "$TAG" "$CONTEXT" 2>&1); then
    printf '%s\n' "$out" >&2
    exit 1
fi
log "built $TAG: $(docker run --rm "$TAG" --version 2>&1 | grep -m1 '^version')"
