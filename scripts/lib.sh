# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh: install what proxyd needs on
# a Debian 12 machine (as root) and keep a venv with proxyd in the checkout.
# Every step checks first and does nothing when it is already done.

set -euo pipefail
# Dovecot's unprivileged processes must be able to read what these scripts write
umask 022

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PROXYD_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
# postgresql, mariadb-server, slapd and ldap-utils: the sql and ldap passdb
# tests start private servers from these binaries (the system services stay off)
APT_PACKAGES=(dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-sieve
              dovecot-submissiond dovecot-lmtpd curl openssl ca-certificates python3-venv
              postgresql mariadb-server slapd ldap-utils
              # the mypyc-compiled build (setup.py; tests/test_mypyc_build.py with PROXYD_TEST_MYPYC=1)
              gcc python3-dev)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "run this as root: it installs Debian packages and starts Dovecot as root"
}

# Installs the Debian packages that are missing.  Services must not start on
# their own: when no policy-rc.d exists, one that denies every start is put in
# place for the duration of the install (Docker images already have one).
install_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages already installed: ${APT_PACKAGES[*]}"
        return
    fi
    require_root
    local policy=/usr/sbin/policy-rc.d created_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=yes
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # slapd: no default dc=nodomain database in /etc/ldap and /var/lib/ldap
    if command -v debconf-set-selections >/dev/null; then
        echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" </dev/null
    if [ "$created_policy" = yes ]; then
        rm -f "$policy"
    fi
}

# Creates $VENV (if missing or broken) and installs proxyd editable with the
# test extras.  Reinstalls only when pyproject.toml changed since last time.
ensure_venv() {
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating venv $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        # pip >= 23 for PEP 660 editable installs
        "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
    local stamp="$VENV/.proxyd-installed" want
    want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/proxyd" ]; then
        log "venv up to date: $VENV"
        return
    fi
    log "installing proxyd (editable, with test extras) into $VENV"
    "$VENV/bin/python" -m pip install -q -e "${REPO_ROOT}[test]"
    printf '%s\n' "$want" >"$stamp"
}

# True when something accepts TCP connections on $1:$2.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for_port ADDRESS PORT SECONDS: poll until the port accepts.
wait_for_port() {
    local address=$1 port=$2 seconds=$3 i
    for ((i = 0; i < seconds * 10; i++)); do
        if port_open "$address" "$port"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}
