#!/bin/sh
# Entrypoint of the local HAProxy image: `-x ...` means `haproxy -x ...`, and
# haproxy itself runs in master-worker mode (-W, reloads with SIGUSR2) in the
# foreground (-db), as in the official image.
set -e

case "$1" in
    -*) set -- haproxy "$@" ;;
esac

if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi

exec "$@"
