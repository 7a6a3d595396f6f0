#!/usr/bin/env bash
# Build one of the local service images in .ci/images/ FROM the local base image.
#
# These images stand in for official ones (postgres, haproxy) that machines
# without registry access cannot pull; see the Dockerfile of each.  Skips itself
# when TAG exists and carries the label of this recipe: a hash of the build
# context and of the base image's id, so a changed Dockerfile or a rebuilt base
# image means a rebuild, and nothing else does.
#
# Usage: build-local-image.sh NAME TAG     (NAME: a directory in .ci/images)
#        BASE_IMAGE=... overrides the base (default: $PYTHON_IMAGE, the local
#        Python base image that .ci/build-base-image.sh makes)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${1:?usage: build-local-image.sh NAME TAG}
TAG=${2:?usage: build-local-image.sh NAME TAG}
CONTEXT="$REPO/.ci/images/$NAME"
BASE_IMAGE=${BASE_IMAGE:-${PYTHON_IMAGE:-chat-local/python:3.11-bookworm}}
LABEL=org.chat-local.recipe

log() { printf '[build-local-image] %s\n' "$*"; }

[ -f "$CONTEXT/Dockerfile" ] || { log "no Dockerfile in $CONTEXT"; exit 1; }
base_id=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) || {
    log "base image $BASE_IMAGE is missing (.ci/build-base-image.sh makes it)"
    exit 1
}
recipe=$( (cd "$CONTEXT" && find . -type f -print0 | sort -z | xargs -0 sha256sum; \
           echo "$base_id") | sha256sum | cut -c1-16)
if [ "$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$TAG" 2>/dev/null)" = "$recipe" ]; then
    log "image $TAG already present (recipe $recipe)"
    exit 0
fi

log "building $TAG from $BASE_IMAGE"
# The legacy builder (no buildx here) warns on stderr that it is deprecated:
# show its output only when the build fails.
if ! out=$(docker build -q --label "$LABEL=$recipe" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -t "$TAG" "$CONTEXT" 2>&1); then
    printf '%s\n' "$out" >&2
    exit 1
fi
log "built $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))"
