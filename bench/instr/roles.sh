#!/usr/bin/env bash
# bench/instr/roles.sh - CPU per high-security login by process role, no valgrind.
#
#   N=300 bench/instr/roles.sh TREE
#   MODE=hp CONC=8 N=3000 bench/instr/roles.sh TREE   # high-performance mode, 8 clients at once
#   EXTRA="proxyd_plaintext_handoff = no" bench/instr/roles.sh TREE   # lines added to the config
#
# cpu.sh's set-up (the rig's backend in a private network namespace, HS IMAP logins one at
# a time, login processes chrooted, proxyd in its own cgroup v1 cpuacct); TREE may be a
# checkout or a compiled build's site directory.  After 20 warm-up logins it reads, before
# and after N logins, the CPU time (/proc/PID/schedstat, user + kernel, ns) of every
# long-lived process (master, zygote, auth, relay) and the cgroup's total; what is left is
# the login processes' (forked and reaped within the run); and the own minor page faults
# (/proc/PID/stat) of each long-lived process (the zygote's: its loop's writes after each fork).  CPU time depends on the
# machine's load: compare trees in alternating runs.  Needs root and the rig's setup.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-300}
MODE=${MODE:-hs}
CONC=${CONC:-1}
PY=${PY:-/work/main/.venv/bin/python}
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then exec env BENCH_IN_NETNS=1 TREE="$1" unshare -n -- "$0"; fi
# shellcheck source=bench/instr/lib.sh
source "$HERE/lib.sh"
ip link set lo up
o=$(mktemp -d /tmp/proxyd-roles.XXXXXX)
instr_backend "$o"
instr_proxyd_conf "$o" "$MODE" imap chrooted
if [ -n "${EXTRA:-}" ]; then echo "$EXTRA" >> "$o/proxyd.conf"; fi
cg=proxyd-roles-$$
mkdir "/sys/fs/cgroup/cpuacct/$cg"
( echo "$BASHPID" > "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs"
  cd "$o"; PYTHONHASHSEED=0 PYTHONPATH=$TREE exec "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 ) &
m=$!
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/20071) 2>/dev/null && break; sleep 0.2; done
sleep 2
"$PY" "$HERE/login_client.py" imap 20071 20 1 0 > /dev/null
sleep 1.5
snapshot() {  # "role ns faults" lines: the cgroup's total, then each process by its title
  echo "total $(cat "/sys/fs/cgroup/cpuacct/$cg/cpuacct.usage") 0"
  for p in $(cat "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs"); do
    title=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null) || continue
    case $title in "proxyd: "*) role=${title#proxyd: }; role=${role%% *} ;; *) role=master ;; esac
    # its own minor page faults: field 10 of /proc/PID/stat, the 8th after the ")" of its name
    faults=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f8) || faults=0
    echo "$role $(cut -d' ' -f1 "/proc/$p/schedstat" 2>/dev/null || echo 0) ${faults:-0}"
  done
}
snapshot > "$o/before.txt"
"$PY" "$HERE/login_client.py" imap 20071 "$N" "$CONC" 0
sleep 1.5
snapshot > "$o/after.txt"
kill -TERM "$m"; wait "$m" || true
kill "$(cat "$o/backend/run/master.pid")"
"$PY" - "$o/before.txt" "$o/after.txt" "$N" "$TREE" "${MODE^^}" <<'PY'
import collections, sys
def read(path):
    found, faults = collections.Counter(), collections.Counter()
    for line in open(path):
        role, ns, flt = line.split()
        found[role] += int(ns)
        faults[role] += int(flt)
    return found, faults
(before, fb), (after, fa), n = read(sys.argv[1]), read(sys.argv[2]), int(sys.argv[3])
rest = after["total"] - before["total"]
parts = []
for role in sorted(after):
    if role != "total":
        ns = after[role] - before.get(role, 0)
        rest -= ns
        parts.append(f"{role} {ns / n / 1e6:.2f}")
parts.append(f"login processes {rest / n / 1e6:.2f}")
print(f"{sys.argv[4]}: CPU ms per {sys.argv[5]} IMAP login: " + ", ".join(parts)
      + f"; total {(after['total'] - before['total']) / n / 1e6:.2f}")
print(f"{sys.argv[4]}: own page faults per {sys.argv[5]} IMAP login: "
      + ", ".join(f"{role} {(fa[role] - fb.get(role, 0)) / n:.1f}" for role in sorted(fa) if role != "total"))
PY
rmdir "/sys/fs/cgroup/cpuacct/$cg"; rm -rf "$o"
