#!/bin/sh
# docker-compose.yml, profile "mariadb": run once by the mariadb image's entry
# point when the data volume is new (/docker-entrypoint-initdb.d), as
# docker/postgres/init-demo.sh is for PostgreSQL: user proxyd with the password
# of the mysql_proxyd_password secret, sql/mysql.sql, then
# sql/mysql-demo-cluster.sql with the backends' addresses.
# tests/test_compose.py runs this script against a private MariaDB (secrets
# and sql/ elsewhere: PROXYD_DEMO_SECRETS_DIR, PROXYD_DEMO_SQL_DIR; the
# server's socket: PROXYD_DEMO_SOCKET).
set -eu
secrets="${PROXYD_DEMO_SECRETS_DIR:-/run/secrets}"
sql_dir="${PROXYD_DEMO_SQL_DIR:-/sql}"
password="$(cat "$secrets/mysql_proxyd_password")"
# the password travels on stdin, never on a command line; quotes and
# backslashes are escaped for a MariaDB string literal
quoted="$(printf '%s' "$password" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
MYSQL_PWD="$(cat "$secrets/mariadb_root_password")"
export MYSQL_PWD
sql() { mariadb --protocol=socket ${PROXYD_DEMO_SOCKET:+"--socket=$PROXYD_DEMO_SOCKET"} -uroot "$@"; }
printf "CREATE USER 'proxyd'@'%%' IDENTIFIED BY '%s';\n" "$quoted" | sql mysql
sql mail <"$sql_dir/mysql.sql"
{
    printf "SET @backend_a = '%s', @backend_b = '%s';\n" "$DEMO_BACKEND_A" "$DEMO_BACKEND_B"
    cat "$sql_dir/mysql-demo-cluster.sql"
} | sql mail
echo "GRANT SELECT, UPDATE ON mail.cluster_accounts TO 'proxyd'@'%';" | sql mysql
