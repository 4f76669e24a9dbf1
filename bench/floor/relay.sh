#!/usr/bin/env bash
# bench/floor/relay.sh - what a proxied session costs after its login: NOOP latency added
# over direct, and FETCH of the 10 MB message with 1 and 8 sessions (MB/s, x direct, the
# proxy's CPU per relayed MB), for floor.py's relay variants beside proxyd and Dovecot's
# proxy, in one run.
#
#   bench/floor/relay.sh                     # ROUNDS=3 NOOPS=3000 RELAY_D=4s, every target
#   PROXYD_SITE=DIR bench/floor/relay.sh     # proxyd from DIR (a pip --target directory)
#   TARGETS="direct dovecot_hp floor-hp-raw" ROUNDS=5 bench/floor/relay.sh
#
# One private network namespace with the rig's Dovecot backend (bench/instr/lib.sh) and
# every target started at once, each in a cgroup of its own (cpuacct: every process of its
# tree, kernel time included), on a port of its own: direct (the backend), dovecot_hp (the
# rig's config, /tmp/bench-run/conf/proxy-hp.conf), proxyd_hp (bench/instr/lib.sh's config,
# HP, IMAP + POP3, chrooted; the mypyc-compiled build of PROXYD_TREE as run.sh builds it,
# unless PROXYD_SITE names one) and floor-MODE-IO (floor.py without the auth hop, which a
# session no longer uses after its login: hp one process, hp2 two on the listener as
# proxyd's and Dovecot's process_min_avail = 2; IO stream, raw or splice).  Then ROUNDS
# rounds; in each, per scenario, every target in turn (the order rotates per round):
#   noop   the rig's client (loadgen -mode noop): one logged-in IMAP session, 100 warm-up
#          NOOPs, then NOOPS sequential NOOP round trips; p50 / p99, and the target's CPU
#          per NOOP (its cgroup over the call / (NOOPS + 100));
#   fetch1 / fetch8  loadgen -mode relay: 1 or 8 sessions of user bigmsg (the rig's 10 MB
#          message, read-only) doing FETCH 1 BODY.PEEK[] for RELAY_D; MB/s and the
#          target's CPU per MB (its cgroup over the call / MB relayed; its kernel part
#          from cpuacct.usage_sys).
# The backend's tree and the client (loadgen) are in cgroups of their own too: their CPU
# per MB says how much of the 2 cores a relayed MB leaves them.  The rig's monitor samples
# the CPU of everything outside the namespace (other work on the machine) every 2 s.
# Added latency and x direct are taken against direct in the same round; the summary
# (relay_summary.py) gives medians over rounds.  Results: $OUT/raw.txt, $OUT/table.md.
# Needs root and the rig's setup (../shared/bench/setup.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/../instr/lib.sh"
ROUNDS=${ROUNDS:-3} NOOPS=${NOOPS:-3000} RELAY_D=${RELAY_D:-4s}
OUT=${OUT:-/tmp/proxyd-floor-relay}
PY=${PY:-/work/main/.venv/bin/python}
LG=${LG:-/tmp/bench-run/bin/loadgen}
TARGETS=${TARGETS:-"direct dovecot_hp proxyd_hp floor-hp-stream floor-hp-raw floor-hp-splice
  floor-hp2-stream floor-hp2-raw floor-hp2-splice"}

if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  mkdir -p "$OUT"
  if [ -z "${PROXYD_SITE:-}" ]; then
    tree=${PROXYD_TREE:-/work/main}
    echo "proxyd: $(git -C "$tree" rev-parse --short HEAD) of $tree, compiled" > "$OUT/source.txt"
    build_compiled "$tree" "$OUT/build"
    PROXYD_SITE=$OUT/build/site
  fi
  echo "proxyd site: $PROXYD_SITE ($(find "$PROXYD_SITE/proxyd" -name '*.so' | wc -l) compiled modules)" |
    tee -a "$OUT/source.txt" >&2
  # shellcheck disable=SC2086
  env BENCH_IN_NETNS=1 PROXYD_SITE="$PROXYD_SITE" unshare -n -- "$0" | tee "$OUT/raw.txt"
  "$PY" "$HERE/relay_summary.py" "$OUT/raw.txt" | tee "$OUT/table.md"
  exit 0
fi

ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="20500 29999"
o=$OUT/ns
instr_backend "$o"
until (echo > /dev/tcp/127.0.0.1/20143) 2>/dev/null; do sleep 0.1; done
declare -A port cg root
mon=""
cleanup() {
  local t pids
  if [ -n "$mon" ]; then kill "$mon" 2>/dev/null || true; fi
  for t in "${!root[@]}"; do kill -TERM "${root[$t]}" 2>/dev/null || true; done
  sleep 1
  for t in "${!cg[@]}"; do
    for _ in $(seq 1 20); do
      pids=$(cat "/sys/fs/cgroup/cpuacct/${cg[$t]}/cgroup.procs")
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true; sleep 0.1
    done
    rmdir "/sys/fs/cgroup/cpuacct/${cg[$t]}" 2>/dev/null || true
  done
  kill "$(cat "$o/backend/run/master.pid")" 2>/dev/null || true
}
trap cleanup EXIT
# in_cgroup T CMD...: CMD started in the background inside T's cgroup
in_cgroup() {
  local t=$1; shift
  ( echo "$BASHPID" > "/sys/fs/cgroup/cpuacct/${cg[$t]}/cgroup.procs"; exec "$@" ) &
}
# the backend's tree (its login and imap processes are forked by its master) and the client
for t in backend client; do
  cg[$t]=proxyd-floor-relay-$$-$t
  mkdir "/sys/fs/cgroup/cpuacct/${cg[$t]}"
done
# the master first (what it forks from now on follows it), then the children it had
bm=$(cat "$o/backend/run/master.pid")
echo "$bm" > "/sys/fs/cgroup/cpuacct/${cg[backend]}/cgroup.procs"
sleep 0.5
for pid in $(ps -o pid= --ppid "$bm"); do echo "$pid" > "/sys/fs/cgroup/cpuacct/${cg[backend]}/cgroup.procs"; done
# lg ARGS...: the load generator in the client's cgroup (called in a command substitution)
lg() { echo "$BASHPID" > "/sys/fs/cgroup/cpuacct/${cg[client]}/cgroup.procs"; exec "$LG" "$@"; }
n=0
for t in $TARGETS; do
  n=$((n + 1))
  [ "$t" = direct ] && { port[$t]=20143; continue; }
  cg[$t]=proxyd-floor-relay-$$-$n
  mkdir "/sys/fs/cgroup/cpuacct/${cg[$t]}"
  case $t in
    dovecot_hp)
      port[$t]=20343
      sed -e "s#^base_dir = .*#base_dir = $o/proxy/run#; s#^state_dir = .*#state_dir = $o/proxy/state#; s#^log_path = .*#log_path = $o/proxy.log#" \
        /tmp/bench-run/conf/proxy-hp.conf > "$o/proxy.conf"
      in_cgroup "$t" dovecot -c "$o/proxy.conf"; wait $!
      until [ -s "$o/proxy/run/master.pid" ]; do sleep 0.1; done
      root[$t]=$(cat "$o/proxy/run/master.pid") ;;
    proxyd_hp)
      port[$t]=20071
      mkdir -p "$o/proxyd"; chmod 1777 "$o/proxyd"
      instr_proxyd_conf "$o/proxyd" hp "imap pop3" chrooted
      # from its directory: `python -m` puts the current directory first on sys.path
      cd "$o/proxyd"
      PYTHONHASHSEED=0 PYTHONPATH=$PROXYD_SITE in_cgroup "$t" "$PY" -m proxyd -c "$o/proxyd/proxyd.conf" > "$o/proxyd/proxyd.log" 2>&1
      root[$t]=$!; cd - > /dev/null ;;
    floor-*)
      port[$t]=$((20080 + n))
      IFS=- read -r _ mode io <<< "$t"
      in_cgroup "$t" "$PY" "$HERE/floor.py" "$mode" "$io" none "${port[$t]}"
      root[$t]=$! ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
