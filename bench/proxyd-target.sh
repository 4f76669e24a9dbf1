# bench/proxyd-target.sh - appended to (a copy of) the rig's targets.sh by bench/run.sh,
# sourced after it by bench/profile.sh.  Redefines the proxyd target for this checkout:
#
# * the rig's config asks for "protocols = imap pop3" and high-performance service
#   settings; proxyd rejects what it does not implement yet (exit 2 from -n), so the
#   richest variant this checkout accepts is used, and without pop3 the rig's
#   "service pop3-login { ... }" block goes too (Dovecot would just not start it);
# * start waits only for the listeners the chosen config opens;
# * the log is appended to, so the proxy restart before the idle scenario does not
#   wipe the log of the earlier scenarios;
# * $PROXYD_CMD (default: the venv's proxyd script) replaces the command before
#   "-c CONFIG": bench/profile.sh runs proxyd under cProfile / tracemalloc with it;
# * $PROXYD_LOGIN_EXTRA (default empty) is one more line in each login service block:
#   bench/profile.sh sets "chroot =" so that py-spy can read the login processes.

proxyd_prepare() {
  [ -x "$RUN/proxyd-venv/bin/proxyd" ] || { echo "no proxyd venv: run bench/run.sh (it builds it)" >&2; return 1; }
  mkdir -p "$RUN/proxyd"
  local with protos
  for with in 1 0; do
    for protos in "imap pop3" "imap"; do
      proxyd_conf "$with" | sed "s/^protocols = .*/protocols = $protos/" |
        awk -v extra="${PROXYD_LOGIN_EXTRA:-}" '{ print } extra != "" && /^service [a-z0-9]+-login \{/ { print "  " extra }' |
        if [ "$protos" = imap ]; then
          awk '/^service pop3-login \{/ { skip = 1 } !skip { print } skip && /^\}/ { skip = 0 }'
        else cat; fi > "$RUN/conf/proxyd.conf"
      "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >/dev/null 2>&1 && return 0
    done
  done
  "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >&2
  return 1
}

t_proxyd_start() {
  proxyd_prepare || return 1
  # shellcheck disable=SC2086  # PROXYD_CMD is a word list on purpose
  ${PROXYD_CMD:-"$RUN/proxyd-venv/bin/proxyd"} -c "$RUN/conf/proxyd.conf" >>"$RUN/logs/proxyd.log" 2>&1 &
  echo $! > "$RUN/pids/proxyd.pid"
  wait_port "$PROXYD_IMAP" || return 1
  if grep -q '^protocols = .*pop3' "$RUN/conf/proxyd.conf"; then wait_port "$PROXYD_POP3" || return 1; fi
}
