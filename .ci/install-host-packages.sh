#!/usr/bin/env bash
# Install the engines the tests run on the host, from Debian's packages:
#
#   postgresql   server binaries (initdb, pg_ctl, postgres) for the throwaway
#                clusters tests/fixtures/postgres.py starts
#   prometheus   for promtool (checks of metrics, scrape config and alert rules)
#
# Only what is missing is installed, with --no-install-recommends.  The packages
# would start their services (a PostgreSQL cluster on 5432, Prometheus on
# 9090): a policy-rc.d that refuses every start is in place while apt runs, so
# nothing is left listening; the tests start what they need themselves.
set -euo pipefail

log() { printf '[install-host-packages] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
    log "present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')and $(promtool --version 2>&1 | head -n 1)"
    exit 0
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# installed by .ci/install-host-packages.sh while apt runs\nexit 101\n' \
        | as_root tee "$POLICY" >/dev/null
    as_root chmod 0755 "$POLICY"
    trap 'as_root rm -f "$POLICY"' EXIT
fi

install() {
    # force-unsafe-io: dpkg skips its fsync calls (a CI machine, not a server).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Options::=--force-unsafe-io --no-install-recommends "${need[@]}" >/dev/null
}
log "installing ${need[*]}"
# Skip `apt-get update` when the package lists are there; refresh them only if
# the install fails (stale lists name files the mirror no longer has).
if apt-cache show "${need[@]}" >/dev/null 2>&1 && install; then
    :
else
    as_root apt-get update -qq
    install
fi
log "installed: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')and $(promtool --version 2>&1 | head -n 1)"
