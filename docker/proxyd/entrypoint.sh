#!/bin/sh
# proxyd image entry point: PGPASSWORD from the file PGPASSWORD_FILE names (a
# compose secret), then the command.  The sql passdb's connect line has no
# password=, so the driver takes PGPASSWORD from the environment.  Also for
# one-off commands: docker compose exec proxyd-a proxyd-entrypoint proxyctl ...
set -eu
if [ -z "${PGPASSWORD:-}" ] && [ -n "${PGPASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
    export PGPASSWORD
fi
exec "$@"
