#!/usr/bin/env bash
# bench/run.sh - one command, one interleaved run: proxyd against a direct backend
# connection and the anchors (Dovecot's high-performance proxy, nginx), on the
# shared rig in ../shared/bench (or $RIG).  Prints the rig's ratio tables.
#
#   bench/run.sh                       # IMAP scenarios, ROUNDS=1 (~8 min)
#   ROUNDS=2 bench/run.sh              # less noise
#   TARGETS="direct dovecot_hp proxyd" SCENARIOS="login_imap" bench/run.sh
#
# The rig's files are not modified: they are copied into a scratch directory with
# one override appended to targets.sh, so proxyd's config lists only the protocols
# this checkout supports (the rig's default config also asks for pop3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
RIG=${RIG:-$(cd "$SRC/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$RIG" ] && [ -f "$RIG/run-all.sh" ] || { echo "bench rig not found; set RIG=/path/to/shared/bench" >&2; exit 2; }

export RUN=${RUN:-/tmp/bench-run}
[ -x "$RUN/bin/loadgen" ] || "$RIG/setup.sh"
PROXYD_SRC="$SRC" RUN="$RUN" "$RIG/proxyd-venv.sh"

WORK=$(mktemp -d /tmp/proxyd-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
for f in "$RIG"/*; do ln -s "$f" "$WORK/$(basename "$f")"; done
rm -f "$WORK/targets.sh" "$WORK/run-all.sh" "$WORK/results"
cp "$RIG/targets.sh" "$RIG/run-all.sh" "$WORK/"
mkdir -p "$HERE/results"
ln -s "$HERE/results" "$WORK/results"
cat >> "$WORK/targets.sh" <<'OVERRIDE'

# ---- proxyd checkout override (bench/run.sh): keep the rig's config, but list only
# the protocols this proxyd accepts, and prefer the high-performance service settings.
proxyd_prepare() {
  [ -x "$RUN/proxyd-venv/bin/proxyd" ] || { echo "no proxyd venv" >&2; return 1; }
  mkdir -p "$RUN/proxyd"
  local with protos
  for with in 1 0; do
    for protos in "imap pop3" "imap"; do
      # without pop3 the rig's "service pop3-login { ... }" block goes too: proxyd
      # rejects services it does not implement (Dovecot would just not start it)
      proxyd_conf "$with" | sed "s/^protocols = .*/protocols = $protos/" |
        if [ "$protos" = imap ]; then
          awk '/^service pop3-login \{/ { skip = 1 } !skip { print } skip && /^\}/ { skip = 0 }'
        else cat; fi > "$RUN/conf/proxyd.conf"
      "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >/dev/null 2>&1 && return 0
    done
  done
  "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >&2
  return 1
}
# wait only for the listeners of the protocols the config lists (the rig's version
# also waits for the POP3 port, which an IMAP-only proxyd never opens)
t_proxyd_start() {
  proxyd_prepare || return 1
  "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" >"$RUN/logs/proxyd.log" 2>&1 &
  echo $! > "$RUN/pids/proxyd.pid"
  wait_port "$PROXYD_IMAP" || return 1
  if grep -q '^protocols = .*pop3' "$RUN/conf/proxyd.conf"; then wait_port "$PROXYD_POP3" || return 1; fi
}
OVERRIDE

export ROUNDS=${ROUNDS:-1}
export TARGETS=${TARGETS:-direct dovecot_hp nginx proxyd}
export SCENARIOS=${SCENARIOS:-login_imap noop_imap relay1_imap relay8_imap idle2000_imap}
export IDLE_KS=${IDLE_KS:-2000}
export OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
rc=0
"$WORK/run-all.sh" || rc=$?
# run-all.sh skips a target that fails to start and carries on: say so loudly
case " $TARGETS " in
  *" proxyd "*)
    if ! grep -q ' target=proxyd ' "$OUT/raw.txt" 2>/dev/null; then
      echo "bench/run.sh: no proxyd measurements in $OUT/raw.txt - proxyd did not start?" >&2
      echo "  config: $RUN/conf/proxyd.conf  log: $RUN/logs/proxyd.log (gz copy in $OUT/logs)" >&2
      rc=1
    fi ;;
esac
exit "$rc"
