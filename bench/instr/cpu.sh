#!/usr/bin/env bash
# bench/instr/cpu.sh - CPU seconds (user + kernel) and page faults per login, no valgrind.
#
#   MODE=hs N1=50 N2=250 bench/instr/cpu.sh TREE [TREE...]
#
# The companion of run.sh for what instruction counts miss: the kernel's share (fork,
# page-table copies, copy-on-write faults, syscalls).  proxyd runs in its own cgroup
# (v1 cpuacct + memory), so every process of its tree counts, reaped or not; the
# figures per login are (run N2 - run N1) / (N2 - N1), IMAP logins only, one client
# at a time (CONC), the rig's backend in a private network namespace as run.sh.  CPU
# seconds depend on the machine's load (caches, frequency): compare trees in the same
# invocation, REPEAT times alternating (default 2).  Needs root and the rig's setup.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/lib.sh"
N1=${N1:-50} N2=${N2:-250} CONC=${CONC:-1} MODE=${MODE:-hs} REPEAT=${REPEAT:-2}
OUT=${OUT:-/tmp/proxyd-cpu}
PY=${PY:-/work/main/.venv/bin/python}
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  mkdir -p "$OUT"
  for r in $(seq 1 "$REPEAT"); do
    for tree in "$@"; do
      for n in "$N1" "$N2"; do
        env BENCH_IN_NETNS=1 TREE="$tree" N="$n" CONC="$CONC" MODE="$MODE" RUN="$r" unshare -n -- "$0"
      done
      "$PY" - "$OUT" "$tree" "$N1" "$N2" "$r" <<'PY'
import sys
out, tree, n1, n2, r = sys.argv[1], sys.argv[2].rstrip("/").rsplit("/", 1)[-1], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def read(n):
    with open(f"{out}/{tree}-{n}-{r}.txt") as f:
        return dict((k, float(v)) for k, v in (line.split() for line in f))
a, b = read(n1), read(n2)
d = {k: (b[k] - a[k]) / (n2 - n1) for k in b}
print(f"{tree} run {r}: per IMAP login: CPU {d['usage_ns'] / 1e6:.2f} ms "
      f"(user {d['user_ns'] / 1e6:.2f}, sys {d['sys_ns'] / 1e6:.2f}), "
      f"page faults {d['pgfault']:.0f}")
PY
    done
  done
  exit 0
fi
ip link set lo up
name=$(basename "$TREE")
o=$OUT/run-$name-$N
instr_backend "$o"
# the deployed shape: login processes chrooted (Dovecot's default chroot = login)
instr_proxyd_conf "$o" "$MODE" imap chrooted
cg=proxyd-cpu-$$
for c in cpuacct memory; do mkdir "/sys/fs/cgroup/$c/$cg"; done
( for c in cpuacct memory; do echo "$BASHPID" > "/sys/fs/cgroup/$c/$cg/cgroup.procs"; done
  PYTHONHASHSEED=0 PYTHONPATH=$TREE exec "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 ) &
m=$!
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/20071) 2>/dev/null && break; sleep 0.2; done
sleep 2
"$PY" "$HERE/login_client.py" imap 20071 "$N" "$CONC" 0
sleep 1.5  # the last child's exit
kill -TERM "$m"; wait "$m" || true
kill "$(cat "$o/backend/run/master.pid")"
{
  echo "usage_ns $(cat /sys/fs/cgroup/cpuacct/$cg/cpuacct.usage)"
  echo "user_ns $(cat /sys/fs/cgroup/cpuacct/$cg/cpuacct.usage_user)"
  echo "sys_ns $(cat /sys/fs/cgroup/cpuacct/$cg/cpuacct.usage_sys)"
  awk '$1 == "total_pgfault" {print "pgfault", $2}' /sys/fs/cgroup/memory/$cg/memory.stat
} > "$OUT/$name-$N-$RUN.txt"
for c in cpuacct memory; do rmdir "/sys/fs/cgroup/$c/$cg"; done
