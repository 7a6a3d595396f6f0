#!/bin/sh
# Grafana of the `monitoring` profile: never start with a known admin password.
#
# With GF_SECURITY_ADMIN_PASSWORD set (GRAFANA_ADMIN_PASSWORD in .env) Grafana uses
# it. Otherwise a random one is generated on the first start, kept in the data
# volume (readable by Grafana's user only) and used from then on; read it with
#   docker compose exec grafana cat /var/lib/grafana/admin-password
# Either way it applies when Grafana creates its admin user (the first start);
# change it later in Grafana itself.
set -eu

data="${GF_PATHS_DATA:-/var/lib/grafana}"
file="$data/admin-password"

if [ -z "${GF_SECURITY_ADMIN_PASSWORD:-}" ]; then
    if [ ! -s "$file" ]; then
        umask 077
        password=$(head -c 24 /dev/urandom | base64 | tr -d '\n+/=')
        printf '%s\n' "$password" > "$file.tmp"
        mv "$file.tmp" "$file"
        echo "grafana: generated an admin password for user admin; read it with:" \
             "docker compose exec grafana cat $file" >&2
    fi
    GF_SECURITY_ADMIN_PASSWORD=$(cat "$file")
    export GF_SECURITY_ADMIN_PASSWORD
fi

exec "${GRAFANA_RUN:-/run.sh}" "$@"
