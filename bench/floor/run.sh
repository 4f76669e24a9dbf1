#!/usr/bin/env bash
# bench/floor/run.sh - CPU per IMAP login of the Python + Trio floor (floor.py) beside
# proxyd and Dovecot's proxy, high-performance and high-security, in one run.
#
#   bench/floor/run.sh                       # ROUNDS=2 C=32 D=5s, every target below
#   PROXYD_SITE=DIR bench/floor/run.sh       # proxyd from DIR (a pip --target directory)
#   TARGETS="dovecot_hp floor-hp-raw" ROUNDS=3 bench/floor/run.sh
#   STRACE=200 ROUNDS=1 bench/floor/run.sh   # system calls per login instead (strace -f -c)
#
# Each (round, target) runs in its own private network namespace with a fresh copy of the
# rig's Dovecot backend (bench/instr/lib.sh): the target starts in its own cgroup (v1
# cpuacct + memory, as bench/instr/cpu.sh: every process of its tree counts, reaped
# children too, kernel time included), takes 1 s of warm-up logins, then the rig's load
# generator logs in C clients at a time for D (the rig's login scenario: LOGIN, LOGOUT,
# read to the close).  Per login = the cgroup's CPU and page faults over that window
# divided by the logins the load generator counted; the rig's own figure (utime + stime
# of the tree, /proc) is printed beside it.  Targets alternate within a round; the
# table is the median over rounds.  Results: $OUT/raw.txt and $OUT/table.md.
#
# Targets: direct (the backend itself: the logins/s reference), dovecot_hp / dovecot_hs
# (the rig's configs, ../shared/bench: /tmp/bench-run/conf/proxy-h[ps].conf), proxyd_hp /
# proxyd_hs (bench/instr/lib.sh's config, chrooted, IMAP + POP3 as the rig's; the
# mypyc-compiled build of PROXYD_TREE, built here as bench/instr/run.sh's MYPYC=1 does,
# unless PROXYD_SITE names one), and floor-MODE-IO[-auth] (floor.py's variants).
# Needs root and the rig's setup (../shared/bench/setup.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/../instr/lib.sh"
ROUNDS=${ROUNDS:-2} C=${C:-32} D=${D:-5s}
OUT=${OUT:-/tmp/proxyd-floor}
PY=${PY:-/work/main/.venv/bin/python}
LG=${LG:-/tmp/bench-run/bin/loadgen}
TARGETS=${TARGETS:-"direct dovecot_hp proxyd_hp floor-hp-stream floor-hp-raw floor-hp-stream-auth floor-hp-raw-auth
  dovecot_hs proxyd_hs floor-hs-stream floor-hs-raw floor-hs_exit-stream floor-hs_exit-raw floor-hs_exit-stream-auth
  floor-hs_exit-raw-auth"}

if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  mkdir -p "$OUT"
  if [ -z "${PROXYD_SITE:-}" ]; then
    tree=${PROXYD_TREE:-/work/main} dir=$OUT/build
    build_compiled "$tree" "$dir"
    echo "proxyd: $(git -C "$tree" rev-parse --short HEAD) of $tree, compiled" > "$OUT/source.txt"
    PROXYD_SITE=$dir/site
  fi
  compiled=$(find "$PROXYD_SITE/proxyd" -name '*.so' | wc -l)
  echo "proxyd site: $PROXYD_SITE ($compiled compiled modules)" | tee -a "$OUT/source.txt" >&2
  : > "$OUT/raw.txt"
  for r in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
      echo "# $(date -u +%H:%M:%S) round $r $t load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/raw.txt"
      env BENCH_IN_NETNS=1 T="$t" R="$r" PROXYD_SITE="$PROXYD_SITE" unshare -n -- "$0" >> "$OUT/raw.txt"
      tail -1 "$OUT/raw.txt" >&2
    done
  done
  "$PY" "$HERE/summary.py" "$OUT/raw.txt" | tee "$OUT/table.md"
  exit 0
fi

ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="20500 29999"
o=$OUT/ns-$T
instr_backend "$o"
until (echo > /dev/tcp/127.0.0.1/20143) 2>/dev/null; do sleep 0.1; done
cg=proxyd-floor-$$
for c in cpuacct memory; do mkdir "/sys/fs/cgroup/$c/$cg"; done
port=20071 root=""
trap stop EXIT
# stop (also on an error): the root by its pid, then whatever of the target's tree is left
# in its cgroup, the backend
stop() {
  if [ -n "$root" ]; then kill -TERM "$root" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do [ -s "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs" ] || break; sleep 0.1; done
  for _ in $(seq 1 20); do
    pids=$(cat "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs")
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true; sleep 0.1
  done
  kill "$(cat "$o/backend/run/master.pid")" 2>/dev/null || true
  for c in cpuacct memory; do rmdir "/sys/fs/cgroup/$c/$cg" 2>/dev/null || true; done
}
# in_cgroup CMD...: CMD started in the background inside the target's cgroup
in_cgroup() {
  ( for c in cpuacct memory; do echo "$BASHPID" > "/sys/fs/cgroup/$c/$cg/cgroup.procs"; done
    exec "$@" ) &
}
case $T in
  direct) port=20143 ;;
  dovecot_h[ps])
    port=$([ "$T" = dovecot_hp ] && echo 20343 || echo 20243)
    sed -e "s#^base_dir = .*#base_dir = $o/proxy/run#; s#^state_dir = .*#state_dir = $o/proxy/state#; s#^log_path = .*#log_path = $o/proxy.log#" \
      "/tmp/bench-run/conf/proxy-${T#dovecot_}.conf" > "$o/proxy.conf"
    in_cgroup dovecot -c "$o/proxy.conf"; wait $!
    until [ -s "$o/proxy/run/master.pid" ]; do sleep 0.1; done
    root=$(cat "$o/proxy/run/master.pid") ;;
  proxyd_h[ps])
    instr_proxyd_conf "$o" "${T#proxyd_}" "imap pop3" chrooted
    # from $o: `python -m` puts the current directory first on sys.path
    cd "$o"; PYTHONHASHSEED=0 PYTHONPATH=$PROXYD_SITE in_cgroup "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1
    root=$!; cd - > /dev/null ;;
  floor-*)
    # floor-MODE-IO[-auth][-heavy]: -heavy imports proxyd's modules first (floor.py FLOOR_HEAVY)
    heavy=0; t=$T; if [ "${t%-heavy}" != "$t" ]; then heavy=1; t=${t%-heavy}; fi
    IFS=- read -r _ mode io auth <<< "$t"
    FLOOR_HEAVY=$heavy PYTHONPATH=$PROXYD_SITE in_cgroup "$PY" "$HERE/floor.py" "$mode" "$io" "$([ -n "$auth" ] && echo unix || echo none)" "$port"
    root=$! ;;
