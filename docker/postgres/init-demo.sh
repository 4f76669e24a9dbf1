#!/bin/sh
# docker-compose.yml: run once by the postgres image's entry point when the
# data volume is new (/docker-entrypoint-initdb.d).  The same steps as
# scripts/demo.sh's start_postgres for the local twin: role proxyd with the
# password of the pgsql_proxyd_password secret, sql/pgsql.sql, then
# sql/pgsql-demo-cluster.sql with the backends' addresses.
set -eu
password="$(cat /run/secrets/pgsql_proxyd_password)"
# the password travels on stdin, never on a command line; '' doubles quotes
printf "CREATE ROLE proxyd LOGIN PASSWORD '%s';\n" "$(printf '%s' "$password" | sed "s/'/''/g")" \
    | psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres -f -
psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d mail -f /sql/pgsql.sql
psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d mail \
    -v "backend_a=$DEMO_BACKEND_A" -v "backend_b=$DEMO_BACKEND_B" -f /sql/pgsql-demo-cluster.sql
echo "GRANT SELECT, UPDATE ON cluster_accounts TO proxyd;" \
    | psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d mail -f -
