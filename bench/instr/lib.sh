# bench/instr/lib.sh - sourced by run.sh, cpu.sh and syscalls.sh (and bench/floor's scripts)
# inside their private network namespace: the rig's Dovecot backend and proxyd's config as
# the rig's proxyd target has it (a static passdb naming only the host), in one scratch
# directory; and the mypyc-compiled build of a checkout.

# instr_backend DIR: a fresh DIR and the rig's backend started with its run, state and
# log directories under it
instr_backend() {
  local o=$1
  rm -rf "$o"; mkdir -p "$o/base" "$o/backend"; chmod 1777 "$o"
  sed -e "s#/tmp/bench-run/backend/run#$o/backend/run#; s#/tmp/bench-run/backend/state#$o/backend/state#; s#/tmp/bench-run/logs/backend.log#$o/backend/backend.log#" \
    /tmp/bench-run/conf/backend.conf > "$o/backend.conf"
  dovecot -c "$o/backend.conf"
}

# instr_proxyd_conf DIR MODE PROTOCOLS CHROOT: writes DIR/proxyd.conf.  MODE hp (a few
# long-lived login processes, the rig's settings) or hs (a login process per
# connection); PROTOCOLS "imap" or "imap pop3" (IMAP on 20071, POP3 on 20072); CHROOT
# "chrooted" (the deployed shape, Dovecot's default chroot = login) or "unchrooted"
# (valgrind and the profilers must read the login processes' files)
instr_proxyd_conf() {
  local o=$1 mode=$2 protocols=$3 chroot=$4 service proto port
  if [ "$mode" = hs ]; then
    service="  service_count = 1
  process_limit = 100"
  else
    service="  service_count = 0
  process_min_avail = 2
  client_limit = 8000"
  fi
  {
    cat <<CONF
base_dir = $o/base
listen = 127.0.0.1
protocols = $protocols
ssl = no
disable_plaintext_auth = no
passdb {
  driver = static
  args = nopassword=y proxy=y host=127.0.0.2
}
CONF
    for proto in $protocols; do
      port=$([ "$proto" = imap ] && echo 20071 || echo 20072)
      printf 'service %s-login {\n  inet_listener %s {\n    address = 127.0.0.1\n    port = %s\n  }\n' "$proto" "$proto" "$port"
      if [ "$chroot" = unchrooted ]; then echo "  chroot ="; fi
      printf '%s\n}\n' "$service"
    done
  } > "$o/proxyd.conf"
}

# build_compiled TREE DIR: TREE's mypyc-compiled wheel, installed into DIR/site (the
# caller sets PY; run.sh's MYPYC=1, bench/floor's proxyd targets)
build_compiled() {
  local tree=$1 dir=$2 started=$SECONDS
  rm -rf "$dir"; mkdir -p "$dir/src"
  cp -r "$tree/pyproject.toml" "$tree/setup.py" "$tree/README.md" "$tree/proxyd" "$tree/passdb_drivers" "$dir/src/"
  find "$dir/src" -name __pycache__ -prune -exec rm -rf {} +
  (cd "$dir" && PROXYD_MYPYC=1 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$dir/wheel" "$dir/src" > "$dir/build.log" 2>&1) ||
    { tail -20 "$dir/build.log" >&2; exit 1; }
  "$PY" -m pip install -q --no-deps --target "$dir/site" "$dir"/wheel/proxyd-*.whl
  echo "$tree: compiled build in $dir/site ($((SECONDS - started)) s)" >&2
}
