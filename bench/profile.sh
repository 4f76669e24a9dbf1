#!/usr/bin/env bash
# bench/profile.sh - where proxyd spends CPU and memory on the rig.
#
#   bench/run.sh            # first: builds $RUN/proxyd-venv (this script profiles that venv)
#   bench/profile.sh        # ~3 min; py-spy from PATH or /tmp/pyspy-venv (PYSPY=...)
#
# Inside the rig's private network namespace, against the rig's Dovecot backend, with
# the rig's proxyd config (bench/proxyd-target.sh):
#   0. no profiler: user/system CPU split of the whole proxyd process tree per login
#      and per relayed MB, from /proc/PID/stat;
#   1. perf (kernel + native symbols) during logins and a 10 MB FETCH relay;
#   2. strace -c: system calls per login and per NOOP;
#   3. py-spy (on-CPU samples, every process of the tree; login processes without their
#      chroot, which py-spy cannot see through) during logins, NOOPs, relay;
#   4. cProfile inside the imap-login processes during logins (bench/probe.py; exact
#      call counts, cProfile's own overhead inflates the times of small functions);
#   5. tracemalloc inside the imap-login processes with IDLE_K idle proxied sessions;
#   6. "crowd": a 1-session 10 MB FETCH relay alone, then again with IDLE_K idle
#      proxied sessions open (pipe buffers are a per-user kernel resource).
# PHASES="plain perf strace pyspy cprofile heap crowd" selects phases (default: all).
# Output: bench/results/profile-<UTC stamp>/ (or $OUT); summary files are *.txt.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
RIG=${RIG:-$(cd "$SRC/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$RIG" ] && [ -f "$RIG/targets.sh" ] || { echo "bench rig not found; set RIG=/path/to/shared/bench" >&2; exit 2; }
export RUN=${RUN:-/tmp/bench-run}
PYSPY=${PYSPY:-$(command -v py-spy || echo /tmp/pyspy-venv/bin/py-spy)}
[ -x "$PYSPY" ] || { echo "py-spy not found: python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy" >&2; exit 2; }
[ -x "$RUN/proxyd-venv/bin/proxyd" ] || { echo "no $RUN/proxyd-venv: run bench/run.sh first" >&2; exit 2; }
export OUT=${OUT:-$HERE/results/profile-$(date -u +%Y%m%dT%H%M%SZ)}

if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  exec env BENCH_IN_NETNS=1 PYSPY="$PYSPY" unshare -n -- "$0" "$@"
fi

ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="20500 29999"
sysctl -qw net.core.somaxconn=4096
sysctl -qw net.ipv4.tcp_max_syn_backlog=4096
ulimit -n "$(ulimit -Hn)"
ulimit -c 0

. "$RIG/ports.sh"
. "$RIG/targets.sh"
. "$HERE/proxyd-target.sh"
cd "$RUN" || exit 1   # so no proxyd checkout in the cwd shadows the venv's copy
LG=$RUN/bin/loadgen
PY=$RUN/proxyd-venv/bin/python
mkdir -p "$OUT" "$RUN/pids" "$RUN/logs"
cp "$RUN/proxyd-venv/SOURCE.txt" "$OUT/source.txt" 2>/dev/null
LOGIN_D=${LOGIN_D:-10s}
NOOP_N=${NOOP_N:-20000}
RELAY_D=${RELAY_D:-10s}
IDLE_K=${IDLE_K:-2000}
PHASES=${PHASES:-plain perf strace pyspy cprofile heap crowd}
want() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }

