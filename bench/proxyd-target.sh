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
#   bench/profile.sh sets "chroot =" so that py-spy can read the login processes;
# * a second target, proxyd_hs: the same proxyd in high-security mode (one login
#   process per connection, forked from the zygote), with the service settings of the
#   rig's dovecot_hs anchor (service_count = 1, process_limit = 6000,
#   default_process_limit = 6000, default_client_limit = 20000, no process_min_avail),
#   on ports 20075/20076 (free in ports.sh), base_dir $RUN/proxyd-hs.

PROXYD_HS_IMAP=20075 PROXYD_HS_POP3=20076

# proxyd_conf_hs: the rig's proxyd config turned into high-security mode
proxyd_conf_hs() {
  proxyd_conf 0 | awk -v run="$RUN" -v imap="$PROXYD_IMAP" -v pop3="$PROXYD_POP3" \
      -v himap="$PROXYD_HS_IMAP" -v hpop3="$PROXYD_HS_POP3" '
    /^base_dir = / { print "base_dir = " run "/proxyd-hs"
                     print "default_process_limit = 6000"
                     print "default_client_limit = 20000"; next }
    $1 == "port" && $3 == imap { sub(imap, himap) }
    $1 == "port" && $3 == pop3 { sub(pop3, hpop3) }
    { print }
    /^service [a-z0-9]+-login \{/ { print "  service_count = 1"; print "  process_limit = 6000"
      # the default imaps/pop3s listeners (993/995) are taken by the proxyd target
      ssl = $2 == "imap-login" ? "imaps" : "pop3s"
      print "  inet_listener " ssl " {"; print "    port = 0"; print "  }" }'
}

# proxyd_prepare [hs]: writes $RUN/conf/proxyd.conf (or proxyd-hs.conf for "hs")
proxyd_prepare() {
  [ -x "$RUN/proxyd-venv/bin/proxyd" ] || { echo "no proxyd venv: run bench/run.sh (it builds it)" >&2; return 1; }
  local mode=${1:-hp} conf=$RUN/conf/proxyd.conf with protos withs="1 0"
  if [ "$mode" = hs ]; then conf=$RUN/conf/proxyd-hs.conf withs=hs; mkdir -p "$RUN/proxyd-hs"; else mkdir -p "$RUN/proxyd"; fi
  for with in $withs; do
    for protos in "imap pop3" "imap"; do
      if [ "$with" = hs ]; then proxyd_conf_hs; else proxyd_conf "$with"; fi | sed "s/^protocols = .*/protocols = $protos/" |
        awk -v extra="${PROXYD_LOGIN_EXTRA:-}" '{ print } extra != "" && /^service [a-z0-9]+-login \{/ { print "  " extra }' |
        if [ "$protos" = imap ]; then
          awk '/^service pop3-login \{/ { skip = 1 } !skip { print } skip && /^\}/ { skip = 0 }'
        else cat; fi > "$conf"
      "$RUN/proxyd-venv/bin/proxyd" -c "$conf" -n >/dev/null 2>&1 && return 0
    done
  done
  "$RUN/proxyd-venv/bin/proxyd" -c "$conf" -n >&2
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

target proxyd_hs "$PROXYD_HS_IMAP" "$PROXYD_HS_POP3"
t_proxyd_hs_start() {
  proxyd_prepare hs || return 1
  # shellcheck disable=SC2086  # PROXYD_CMD is a word list on purpose
  ${PROXYD_CMD:-"$RUN/proxyd-venv/bin/proxyd"} -c "$RUN/conf/proxyd-hs.conf" >>"$RUN/logs/proxyd_hs.log" 2>&1 &
  echo $! > "$RUN/pids/proxyd_hs.pid"
  wait_port "$PROXYD_HS_IMAP" || return 1
  if grep -q '^protocols = .*pop3' "$RUN/conf/proxyd-hs.conf"; then wait_port "$PROXYD_HS_POP3" || return 1; fi
}
t_proxyd_hs_stop() { stop_pidfile "$RUN/pids/proxyd_hs.pid"; }
t_proxyd_hs_roots() { cat "$RUN/pids/proxyd_hs.pid" 2>/dev/null; }
