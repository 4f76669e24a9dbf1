#!/usr/bin/env bash
# bench/floor/instr.sh - instructions per IMAP login of floor.py's variants (callgrind), the
# load-independent companion of run.sh, to set beside bench/instr/run.sh's figures for proxyd.
#
#   bench/floor/instr.sh floor-hp-raw-auth floor-hs_exit-stream-auth ...
#
# As bench/instr/run.sh: the rig's backend in a private network namespace, the whole
# process tree under `valgrind --tool=callgrind --trace-children=yes` (high-security: a
# child's counts start at its fork, --zero-before=PyOS_AfterFork_Child), two runs per
# variant with N1 and N2 logins (CONC clients at a time, bench/instr/login_client.py);
# instructions per login = (total of run N2 - total of run N1) / (N2 - N1), all processes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/../instr/lib.sh"
N1=${N1:-20} N2=${N2:-120} CONC=${CONC:-2}
OUT=${OUT:-/tmp/proxyd-floor-instr}
PY=${PY:-/work/main/.venv/bin/python}
# total TARGET N: the instructions of every process of that run
total() { cat "$OUT/$1-$2"/cg.*.out | awk '$1 == "totals:" {s += $2} END {print s}'; }
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  for t in "$@"; do
    for n in "$N1" "$N2"; do env BENCH_IN_NETNS=1 T="$t" N="$n" unshare -n -- "$0"; done
    echo "$t: $(( ($(total "$t" "$N2") - $(total "$t" "$N1")) / (N2 - N1) / 1000 )) k-instructions per login"
  done
  exit 0
fi
ip link set lo up
o=$OUT/$T-$N
instr_backend "$o"
IFS=- read -r _ mode io auth <<< "$T"
zero=""
case $mode in hp*) ;; *) zero=--zero-before=PyOS_AfterFork_Child ;; esac
valgrind --tool=callgrind --trace-children=yes $zero --callgrind-out-file="$o/cg.%p.out" \
  "$PY" "$HERE/floor.py" "$mode" "$io" "$([ -n "$auth" ] && echo unix || echo none)" 20071 > "$o/floor.log" 2>&1 &
m=$!
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/20071) 2>/dev/null && break; sleep 0.2; done
sleep 2
"$PY" "$HERE/../instr/login_client.py" imap 20071 "$N" "$CONC" 0
sleep 1
children=$(cat "/proc/$m/task/$m/children")  # the auth process, if any
kill -TERM "$m"; wait "$m" || true
# shellcheck disable=SC2086
if [ -n "$children" ]; then kill -TERM $children 2>/dev/null || true; fi
sleep 1
kill "$(cat "$o/backend/run/master.pid")"