BGPID=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$BGPID" ] && kill -INT "$BGPID" 2>/dev/null
  t_proxyd_stop || true
  backend_stop || true
}
trap cleanup EXIT
trap 'echo interrupted >&2; exit 130' INT TERM
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
lg() { # label loadgen-args...
  local label=$1; shift
  timeout 300 "$LG" -addr "127.0.0.1:$PROXYD_IMAP" -proto imap -label "$label" "$@" | tee -a "$OUT/loadgen.txt" >&2
}
# the proxyd process tree (the master is a child subreaper: every process is its child)
tree_pids() {
  ps -e -o pid=,ppid= | awk -v root="$PID" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]; if (q == root) print p } }'
}
login_pids() { # the imap-login processes, or the root when there is no process model
  local p found=
  for p in $(tree_pids); do
    case $(cat "/proc/$p/comm" 2>/dev/null) in *imap-lo*) echo "$p"; found=1 ;; esac
  done
  [ -n "$found" ] || echo "$PID"
}
# wait until the IDLE_K sessions are open: the login processes hold >= 2 fds per
# session and the count has not changed for 2 s
wait_open() {
  local p n=0 prev=-1 same=0
  for _ in $(seq 200); do
    sleep 0.5
    n=0
    for p in $LOGINS; do n=$((n + $(find "/proc/$p/fd" -maxdepth 1 -type l 2>/dev/null | wc -l))); done
    if [ "$n" -ge $((IDLE_K * 2)) ] && [ "$n" = "$prev" ]; then same=$((same + 1)); else same=0; fi
    [ "$same" -ge 4 ] && break
    prev=$n
  done
  echo "login processes' fds once the idle sessions were open: $n" >> "$OUT/loadgen.txt"
}
start_proxyd() {
  t_proxyd_start || { log "proxyd did not start"; exit 1; }
  PID=$(cat "$RUN/pids/proxyd.pid")
  sleep 1   # login processes are forked after the listeners open
  echo "proxyd tree: $(for p in $(tree_pids); do printf '%s(%s) ' "$p" "$(cat /proc/"$p"/comm)"; done)" >> "$OUT/loadgen.txt"
}
ticks() { # utime stime of the tree, reaped children included (1/100 s)
  local p u=0 s=0 a b c d
  for p in $(tree_pids); do
    read -r a b c d < <(awk '{print $14, $15, $16, $17}' "/proc/$p/stat" 2>/dev/null) || continue
    u=$((u + a + c)); s=$((s + b + d))
  done
  echo "$u $s"
}

rm -f "$RUN/logs/proxyd.log"
log "backend"
backend_start || exit 1
timeout 120 "$LG" -mode warm -proto imap -addr "127.0.0.1:$BACKEND_IMAP" >/dev/null
start_proxyd

# ---------------------------------------------------------------- 0. user/system split, no profiler
plain_phase() { # name loadgen-args...
  local name=$1 a b; shift
  a=$(ticks)
  lg "$name" "$@" -roots "$PID"
  b=$(ticks)
  echo "$name: proxyd tree utime stime ticks before=($a) after=($b) (1 tick = 10 ms)" | tee -a "$OUT/cpu-split.txt" >&2
}
if want plain; then
  log "plain: login, relay1 (utime/stime)"
  plain_phase plain-login -mode login -c 32 -d "$LOGIN_D"
  plain_phase plain-relay1 -mode relay -c 1 -d "$RELAY_D"
fi

# ---------------------------------------------------------------- 1. perf
if want perf && command -v perf >/dev/null; then
  perf_phase() { # name secs loadgen-args...
    local name=$1 secs=$2; shift 2
    perf record -F 999 -g -p "$(tree_pids | paste -sd,)" -o "$OUT/$name.perf.data" -- sleep "$secs" >/dev/null 2>&1 &
    BGPID=$!
    sleep 0.5
    lg "$name" "$@" -roots "$PID"
    wait "$BGPID"; BGPID=
    perf report -i "$OUT/$name.perf.data" --stdio --no-children --sort comm,dso -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -30 > "$OUT/$name.perf-dso.txt"
    perf report -i "$OUT/$name.perf.data" --stdio --no-children --sort sym -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -80 > "$OUT/$name.perf-sym.txt"
    rm -f "$OUT/$name.perf.data"
  }
  log "perf: login, relay1"
  perf_phase perf-login 8 -mode login -c 32 -d 7s
  perf_phase perf-relay1 8 -mode relay -c 1 -d 7s
fi