esac
for _ in $(seq 1 600); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sleep 1
broot=$(cat "$o/backend/run/master.pid")
lg=("$LG" -mode login -proto imap -addr "127.0.0.1:$port" -c "$C" -label "$T" -max-wall 120s)
"${lg[@]}" -d 1s > /dev/null  # warm-up
read_cg() {
  echo "$(cat /sys/fs/cgroup/cpuacct/$cg/cpuacct.usage_user) $(cat /sys/fs/cgroup/cpuacct/$cg/cpuacct.usage_sys)" \
    "$(awk '$1 == "total_pgfault" {print $2}' /sys/fs/cgroup/memory/$cg/memory.stat)"
}
if [ -n "${STRACE:-}" ]; then
  # system calls per login instead: strace attached to every process of the target's
  # cgroup (following their forks) over STRACE logins, one client at a time
  if [ -n "$root" ]; then
    # shellcheck disable=SC2046
    strace -f -c -o "$o/strace.txt" $(sed 's/^/-p /' "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs") 2> /dev/null &
    st=$!; sleep 1
  fi
  "$PY" "$HERE/../instr/login_client.py" imap "$port" "$STRACE" 1 0 2> /dev/null
  sleep 0.5
  if [ -n "$root" ]; then kill -INT "$st"; wait "$st" || true; fi
  awk -v t="$T" -v n="$STRACE" '$NF == "total" {c = $4; e = NF == 6 ? $5 : 0}
    END {printf "label=%s strace_logins=%d syscalls=%.1f failed=%.1f\n", t, n, c / n, e / n}' "$o/strace.txt" 2> /dev/null ||
    echo "label=$T strace_logins=$STRACE syscalls=0 failed=0"
else
# the CPU of processes outside this namespace (other work on the machine), once a second
"$LG" -mode monitor -d 1s -user $$ -max-wall 120s > "$o/monitor.txt" &
mon=$!
read -r u0 s0 f0 <<< "$(read_cg)"
line=$("${lg[@]}" -d "$D" -roots "$root" -backend-roots "$broot")
sleep 0.5  # the last high-security children's exit
read -r u1 s1 f1 <<< "$(read_cg)"
kill "$mon"; wait "$mon" 2>/dev/null || true
other=$(awk -F'other_cores=' 'NF > 1 {split($2, a, " "); s += a[1]; n++} END {printf "%.2f", n ? s / n : 0}' "$o/monitor.txt")
echo "round=$R user_ns=$((u1 - u0)) sys_ns=$((s1 - s0)) pgfault=$((f1 - f0)) other_cores=$other $line"
fi
