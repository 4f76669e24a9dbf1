#!/usr/bin/env bash
# The one command that brings up the proxyd demo cluster on a Debian 12
# machine, as root, from a clone: the local twin of docker-compose.yml, the
# same topology as local processes on loopback addresses.
#
#     scripts/demo.sh                      # (re)start everything below
#     scripts/demo.sh stop                 # stop everything the demo started
#     scripts/demo.sh status               # what is running
#     scripts/demo.sh proxyctl NODE ARGS   # proxyctl against proxyd-a or proxyd-b
#     scripts/demo.sh psql [ARGS]          # psql on the passdb (database mail)
#     scripts/demo.sh stop-backend NAME    # stop backend-a or backend-b
#     scripts/demo.sh start-backend NAME   # start it again
#
#   proxyd-a   127.0.0.1  IMAP 10143 (STARTTLS), IMAPS 10993, POP3 10110 (STLS), POP3S 10995
#   proxyd-b   127.0.0.6  the same ports; both nodes read the same passdb
#   backend-a  127.0.0.2  Dovecot, IMAP 10143, POP3 10110 (alice's mail at first)
#   backend-b  127.0.0.3  Dovecot, the same ports (bob's mail at first)
#   postgres   127.0.0.4  PostgreSQL 5432, database mail: sql/pgsql.sql and
#                         sql/pgsql-demo-cluster.sql (table cluster_accounts)
#
# Both proxyd nodes run from byte-identical copies of demo/proxyd.conf,
# demo/dovecot-sql.conf.ext and demo/passdb-sql.conf (as passdb.conf), the files
# docker-compose.yml mounts; what differs per node comes from the environment
# (see demo/proxyd.conf).  The database
# password is random, made at start, and kept in $PROXYD_DEMO_DIR/secrets.
#
# Environment: PROXYD_DEMO_DIR (default /tmp/proxyd-demo) holds all state
# (certificates, database, mail, logs, pid files); PROXYD_DEMO_NET (default
# 127.0.0) is the first three octets of every address above;
# PROXYD_DEMO_NO_INSTALL=1 skips the Debian packages and the venv (it must
# exist: PROXYD_VENV).

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_DIR="${PROXYD_DEMO_DIR:-/tmp/proxyd-demo}"
MARKER="$DEMO_DIR/.proxyd-demo"
NET="${PROXYD_DEMO_NET:-127.0.0}"
NODES=("proxyd-a:$NET.1" "proxyd-b:$NET.6")
BACKENDS=("backend-a:$NET.2" "backend-b:$NET.3")
PG_ADDRESS="$NET.4"
PG_PORT=5432
PG_DIR="$DEMO_DIR/postgres"
# the proxy ports are in demo/proxyd.conf, the backend ports in demo/backend.conf
IMAP_PORT=10143
IMAPS_PORT=10993
POP3_PORT=10110
POP3S_PORT=10995
BACKEND_PORT=10143
BACKEND_POP3_PORT=10110
PROXY_PORTS=("$IMAP_PORT" "$IMAPS_PORT" "$POP3_PORT" "$POP3S_PORT")
PROXY_A="$NET.1"
PROXY_B="$NET.6"

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# stop_pids NAME=PIDFILE...: SIGTERM all at once, wait up to 15 s, then SIGKILL.
stop_pids() {
    local spec name pidfile pid pids=() names=() i j
    for spec in "$@"; do
        name=${spec%%=*} pidfile=${spec#*=}
        [ -f "$pidfile" ] || continue
        pid="$(head -n 1 "$pidfile")"
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

pg_bin() {
    local ctl
    ctl="$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/pg_ctl' 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$ctl" ] || die "PostgreSQL is not installed (apt-get install postgresql)"
    dirname "$ctl"
}

as_postgres() { runuser -u postgres -- "$@"; }

stop_postgres() {
    [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
    log "stopping PostgreSQL"
    as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null \
        || log "PostgreSQL did not stop cleanly; see $PG_DIR/postgres.log"
}

backend_spec() {
    local entry
    for entry in "${BACKENDS[@]}"; do
        [ "${entry%%:*}" = "$1" ] && { printf '%s\n' "$entry"; return 0; }
    done
    die "no backend named '$1' (backend-a, backend-b)"
}

stop_demo() {
    # only ever act on pid files inside a directory this script made
    [ -e "$MARKER" ] || return 0
    # proxyd/proxyd.pid: the single proxyd of earlier versions of this demo
    local specs=("proxyd=$DEMO_DIR/proxyd/proxyd.pid") entry name
    for entry in "${NODES[@]}"; do
        name=${entry%%:*}
        specs+=("$name=$DEMO_DIR/$name/proxyd.pid")
    done
    for entry in "${BACKENDS[@]}"; do
        name=${entry%%:*}
        specs+=("Dovecot $name=$DEMO_DIR/$name/run/master.pid")
    done
    stop_pids "${specs[@]}"
    stop_postgres
}

status_demo() {
    local running=0 entry name
    for entry in "${NODES[@]}"; do
        name=${entry%%:*}
        if [ -f "$DEMO_DIR/$name/proxyd.pid" ] && pid_alive "$(cat "$DEMO_DIR/$name/proxyd.pid")"; then
            echo "$name: running (pid $(cat "$DEMO_DIR/$name/proxyd.pid")) on ${entry#*:} ports ${PROXY_PORTS[*]}"
            running=1
        else
            echo "$name: stopped"
        fi
    done
    for entry in "${BACKENDS[@]}"; do
        name=${entry%%:*}
        if [ -f "$DEMO_DIR/$name/run/master.pid" ] && pid_alive "$(cat "$DEMO_DIR/$name/run/master.pid")"; then
            echo "$name: running on ${entry#*:}:$BACKEND_PORT (IMAP) and :$BACKEND_POP3_PORT (POP3)"
            running=1
        else
            echo "$name: stopped"
        fi
    done
    if [ -f "$PG_DIR/data/postmaster.pid" ] && pid_alive "$(head -n 1 "$PG_DIR/data/postmaster.pid")"; then
        echo "postgres: running on $PG_ADDRESS:$PG_PORT"
        running=1
    else
        echo "postgres: stopped"
    fi
    [ "$running" -eq 1 ]
}

# render TEMPLATE DEST NAME ADDRESS: fill in the @...@ placeholders of demo/backend.conf.
render() {
    sed -e "s|@DEMO_DIR@|$DEMO_DIR|g" -e "s|@NAME@|$3|g" -e "s|@ADDRESS@|$4|g" "$1" >"$2"
}

make_certificates() {
    local tls="$DEMO_DIR/tls" sans="DNS:localhost,DNS:proxyd-a,DNS:proxyd-b" entry
    for entry in "${NODES[@]}"; do
        sans+=",IP:${entry#*:}"
    done
    mkdir -p "$tls"
    log "making a demo CA and a certificate for localhost, $PROXY_A and $PROXY_B"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=proxyd demo CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout "$tls/key.pem" -out "$tls/cert.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=$sans" "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" \
        >"$tls/cert.ext"
    openssl x509 -req -in "$tls/cert.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 30 -extfile "$tls/cert.ext" -out "$tls/cert.pem" 2>/dev/null
    chmod 600 "$tls/key.pem" "$tls/ca.key"
}

# psql as the superuser over the server's socket (ON_ERROR_STOP); SQL on stdin
# unless arguments say otherwise.
demo_psql() {
    as_postgres "$(pg_bin)/psql" -h "$PG_DIR/socket" -p "$PG_PORT" -U postgres -X -q \
        -v ON_ERROR_STOP=1 "$@"
}

# A private PostgreSQL on $PG_ADDRESS with database mail: the role proxyd
# (random password, in $DEMO_DIR/secrets), sql/pgsql.sql and the cluster's
# table with the backends' addresses.
start_postgres() {
    local bin password
    bin="$(pg_bin)"
    if port_open "$PG_ADDRESS" "$PG_PORT"; then
        die "$PG_ADDRESS:$PG_PORT is already in use; stop whatever listens there"
    fi
    mkdir -p "$PG_DIR/socket" "$DEMO_DIR/secrets"
    chmod 700 "$DEMO_DIR/secrets"
    chown -R postgres:postgres "$PG_DIR"
    chmod 750 "$PG_DIR/socket"
    log "starting PostgreSQL on $PG_ADDRESS:$PG_PORT"
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$DEMO_DIR/initdb.log" 2>&1 \
        || { cat "$DEMO_DIR/initdb.log" >&2; die "initdb failed"; }
    as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 30 \
        -o "-p $PG_PORT -k $PG_DIR/socket -c listen_addresses=$PG_ADDRESS -c fsync=off" \
        start >/dev/null || die "PostgreSQL did not start; see $PG_DIR/postgres.log"
    password="$(openssl rand -hex 16)"
    (umask 077 && printf '%s\n' "$password" >"$DEMO_DIR/secrets/pgsql_proxyd_password")
    # the password travels on stdin, never on a command line
    printf "CREATE ROLE proxyd LOGIN PASSWORD '%s';\nCREATE DATABASE mail;\n" "$password" \
        | demo_psql -d postgres -f - >/dev/null
    # files on stdin: the checkout may be where the postgres user cannot read
    demo_psql -d mail -f - <"$REPO_ROOT/sql/pgsql.sql" >/dev/null
    demo_psql -d mail -v "backend_a=$NET.2" -v "backend_b=$NET.3" -f - \
        <"$REPO_ROOT/sql/pgsql-demo-cluster.sql" >/dev/null
    echo "GRANT SELECT, UPDATE ON cluster_accounts TO proxyd;" | demo_psql -d mail -f - >/dev/null
}

# start_backend NAME ADDRESS: Dovecot with every demo user and, for each, one
# message whose Subject names this backend.
start_backend() {
    local name=$1 address=$2 dir="$DEMO_DIR/$1" user port
    for port in "$BACKEND_PORT" "$BACKEND_POP3_PORT"; do
        if port_open "$address" "$port"; then
            die "$address:$port is already in use; stop whatever listens there"
        fi
    done
    if [ ! -d "$dir/mail" ]; then
        mkdir -p "$dir/mail"
        render "$REPO_ROOT/demo/backend.conf" "$dir/dovecot.conf" "$name" "$address"
        cp "$REPO_ROOT/demo/backend-users" "$dir/users"
        while IFS=: read -r user _; do
            mkdir -p "$dir/mail/$user/cur" "$dir/mail/$user/new" "$dir/mail/$user/tmp"
            printf '%s\r\n' \
                "From: demo@proxyd.invalid" "To: $user@proxyd.invalid" \
                "Subject: Hello $user, this is $name ($address)" \
                "Date: $(date -R)" "Message-ID: <$name.$user@proxyd-demo>" "" \
                "This message is stored on $name, the Dovecot at $address." \
                >"$dir/mail/$user/new/$(date +%s).M1P$$.$name"
        done < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$dir/users")
        chown -R nobody:nogroup "$dir/mail"
    fi
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

stop_backend() {
    local name=${1%%:*}
    stop_pids "Dovecot $name=$DEMO_DIR/$name/run/master.pid"
}

# node_env NODE: the environment demo/proxyd.conf reads for this node (the
# database password too: proxyctl move writes to the passdb).
node_env() {
    local entry name address
    for entry in "${NODES[@]}"; do
        name=${entry%%:*} address=${entry#*:}
        if [ "$name" = "$1" ] || [ "$name" = "proxyd-$1" ]; then
            printf '%s\n' "PROXYD_NODE=$name" "PROXYD_LISTEN=$address" \
                "PROXYD_BASE_DIR=$DEMO_DIR/$name/run" \
                "PGPASSWORD=$(cat "$DEMO_DIR/secrets/pgsql_proxyd_password")"
            return 0
        fi
    done
    die "no proxyd node named '$1' (proxyd-a or a, proxyd-b or b)"
}

# run_node NODE COMMAND...: COMMAND with NODE's environment.
run_node() {
    local node=$1 vars=()
    shift
    mapfile -t vars < <(node_env "$node")
    env "${vars[@]}" "$@"
}

# start_proxyd NODE ADDRESS: the node's etc/ holds unchanged copies of
# demo/proxyd.conf, demo/dovecot-sql.conf.ext and (as passdb.conf)
# demo/passdb-sql.conf, tls/, and the connect line
# for this form of the demo (docker-compose.yml: demo/docker/pgsql-connect.conf.ext).
start_proxyd() {
    local name=$1 address=$2 dir="$DEMO_DIR/$1" pid port
    mkdir -p "$dir/etc/tls" "$dir/run"
    cp "$REPO_ROOT/demo/proxyd.conf" "$REPO_ROOT/demo/dovecot-sql.conf.ext" "$dir/etc/"
    cp "$REPO_ROOT/demo/passdb-sql.conf" "$dir/etc/passdb.conf"
    printf '%s\n' "# scripts/demo.sh: the local twin's database (password: PGPASSWORD)" \
        "connect = host=$PG_ADDRESS port=$PG_PORT dbname=mail user=proxyd connect_timeout=3 sslmode=disable" \
        >"$dir/etc/pgsql-connect.conf.ext"
    cp "$DEMO_DIR/tls/cert.pem" "$DEMO_DIR/tls/key.pem" "$DEMO_DIR/tls/ca.pem" "$dir/etc/tls/"
    run_node "$name" "$VENV/bin/proxyd" -c "$dir/etc/proxyd.conf" -n >/dev/null \
        || die "proxyd rejected $dir/etc/proxyd.conf"
    # the passdb too (proxyd -n does not read dovecot-sql.conf.ext), with the database
    run_node "$name" "$VENV/bin/proxyctl" -c "$dir/etc/proxyd.conf" auth test alice >/dev/null \
        || die "$name cannot look users up: scripts/demo.sh proxyctl $name auth test alice"
    for port in "${PROXY_PORTS[@]}"; do
        if port_open "$address" "$port"; then
            die "$address:$port is already in use; stop whatever listens there"
        fi
    done
    log "starting $name on $address ports ${PROXY_PORTS[*]}"
    local vars=()
    mapfile -t vars < <(node_env "$name")
    # a session of its own, so it outlives this script and the terminal; env
    # and setsid exec, so $! is proxyd's pid
    env "${vars[@]}" setsid "$VENV/bin/proxyd" -c "$dir/etc/proxyd.conf" >>"$dir/proxyd.log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$dir/proxyd.pid"
    for port in "${PROXY_PORTS[@]}"; do
        if ! wait_for_port "$address" "$port" 30 || ! pid_alive "$pid"; then
            tail -n 30 "$dir/proxyd.log" >&2 || true
            die "$name did not start; see $dir/proxyd.log"
        fi
    done
}

# Logs in through both nodes as each user, over IMAP and over POP3, and checks
# the message came from the user's backend.
self_check() {
    local out url node entry user password backend
    for node in "$PROXY_A" "$PROXY_B"; do
        for entry in "alice:alicepw:backend-a" "bob:bobpw:backend-b"; do
            IFS=: read -r user password backend <<<"$entry"
            for url in "imap://$node:$IMAP_PORT/INBOX;UID=1" "pop3://$node:$POP3_PORT/1"; do
                out="$(curl -sS --max-time 20 "$url" -u "$user:$password" 2>&1)" || true
                if grep -q "Subject: Hello $user, this is $backend" <<<"$out"; then
                    log "check: $user logged in through $node (${url%%:*}) and read mail from $backend"
                else
                    log "check FAILED for $user through $node (${url%%:*}): $out"
                    return 1
                fi
            done
        done
    done
}

start_demo() {
    require_root
    if [ "${PROXYD_DEMO_NO_INSTALL:-}" = 1 ]; then
        [ -x "$VENV/bin/proxyd" ] || die "PROXYD_DEMO_NO_INSTALL=1 but $VENV/bin/proxyd is missing"
    else
        install_apt_packages
        ensure_venv
    fi
    if [ -e "$DEMO_DIR" ] && [ ! -e "$MARKER" ]; then
        die "$DEMO_DIR exists and is not a proxyd demo directory; set PROXYD_DEMO_DIR"
    fi
    stop_demo
    rm -rf "$DEMO_DIR"
    mkdir -p "$DEMO_DIR"
    chmod 755 "$DEMO_DIR"
    touch "$MARKER"

    make_certificates
    start_postgres
    local entry
    for entry in "${BACKENDS[@]}"; do
        start_backend "${entry%%:*}" "${entry#*:}"
    done
    for entry in "${NODES[@]}"; do
        start_proxyd "${entry%%:*}" "${entry#*:}"
    done
    self_check || die "the demo started but logins through proxyd fail; see $DEMO_DIR/proxyd-*/proxyd.log"

    local demo="scripts/demo.sh"
    cat <<EOT

The demo cluster runs:
  proxyd-a  $PROXY_A   IMAP :$IMAP_PORT (STARTTLS), IMAPS :$IMAPS_PORT, POP3 :$POP3_PORT (STLS), POP3S :$POP3S_PORT
  proxyd-b  $PROXY_B   the same ports
  backend-a $NET.2   Dovecot, IMAP :$BACKEND_PORT, POP3 :$BACKEND_POP3_PORT (alice)
  backend-b $NET.3   Dovecot, the same ports (bob)
  postgres  $PG_ADDRESS   PostgreSQL :$PG_PORT, database mail, table cluster_accounts (the passdb of both nodes)

Log in through either proxy; the Subject names the backend that answered:
  curl -s 'imap://$PROXY_A:$IMAP_PORT/INBOX;UID=1' -u alice:alicepw
  curl -s 'imap://$PROXY_B:$IMAP_PORT/INBOX;UID=1' -u alice:alicepw
  curl -s 'imap://$PROXY_A:$IMAP_PORT/INBOX;UID=1' -u bob:bobpw
  curl -s 'pop3://$PROXY_B:$POP3_PORT/1' -u bob:bobpw                         # RETR 1
  curl -s 'pop3://$PROXY_A:$POP3_PORT/' -u alice:alicepw                      # LIST
  curl -s --ssl-reqd --cacert $DEMO_DIR/tls/ca.pem 'imap://$PROXY_A:$IMAP_PORT/INBOX;UID=1' -u bob:bobpw
  curl -s --cacert $DEMO_DIR/tls/ca.pem 'imaps://$PROXY_B:$IMAPS_PORT/INBOX;UID=1' -u alice:alicepw
  curl -s --cacert $DEMO_DIR/tls/ca.pem 'pop3s://$PROXY_A:$POP3S_PORT/1' -u bob:bobpw
  curl -sS 'imap://$PROXY_A:$IMAP_PORT/INBOX' -u alice:wrong; echo "exit \$?"    # 67: login denied

Move alice to backend-b (the walkthrough in README.md):
  $demo psql -c "UPDATE cluster_accounts SET host = '$NET.3', delay_until = extract(epoch from now())::int + 10 WHERE username = 'alice'"
  $demo proxyctl a kick alice; $demo proxyctl b kick alice
  $demo proxyctl a move alice $NET.2 --delay 10      # and back, in one step
  $demo proxyctl a who; $demo proxyctl b auth test alice alicepw
  $demo stop-backend backend-b; $demo start-backend backend-b

Configuration: $DEMO_DIR/proxyd-{a,b}/etc (copies of demo/proxyd.conf, demo/dovecot-sql.conf.ext and demo/passdb-sql.conf)
Logs:          $DEMO_DIR/proxyd-{a,b}/proxyd.log, $DEMO_DIR/backend-{a,b}/dovecot.log, $PG_DIR/postgres.log
Stop:          $demo stop
EOT
}

case "${1:-start}" in
    start) start_demo ;;
    stop) stop_demo; log "demo stopped" ;;
    status) status_demo ;;
    proxyctl)
        [ $# -ge 3 ] || die "usage: $0 proxyctl NODE ARGS... (NODE: proxyd-a, proxyd-b, a or b)"
        node=$2
        shift 2
        name="$(node_env "$node" | sed -n 's/^PROXYD_NODE=//p')"
        run_node "$node" "$VENV/bin/proxyctl" -c "$DEMO_DIR/$name/etc/proxyd.conf" "$@"
        ;;
    psql)
        shift
        demo_psql -d mail "$@"
        ;;
    stop-backend)
        [ $# -eq 2 ] || die "usage: $0 stop-backend NAME"
        stop_backend "$(backend_spec "$2")"
        ;;
    start-backend)
        [ $# -eq 2 ] || die "usage: $0 start-backend NAME"
        spec="$(backend_spec "$2")"
        start_backend "${spec%%:*}" "${spec#*:}"
        ;;
    *) die "usage: $0 [start|stop|status|proxyctl NODE ARGS...|psql [ARGS...]|stop-backend NAME|start-backend NAME]" ;;
esac