for t in $TARGETS; do
  for _ in $(seq 1 600); do (echo > "/dev/tcp/127.0.0.1/${port[$t]}") 2>/dev/null && break; sleep 0.1; done
done
sleep 2
# usage T [_sys]: T's CPU (ns) so far, all or its kernel part
usage() { if [ "$1" = direct ]; then echo 0; else cat "/sys/fs/cgroup/cpuacct/${cg[$1]}/cpuacct.usage${2:-}"; fi; }
# the message's indexes, once; every target's first sessions (a warm-up the rounds do not count)
"$LG" -mode relay -proto imap -addr 127.0.0.1:20143 -c 1 -d 1s -user bigmsg > /dev/null
for t in $TARGETS; do
  "$LG" -mode noop -proto imap -addr "127.0.0.1:${port[$t]}" -n 200 -user user0100 > /dev/null
  "$LG" -mode relay -proto imap -addr "127.0.0.1:${port[$t]}" -c 2 -d 1s -user bigmsg > /dev/null
done
"$LG" -mode monitor -d 2s -user $$ -max-wall 900s > "$o/monitor.txt" &
mon=$!
read -r -a order <<< "$(echo $TARGETS)"
for r in $(seq 1 "$ROUNDS"); do
  for s in noop fetch1 fetch8; do
    for i in $(seq 0 $((${#order[@]} - 1))); do
      t=${order[$(( (i + r - 1) % ${#order[@]} ))]}
      common=(-proto imap -addr "127.0.0.1:${port[$t]}" -label "$t" -max-wall 120s)
      load=$(cut -d' ' -f1 /proc/loadavg)
      u0=$(usage "$t") k0=$(usage "$t" _sys) b0=$(usage backend) c0=$(usage client)
      case $s in
        noop) line=$(lg -mode noop "${common[@]}" -n "$NOOPS" -user "$(printf user%04d "$r")") ;;
        fetch*) line=$(lg -mode relay "${common[@]}" -c "${s#fetch}" -d "$RELAY_D" -user bigmsg) ;;
      esac
      echo "round=$r scenario=$s load=$load cg_cpu_ns=$(( $(usage "$t") - u0 )) cg_sys_ns=$(( $(usage "$t" _sys) - k0 ))" \
        "backend_cpu_ns=$(( $(usage backend) - b0 )) client_cpu_ns=$(( $(usage client) - c0 )) $line"
    done
  done
done
kill "$mon"; wait "$mon" 2>/dev/null || true; mon=""
awk -F'other_cores=' 'NF > 1 {split($2, a, " "); print a[1]}' "$o/monitor.txt" | sort -n |
  awk '{v[NR] = $1} END {if (NR) printf "monitor other_cores_median=%.2f other_cores_max=%.2f samples=%d\n", v[int((NR + 1) / 2)], v[NR], NR}'
