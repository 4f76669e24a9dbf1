#!/usr/bin/env bash
# The one command that brings up the proxyd demo on a Debian 12 machine, as
# root, from a clone:
#
#     scripts/demo.sh          # (re)start: two Dovecot backends + proxyd in front
#     scripts/demo.sh stop     # stop everything the demo started
#     scripts/demo.sh status   # what is running
#
# Backends: Dovecot on 127.0.0.2 (alice's mail) and 127.0.0.3 (bob's mail),
# IMAP on port 10143 and POP3 on 10110.  proxyd: 127.0.0.1:10143 (IMAP +
# STARTTLS), :10993 (IMAPS), :10110 (POP3 + STLS) and :10995 (POP3S), routing
# each user by the passwd-file in demo/users.  All state
# (certificates, hashes, mail, logs, pid files) lives in $PROXYD_DEMO_DIR,
# /tmp/proxyd-demo by default.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_DIR="${PROXYD_DEMO_DIR:-/tmp/proxyd-demo}"
MARKER="$DEMO_DIR/.proxyd-demo"
BACKENDS=("backend-a:127.0.0.2" "backend-b:127.0.0.3")
PROXY_ADDRESS=127.0.0.1
IMAP_PORT=10143
IMAPS_PORT=10993
POP3_PORT=10110
POP3S_PORT=10995
BACKEND_PORT=10143
BACKEND_POP3_PORT=10110
PROXY_PORTS=("$IMAP_PORT" "$IMAPS_PORT" "$POP3_PORT" "$POP3S_PORT")

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# stop_pids NAME=PIDFILE...: SIGTERM all at once, wait up to 15 s, then SIGKILL.
stop_pids() {
    local spec name pidfile pid pids=() names=() i j
    for spec in "$@"; do
        name=${spec%%=*} pidfile=${spec#*=}
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        rm -f "$pidfile"
        if pid_alive "$pid"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid"
            pids+=("$pid") names+=("$name")
        fi
    done
    for ((i = 0; i < 150; i++)); do
        for pid in "${pids[@]}"; do
            pid_alive "$pid" && break
        done
        pid_alive "${pid:-}" || return 0
        sleep 0.1
    done
    for j in "${!pids[@]}"; do
        if pid_alive "${pids[j]}"; then
            log "${names[j]} did not stop in 15 s; killing it"
            kill -KILL "${pids[j]}"
        fi
    done
}

stop_demo() {
    # only ever act on pid files inside a directory this script made
    [ -e "$MARKER" ] || return 0
    local specs=("proxyd=$DEMO_DIR/proxyd/proxyd.pid") entry name
    for entry in "${BACKENDS[@]}"; do
        name=${entry%%:*}
        specs+=("Dovecot $name=$DEMO_DIR/$name/run/master.pid")
    done
    stop_pids "${specs[@]}"
}

status_demo() {
    local running=0 entry name
    if [ -f "$DEMO_DIR/proxyd/proxyd.pid" ] && pid_alive "$(cat "$DEMO_DIR/proxyd/proxyd.pid")"; then
        echo "proxyd: running (pid $(cat "$DEMO_DIR/proxyd/proxyd.pid")) on $PROXY_ADDRESS ports ${PROXY_PORTS[*]}"
        running=1
    else
        echo "proxyd: stopped"
    fi
    for entry in "${BACKENDS[@]}"; do
        name=${entry%%:*}
        if [ -f "$DEMO_DIR/$name/run/master.pid" ] && pid_alive "$(cat "$DEMO_DIR/$name/run/master.pid")"; then
            echo "$name: running on ${entry#*:}:$BACKEND_PORT (IMAP) and :$BACKEND_POP3_PORT (POP3)"
            running=1
        else
            echo "$name: stopped"
        fi
    done
    [ "$running" -eq 1 ]
}

# render TEMPLATE DEST NAME ADDRESS: fill in the @...@ placeholders of a demo/ file.
render() {
    sed -e "s|@DEMO_DIR@|$DEMO_DIR|g" -e "s|@NAME@|$3|g" -e "s|@ADDRESS@|$4|g" "$1" >"$2"
}

make_certificates() {
    local tls="$DEMO_DIR/tls"
    mkdir -p "$tls"
    log "making a demo CA and a certificate for localhost, 127.0.0.1, 127.0.0.2, 127.0.0.3"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=proxyd demo CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout "$tls/key.pem" -out "$tls/cert.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3" \
        "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" >"$tls/cert.ext"
    openssl x509 -req -in "$tls/cert.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 30 -extfile "$tls/cert.ext" -out "$tls/cert.pem" 2>/dev/null
    chmod 600 "$tls/key.pem" "$tls/ca.key"
}

# The proxy's passwd-files: demo/users with every @HASH:password@ replaced by
# the output of `proxyctl pw` as users-imap, and the same with the backends'
# POP3 port as users-pop3 (the passdb reads users-%s).
make_proxy_users() {
    local dest="$DEMO_DIR/proxyd/users-imap" line password hash
    : >"$dest"
    while IFS= read -r line || [ -n "$line" ]; do
        while [[ $line =~ @HASH:([^@]*)@ ]]; do
            password=${BASH_REMATCH[1]}
            hash="$("$VENV/bin/proxyctl" pw -s SHA512-CRYPT -p "$password")"
            line=${line/"@HASH:$password@"/$hash}
        done
        printf '%s\n' "$line" >>"$dest"
    done <"$REPO_ROOT/demo/users"
    sed -e "s/ port=$BACKEND_PORT\b/ port=$BACKEND_POP3_PORT/" "$dest" >"$DEMO_DIR/proxyd/users-pop3"
}

# start_backend NAME ADDRESS: users whose host= is ADDRESS get the same
# password hash and one message naming the backend.
start_backend() {
    local name=$1 address=$2 dir="$DEMO_DIR/$1" user
    mkdir -p "$dir/mail"
    chown nobody:nogroup "$dir/mail"
    render "$REPO_ROOT/demo/backend.conf" "$dir/dovecot.conf" "$name" "$address"
    awk -F: -v host="host=$address" '
        /^[[:space:]]*(#|$)/ { next }
        { n = split($NF, fields, " "); for (i = 1; i <= n; i++) if (fields[i] == host) print $1 ":" $2 }
    ' "$DEMO_DIR/proxyd/users-imap" >"$dir/users"
    while IFS=: read -r user _; do
        mkdir -p "$dir/mail/$user/cur" "$dir/mail/$user/new" "$dir/mail/$user/tmp"
        printf '%s\r\n' \
            "From: demo@proxyd.invalid" "To: $user@proxyd.invalid" \
            "Subject: Hello $user, this is $name ($address)" \
            "Date: $(date -R)" "Message-ID: <$name.$user@proxyd-demo>" "" \
            "This message is stored on $name, the Dovecot at $address." \
            >"$dir/mail/$user/new/$(date +%s).M1P$$.$name"
        chown -R nobody:nogroup "$dir/mail/$user"
    done <"$dir/users"
    local port
    for port in "$BACKEND_PORT" "$BACKEND_POP3_PORT"; do
        if port_open "$address" "$port"; then
            die "$address:$port is already in use; stop whatever listens there"
        fi
    done
    log "starting Dovecot $name on $address:$BACKEND_PORT (IMAP) and :$BACKEND_POP3_PORT (POP3)"
    # Dovecot daemonizes; its stdio goes to a file so no pipe stays open behind it
    if ! /usr/sbin/dovecot -c "$dir/dovecot.conf" </dev/null >"$dir/startup.log" 2>&1; then
        cat "$dir/startup.log" >&2
        die "Dovecot $name did not start"
    fi
    for port in "$BACKEND_PORT" "$BACKEND_POP3_PORT"; do
        wait_for_port "$address" "$port" 30 || die "Dovecot $name did not start; see $dir/dovecot.log"
    done
}

start_proxyd() {
    local dir="$DEMO_DIR/proxyd" pid
    render "$REPO_ROOT/demo/proxyd.conf" "$dir/proxyd.conf" "" ""
    "$VENV/bin/proxyd" -c "$dir/proxyd.conf" -n >/dev/null \
        || die "proxyd rejected $dir/proxyd.conf (run: $VENV/bin/proxyd -c $dir/proxyd.conf -n)"
    local port
    for port in "${PROXY_PORTS[@]}"; do
        if port_open "$PROXY_ADDRESS" "$port"; then
            die "$PROXY_ADDRESS:$port is already in use; stop whatever listens there"
        fi
    done
    log "starting proxyd on $PROXY_ADDRESS ports ${PROXY_PORTS[*]}"
    # a session of its own, so it outlives this script and the terminal
    setsid "$VENV/bin/proxyd" -c "$dir/proxyd.conf" >>"$dir/proxyd.log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$dir/proxyd.pid"
    for port in "${PROXY_PORTS[@]}"; do
        if ! wait_for_port "$PROXY_ADDRESS" "$port" 30 || ! pid_alive "$pid"; then
            tail -n 30 "$dir/proxyd.log" >&2 || true
            die "proxyd did not start; see $dir/proxyd.log"
        fi
    done
}

# Logs in through proxyd as each user, over IMAP and over POP3, and checks the
# message came from the right backend.
self_check() {
    local ok=1 out url
    for entry in "alice:alicepw:backend-a" "bob:bobpw:backend-b"; do
        IFS=: read -r user password backend <<<"$entry"
        for url in "imap://$PROXY_ADDRESS:$IMAP_PORT/INBOX;UID=1" "pop3://$PROXY_ADDRESS:$POP3_PORT/1"; do
            out="$(curl -sS --max-time 20 "$url" -u "$user:$password" 2>&1)" || true
            if grep -q "Subject: Hello $user, this is $backend" <<<"$out"; then
                log "check: $user logged in through proxyd (${url%%:*}) and read mail from $backend"
            else
                log "check FAILED for $user (${url%%:*}): $out"
                ok=0
            fi
        done
    done
    [ "$ok" -eq 1 ]
}

start_demo() {
    require_root
    install_apt_packages
    ensure_venv
    if [ -e "$DEMO_DIR" ] && [ ! -e "$MARKER" ]; then
        die "$DEMO_DIR exists and is not a proxyd demo directory; set PROXYD_DEMO_DIR"
    fi
    stop_demo
    rm -rf "$DEMO_DIR"
    mkdir -p "$DEMO_DIR/proxyd"
    chmod 755 "$DEMO_DIR"
    touch "$MARKER"

    make_certificates
    make_proxy_users
    local entry
    for entry in "${BACKENDS[@]}"; do
        start_backend "${entry%%:*}" "${entry#*:}"
    done
    start_proxyd
    self_check || die "the demo started but logins through proxyd fail; see $DEMO_DIR/proxyd/proxyd.log"

    cat <<EOT

proxyd is running on $PROXY_ADDRESS:$IMAP_PORT (IMAP, STARTTLS), $PROXY_ADDRESS:$IMAPS_PORT (IMAPS),
$PROXY_ADDRESS:$POP3_PORT (POP3, STLS) and $PROXY_ADDRESS:$POP3S_PORT (POP3S), in front of Dovecot
backend-a (127.0.0.2, alice) and backend-b (127.0.0.3, bob), IMAP on :$BACKEND_PORT, POP3 on :$BACKEND_POP3_PORT.

Try it:
  curl -s 'imap://$PROXY_ADDRESS:$IMAP_PORT/INBOX;UID=1' -u alice:alicepw
  curl -s 'imap://$PROXY_ADDRESS:$IMAP_PORT/INBOX;UID=1' -u bob:bobpw
  curl -s --ssl-reqd --cacert $DEMO_DIR/tls/ca.pem 'imap://localhost:$IMAP_PORT/INBOX;UID=1' -u bob:bobpw
  curl -s --cacert $DEMO_DIR/tls/ca.pem 'imaps://$PROXY_ADDRESS:$IMAPS_PORT/INBOX;UID=1' -u alice:alicepw
  curl -sS 'imap://$PROXY_ADDRESS:$IMAP_PORT/INBOX' -u alice:wrong; echo "exit \$?"    # 67: login denied
  curl -s 'pop3://$PROXY_ADDRESS:$POP3_PORT/' -u alice:alicepw                      # LIST
  curl -s 'pop3://$PROXY_ADDRESS:$POP3_PORT/1' -u bob:bobpw                         # RETR 1
  curl -s --ssl-reqd --cacert $DEMO_DIR/tls/ca.pem 'pop3://localhost:$POP3_PORT/1' -u alice:alicepw
  curl -s --cacert $DEMO_DIR/tls/ca.pem 'pop3s://$PROXY_ADDRESS:$POP3S_PORT/1' -u bob:bobpw
  $VENV/bin/proxyctl -c $DEMO_DIR/proxyd/proxyd.conf auth test alice alicepw
  $VENV/bin/proxyd -c $DEMO_DIR/proxyd/proxyd.conf -n

Configuration: $DEMO_DIR/proxyd/proxyd.conf and $DEMO_DIR/proxyd/users-{imap,pop3} (from demo/ in the checkout)
Logs:          $DEMO_DIR/proxyd/proxyd.log, $DEMO_DIR/backend-a/dovecot.log, $DEMO_DIR/backend-b/dovecot.log
Stop:          scripts/demo.sh stop
EOT
}

case "${1:-start}" in
    start) start_demo ;;
    stop) stop_demo; log "demo stopped" ;;
    status) status_demo ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
