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
rm "$WORK/targets.sh" "$WORK/run-all.sh" "$WORK/results"
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
      proxyd_conf "$with" | sed "s/^protocols = .*/protocols = $protos/" > "$RUN/conf/proxyd.conf"
      "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >/dev/null 2>&1 && return 0
    done
  done
  "$RUN/proxyd-venv/bin/proxyd" -c "$RUN/conf/proxyd.conf" -n >&2
  return 1
}
OVERRIDE

export ROUNDS=${ROUNDS:-1}
export TARGETS=${TARGETS:-direct dovecot_hp nginx proxyd}
export SCENARIOS=${SCENARIOS:-login_imap noop_imap relay1_imap relay8_imap idle2000_imap}
export IDLE_KS=${IDLE_KS:-2000}
"$WORK/run-all.sh"
