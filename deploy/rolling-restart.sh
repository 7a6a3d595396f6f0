#!/usr/bin/env bash
# Replace the chat-server replicas of the HA stack one at a time, so that
# nobody is refused while a new image (or configuration) rolls out:
#
#   docker compose -f docker-compose.yml -f docker-compose.ha.yml build server   # or pull
#   deploy/rolling-restart.sh                                                    # make rollout
#
# Why a script: `docker compose up -d` first replaces every changed container
# (create the new one, stop and remove the old one, service after service) and
# only then starts the new ones, so every old replica is stopped before the
# first new one starts, however the replicas are split into services and
# whatever their depends_on conditions; `deploy.update_config` is honoured by
# Swarm only, and COMPOSE_PARALLEL_LIMIT=1 does not change the order. That
# leaves HAProxy with no replica for a few seconds (docs/ARCHITECTURE.md,
# "Rolling upgrade").
#
# For each old replica: start one more replica from the current configuration
# (`up --scale N+1 --no-recreate`), wait until it is healthy and HAProxy has had
# time to see it, then stop the old one with SIGTERM: it drains (its readiness
# check answers 503, HAProxy sends new connections elsewhere, its answers in
# flight finish and are stored) and exits; then it is removed.
#
# Arguments are compose's (`-f ...`, `-p ...`, `--env-file ...`): give it the
# same files as `up` (with the GPU or llama.cpp overlay too, or the new replicas
# lack their settings). Without arguments: COMPOSE_FILE (environment or .env)
# when set, as for `docker compose` itself; otherwise the base and HA files.
# Environment: SERVICE (server), HEALTH_TIMEOUT (seconds a new replica may take
# to become healthy, 900), SETTLE (seconds HAProxy gets to see it, 5),
# STOP_TIMEOUT (seconds before an old replica is killed, 60: more than
# CHAT_SHUTDOWN_GRACE).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$#" -eq 0 ] && [ -z "${COMPOSE_FILE:-}" ] && ! grep -qs '^COMPOSE_FILE=' .env; then
    set -- -f docker-compose.yml -f docker-compose.ha.yml
fi
compose=(docker compose "$@")
service=${SERVICE:-server}
health_timeout=${HEALTH_TIMEOUT:-900}
settle=${SETTLE:-5}
stop_timeout=${STOP_TIMEOUT:-60}

say() { printf 'rolling-restart: %s\n' "$*" >&2; }

replicas() { "${compose[@]}" ps -q "$service" | sort; }

health_of() {
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"
}

mapfile -t old < <(replicas)
if [ "${#old[@]}" -eq 0 ]; then
    say "no running $service replicas: start the stack with docker compose up -d"
    exit 1
fi
say "replacing ${#old[@]} $service replicas one at a time"

for id in "${old[@]}"; do
    mapfile -t before < <(replicas)
    "${compose[@]}" up -d --no-deps --no-recreate --scale "$service=$(( ${#before[@]} + 1 ))" "$service"
    mapfile -t after < <(replicas)
    new=$(comm -13 <(printf '%s\n' "${before[@]}") <(printf '%s\n' "${after[@]}") | head -n 1)
    if [ -z "$new" ]; then
        say "compose started no new replica; stopping (nothing was removed)"
        exit 1
    fi
    name=$(docker inspect --format '{{.Name}}' "$new"); name=${name#/}
    say "started $name; waiting until it is healthy"
    deadline=$(( SECONDS + health_timeout ))
    until [ "$(health_of "$new")" = healthy ]; do
        state=$(health_of "$new")
        if [ "$state" = exited ] || [ "$state" = dead ] || [ "$SECONDS" -ge "$deadline" ]; then
            say "$name is $state; stopping (the old replicas keep serving)"
            exit 1
        fi
        sleep 1
    done
    sleep "$settle"
    old_name=$(docker inspect --format '{{.Name}}' "$id"); old_name=${old_name#/}
    say "draining $old_name (SIGTERM; answers in flight finish)"
    docker stop --time "$stop_timeout" "$id" >/dev/null
    docker rm "$id" >/dev/null
done
say "done: $("${compose[@]}" ps -q "$service" | wc -l) replicas on the new configuration"
