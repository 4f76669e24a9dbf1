#!/bin/sh
# proxyd image entry point: PGPASSWORD from the file PGPASSWORD_FILE names (a
# compose secret), then the command.  The sql passdb's connect line has no
# password=, so the driver takes PGPASSWORD from the environment.  Also for
# one-off commands: docker compose exec proxyd-a proxyd-entrypoint proxyctl ...
#
# The mysql driver has no such variable: with SQL_CONNECT and SQL_PASSWORD_FILE
# set (profile "mariadb"), the connect line with the secret's password is
# written to mysql-connect.conf.ext in PROXYD_ETC (default /etc/proxyd), which
# the mounted dovecot-sql.conf.ext includes (inside the container only, like
# the secret file itself).  Likewise LDAP_DNPASS_FILE (profile "openldap"):
# "dnpass = ..." to ldap-dnpass.conf.ext, which dovecot-ldap.conf.ext includes.
set -eu
if [ -z "${PGPASSWORD:-}" ] && [ -n "${PGPASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
    export PGPASSWORD
fi
if [ -n "${SQL_CONNECT:-}" ] && [ -n "${SQL_PASSWORD_FILE:-}" ]; then
    password="$(cat "$SQL_PASSWORD_FILE")"
    case "$password" in
        *[[:space:]]*|"") echo "$SQL_PASSWORD_FILE: the password must be one word" >&2; exit 1 ;;
    esac
    file="${PROXYD_ETC:-/etc/proxyd}/mysql-connect.conf.ext"
    (umask 022 && printf 'connect = %s password=%s\n' "$SQL_CONNECT" "$password" >"$file")
fi
if [ -n "${LDAP_DNPASS_FILE:-}" ]; then
    password="$(cat "$LDAP_DNPASS_FILE")"
    case "$password" in
        *[[:space:]]*|"") echo "$LDAP_DNPASS_FILE: the password must be one word" >&2; exit 1 ;;
    esac
    file="${PROXYD_ETC:-/etc/proxyd}/ldap-dnpass.conf.ext"
    (umask 022 && printf 'dnpass = %s\n' "$password" >"$file")
fi
exec "$@"
