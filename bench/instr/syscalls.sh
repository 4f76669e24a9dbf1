#!/usr/bin/env bash
# bench/instr/syscalls.sh - system calls per login by role (strace), next to run.sh's instructions.
#
#   bench/instr/syscalls.sh TREE [TREE...]
#
# The same set-up as bench/instr/run.sh (HP mode, the rig's backend and users in a private
# network namespace, CONC clients at a time), the whole proxyd process tree under
# `strace -f`: two runs per tree with N1 and N2 logins of PROTO (imap or pop3, default
# imap); system calls per login = (run N2 - run N1) / (N2 - N1), by role (master+zygote,
# auth, login processes: the process's user, as summary.py) and by call, with the calls
# that failed (EAGAIN) counted apart.  strace slows proxyd down a lot: the counts are
# exact, the times are not.  Output: OUT/<tree>-<n>/trace (one line per call).
# TOOL=calls: Python calls per login in the login processes instead, by proxyd function
# (bench/probe.py calls, started after the processes are up), in the same two runs.
# TOOL=perf: the login processes at full speed (strace's slow-down changes how often a
# process finds nothing to do), perf's syscall tracepoints: all system calls, epoll_wait,
# epoll_ctl, write, accept4 and the accept4 calls that found nothing (EAGAIN).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/lib.sh"
N1=${N1:-20} N2=${N2:-120} CONC=${CONC:-2} PROTO=${PROTO:-imap} TOOL=${TOOL:-strace}
OUT=${OUT:-/tmp/proxyd-syscalls}
PY=${PY:-/work/main/.venv/bin/python}
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  for tree in "$@"; do
    for n in "$N1" "$N2"; do
      env BENCH_IN_NETNS=1 TREE="$tree" N="$n" CONC="$CONC" PROTO="$PROTO" TOOL="$TOOL" unshare -n -- "$0" &
    done
    wait
  done
  TOOL=$TOOL "$PY" "$HERE/syscalls_summary.py" "$OUT" "$N1" "$N2" "$@"
  exit 0
fi
ip link set lo up
o=$OUT/$(basename "$TREE")-$N
instr_backend "$o"
instr_proxyd_conf "$o" hp "imap pop3" unchrooted
# python -m puts the working directory first on sys.path: a checkout there would
# shadow TREE
cd "$o"
if [ "$TOOL" = calls ] || [ "$TOOL" = cprofile ]; then  # Python calls per function in the login processes (bench/probe.py)
  PYTHONHASHSEED=0 PYTHONPATH=$TREE "$PY" "$HERE/../probe.py" "$TOOL" "$o/calls" -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 &
  m=$!
elif [ "$TOOL" = perf ]; then  # the login processes at full speed, counted by perf's tracepoints
  PYTHONHASHSEED=0 PYTHONPATH=$TREE "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 &
  m=$!
else  # strace blocks fatal signals while it runs a command: the master is stopped, not strace
  PYTHONHASHSEED=0 PYTHONPATH=$TREE strace -f -qq -o "$o/trace" "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 &
  s=$!
  for _ in $(seq 1 100); do m=$(pgrep -P "$s" || true); [ -n "$m" ] && break; sleep 0.1; done
fi
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/20072) 2>/dev/null && break; sleep 0.5; done
sleep 2
tree() { local p; for p in $(pgrep -P "$1"); do echo "$p"; tree "$p"; done; }
logins() { local p; for p in $(tree "$m"); do [ "$(ps -o user= -p "$p")" = dovenull ] && echo "$p"; done; }
case $TOOL in calls|cprofile) kill -USR1 $(logins); sleep 0.5 ;; esac
if [ "$TOOL" = perf ]; then
  perf stat -x, -o "$o/perf.txt" -p "$(logins | paste -sd,)" \
    -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl \
    -e syscalls:sys_enter_write -e syscalls:sys_enter_accept4 -e syscalls:sys_exit_accept4 --filter 'ret == -11' &
  pf=$!
  sleep 0.5
fi
port=$([ "$PROTO" = imap ] && echo 20071 || echo 20072)
"$PY" "$HERE/login_client.py" "$PROTO" "$port" "$N" "$CONC" 0
sleep 1
case $TOOL in calls|cprofile) kill -USR1 $(logins); sleep 1 ;; esac
[ "$TOOL" = perf ] && { kill -INT "$pf"; wait "$pf" || true; }
ps -e -o pid=,user= > "$o/users"
kill -TERM "$m"; [ "$TOOL" = strace ] || { wait "$m" || true; }
[ "$TOOL" != strace ] || while kill -0 "$s" 2>/dev/null; do sleep 0.2; done
kill "$(cat "$o/backend/run/master.pid")"