# ---------------------------------------------------------------- 2. strace -c
if want strace && command -v strace >/dev/null; then
  strace_phase() { # name loadgen-args...   (one strace -c per process of the tree)
    local name=$1 p pids=(); shift
    for p in $(tree_pids); do
      strace -c -f -p "$p" -o "$OUT/$name.strace.$(tr -c 'a-z0-9\n' '_' < /proc/"$p"/comm | tr -d '\n').$p.txt" 2>/dev/null &
      pids+=($!)
    done
    sleep 1
    lg "$name" "$@"
    kill -INT "${pids[@]}"; wait "${pids[@]}"
    for p in "$OUT/$name".strace.*.txt; do
      printf '%-60s %s\n' "$(basename "$p")" "$(awk '/ total$/ {print $4 " calls" (NF == 6 ? ", " $5 " errors" : "")}' "$p")"
    done > "$OUT/$name.strace-summary.txt"
  }
  log "strace -c: login, noop, relay1"
  strace_phase strace-login -mode login -c 32 -d 3s
  strace_phase strace-noop -mode noop -n 2000
  strace_phase strace-relay1 -mode relay -c 1 -d 3s
fi

# ---------------------------------------------------------------- 3. py-spy
spy_phase() { # name loadgen-args...
  local name=$1; shift
  "$PYSPY" record --pid "$PID" --subprocesses --rate 1000 --nonblocking --format raw \
    --output "$OUT/$name.folded" >"$OUT/$name.pyspy.log" 2>&1 &
  BGPID=$!
  sleep 1
  lg "$name" "$@" -roots "$PID"
  kill -INT "$BGPID"; wait "$BGPID"; BGPID=
  python3 "$HERE/pyspy_top.py" "$OUT/$name.folded" > "$OUT/$name.top.txt"
}
if want pyspy; then
  log "py-spy: login, noop, relay1"
  # py-spy cannot read a chrooted process's binary: restart without the login chroot
  t_proxyd_stop
  PROXYD_LOGIN_EXTRA="chroot =" start_proxyd
  spy_phase pyspy-login -mode login -c 32 -d "$LOGIN_D"
  spy_phase pyspy-noop -mode noop -n "$NOOP_N"
  spy_phase pyspy-relay1 -mode relay -c 1 -d "$RELAY_D"
fi
t_proxyd_stop

# ---------------------------------------------------------------- 4. cProfile in the login processes
if want cprofile; then
  log "cProfile: login"
  PROXYD_CMD="$PY $HERE/probe.py cprofile $OUT" start_proxyd
  LOGINS=$(login_pids)
  kill -USR1 $LOGINS   # enable
  lg cprofile-login -mode login -c 32 -d "$LOGIN_D" -roots "$PID"
  kill -USR1 $LOGINS   # disable + write
  sleep 1
  t_proxyd_stop
  n=$(grep 'label=cprofile-login ' "$OUT/loadgen.txt" | tail -1 | sed 's/.* logins=\([0-9]*\).*/\1/')
  "$PY" "$HERE/cprofile_summary.py" "$OUT" "${n:-1}" > "$OUT/cprofile-login.txt"
fi

# ---------------------------------------------------------------- 5. tracemalloc, idle sessions
if want heap; then
  log "tracemalloc: $IDLE_K idle sessions"
  PROXYD_CMD="$PY $HERE/probe.py heap $OUT" start_proxyd
  LOGINS=$(login_pids)
  kill -USR1 $LOGINS   # baseline
  sleep 1
  lg idle-tracemalloc -mode idle -k "$IDLE_K" -hold 40s -ramp 64 -roots "$PID" &
  LGPID=$!
  # snapshot mid-hold, once every session is open (a snapshot blocks a process's event
  # loop for a while, so taking it while sessions still open would cause timeouts)
  wait_open
  kill -USR1 $LOGINS
  wait "$LGPID"
  t_proxyd_stop
fi

# ---------------------------------------------------------------- 6. relay with a crowd of idle sessions
if want crowd; then
  log "crowd: relay1 alone, then beside $IDLE_K idle sessions"
  start_proxyd
  lg crowd-relay1-alone -mode relay -c 1 -d "$RELAY_D" -roots "$PID"
  lg crowd-idle -mode idle -k "$IDLE_K" -hold 40s -ramp 64 -roots "$PID" &
  LGPID=$!
  LOGINS=$(login_pids)
  wait_open
  lg crowd-relay1-beside-idle -mode relay -c 1 -d "$RELAY_D" -roots "$PID"
  wait "$LGPID"
  t_proxyd_stop
fi

gzip -c "$RUN/logs/proxyd.log" > "$OUT/proxyd.log.gz"
log "results in $OUT"
