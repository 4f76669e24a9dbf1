#!/bin/sh
# docker-compose.yml, profile "openldap": the openldap service's command.  On
# the first start (empty volume) it writes slapd.conf, hashes the password of
# the ldap_proxyd_password secret for cn=proxy and loads demo/ldap/demo-cluster.ldif
# with the backends' addresses (slapadd, offline); then runs slapd in the
# foreground as openldap.  tests/test_compose.py runs this script with Debian's
# slapd (elsewhere: LDAP_DIR, LDAP_SOURCE, PROXY_PASSWORD_FILE, LDAP_URLS).
set -eu
dir="${LDAP_DIR:-/var/lib/ldap/proxyd}"
source="${LDAP_SOURCE:-/ldap}"
password_file="${PROXY_PASSWORD_FILE:-/run/secrets/ldap_proxyd_password}"
if [ ! -e "$dir/db/data.mdb" ]; then
    mkdir -p "$dir/db"
    cp "$source/proxy.schema" "$dir/proxy.schema"
    sed "s|@DIR@|$dir|g" "$source/slapd.conf" >"$dir/slapd.conf"
    # the password travels on stdin, without the file's newline
    hash="$(printf '%s' "$(cat "$password_file")" | slappasswd -h '{SSHA}' -T /dev/stdin)"
    sed -e "s|@BACKEND_A@|$DEMO_BACKEND_A|" -e "s|@BACKEND_B@|$DEMO_BACKEND_B|" \
        -e "s|@PROXY_PASSWORD_HASH@|$hash|" "$source/demo-cluster.ldif" \
        | slapadd -q -f "$dir/slapd.conf" -l /dev/stdin
    chown -R openldap:openldap "$dir"
fi
exec slapd -d 0 -f "$dir/slapd.conf" -h "${LDAP_URLS:-ldap:///}" -u openldap -g openldap
