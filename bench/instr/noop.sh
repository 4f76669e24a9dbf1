#!/usr/bin/env bash
# bench/instr/noop.sh - the latency proxyd adds to each command of a proxied session, and
# its CPU per relayed MB, without the shared rig.
#
#   ROUNDS=5 NOOPS=3000 bench/instr/noop.sh TREE [TREE...]
#
# In a private network namespace: the rig's Dovecot backend (lib.sh) and one proxyd per
# TREE (HP mode, IMAP and POP3, the rig's settings), then ROUNDS interleaved rounds of the
# rig's own client (loadgen, built by the rig's setup): NOOP round trips of one logged-in
# session, IMAP and POP3, direct to the backend and through each proxyd; then FETCH of the
# 10 MB message with one session for RELAY_SECS, direct and through each tree, with
# proxyd's CPU per relayed MB (utime + stime of its process tree, as the rig counts it).
# Prints every loadgen line and a summary: the median over rounds of each target's p50 /
# p99 and of the p50 added over direct in the same round.  Needs root and the rig's setup.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/lib.sh"
ROUNDS=${ROUNDS:-5} NOOPS=${NOOPS:-3000} RELAY_SECS=${RELAY_SECS:-4} RELAY_ROUNDS=${RELAY_ROUNDS:-2}
OUT=${OUT:-/tmp/proxyd-noop}
PY=${PY:-/work/main/.venv/bin/python}
LOADGEN=${LOADGEN:-/tmp/bench-run/bin/loadgen}
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  mkdir -p "$OUT"
  env BENCH_IN_NETNS=1 unshare -n -- "$0" "$@" | tee "$OUT/raw.txt"
  "$PY" "$HERE/noop_summary.py" "$OUT/raw.txt" | tee "$OUT/summary.txt"
  exit 0
fi
ip link set lo up
o=$OUT/run
instr_backend "$o"
pids=() labels=() cgs=()
i=0
for tree in "$@"; do
  i=$((i + 1))
  d=$o/p$i
  mkdir -p "$d"; chmod 1777 "$d"
  instr_proxyd_conf "$d" hp "imap pop3" chrooted
  sed -i -e "s/port = 20071/port = 2${i}171/; s/port = 20072/port = 2${i}172/" "$d/proxyd.conf"
  # each proxyd in a cgroup of its own: CPU (user + kernel, ns) of its whole tree per NOOP
  cg=proxyd-noop-$$-$i
  mkdir "/sys/fs/cgroup/cpuacct/$cg"
  # started from its directory: `python -m` puts the current directory first on sys.path
  ( echo "$BASHPID" > "/sys/fs/cgroup/cpuacct/$cg/cgroup.procs"
    cd "$d"
    PYTHONHASHSEED=0 PYTHONPATH=$tree exec "$PY" -m proxyd -c "$d/proxyd.conf" > "$d/proxyd.log" 2>&1 ) &
  pids+=("$!") cgs+=("$cg")
  labels+=("t$i:$tree")
done
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  kill "$(cat "$o/backend/run/master.pid")" 2>/dev/null || true
  for c in "${cgs[@]}"; do rmdir "/sys/fs/cgroup/cpuacct/$c" 2>/dev/null || true; done
}
usage() { cat "/sys/fs/cgroup/cpuacct/${cgs[$(($1 - 1))]}/cpuacct.usage"; }
trap cleanup EXIT
for i in $(seq 1 "${#pids[@]}"); do
  for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/2${i}171") 2>/dev/null && break; sleep 0.2; done
done
sleep 2
for i in $(seq 1 "${#pids[@]}"); do echo "target t$i = ${labels[$((i - 1))]}"; done
# the message's indexes, once
"$LOADGEN" -mode relay -proto imap -addr 127.0.0.1:20143 -c 1 -d 1s -user bigmsg > /dev/null
for r in $(seq 1 "$ROUNDS"); do
  for proto in imap pop3; do
    port_d=$([ "$proto" = imap ] && echo 20143 || echo 20110)
    suffix=$([ "$proto" = imap ] && echo 171 || echo 172)
    echo "round=$r $("$LOADGEN" -mode noop -proto "$proto" -addr "127.0.0.1:$port_d" -n "$NOOPS" -label direct -user "$(printf user%04d "$r")")"
    for i in $(seq 1 "${#pids[@]}"); do
      u0=$(usage "$i")
      line=$("$LOADGEN" -mode noop -proto "$proto" -addr "127.0.0.1:2$i$suffix" -n "$NOOPS" -label "t$i" -user "$(printf user%04d "$r")")
      # the session's login, 100 warm-up NOOPs and its LOGOUT count too (~1 % of the total)
      echo "round=$r $line proxy_cpu_ns_per_noop=$(( ($(usage "$i") - u0) / (NOOPS + 100) ))"
    done
  done
done
for r in $(seq 1 "$RELAY_ROUNDS"); do
  echo "round=$r $("$LOADGEN" -mode relay -proto imap -addr 127.0.0.1:20143 -c 1 -d "${RELAY_SECS}s" -user bigmsg -label direct)"
  for i in $(seq 1 "${#pids[@]}"); do
    echo "round=$r $("$LOADGEN" -mode relay -proto imap -addr "127.0.0.1:2${i}171" -c 1 -d "${RELAY_SECS}s" -user bigmsg -label "t$i" -roots "${pids[$((i - 1))]}")"
  done
done
