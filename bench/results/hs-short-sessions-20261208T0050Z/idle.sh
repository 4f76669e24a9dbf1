#!/usr/bin/env bash
# idle.sh TREE K (kept for the record): K idle HS IMAP sessions logged in and held 3 s;
# the proxyd tree's login processes left and its PSS by process, before and after.  Root, the rig's setup.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../../instr" && pwd)
PY=/work/main/.venv/bin/python
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then exec env BENCH_IN_NETNS=1 TREE="$1" K="$2" unshare -n -- "$0"; fi
source "$HERE/lib.sh"
ip link set lo up
o=$(mktemp -d /tmp/proxyd-idle.XXXXXX)
instr_backend "$o"
instr_proxyd_conf "$o" hs imap chrooted
( cd "$o"; PYTHONHASHSEED=0 PYTHONPATH=$TREE exec "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 ) &
m=$!
for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/20071) 2>/dev/null && break; sleep 0.2; done
sleep 2
tree() { local p=$1; echo "$p"; for c in $(cat /proc/$p/task/*/children 2>/dev/null); do tree "$c"; done; }
pss() { local t=0; for p in $(tree "$m"); do v=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo $t; }
roles() { for p in $(tree "$m"); do title=$(tr '\0' ' ' < /proc/$p/cmdline); echo "${title:0:20}=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup)"; done | sort | tr '\n' ' '; echo; }
base=$(pss); roles
coproc C { "$PY" "$(dirname "$0")/idle.py" 20071 "$K"; }
read -r line <&"${C[0]}"
logins=$(for p in $(tree "$m"); do tr '\0' ' ' < /proc/$p/cmdline; echo; done | grep -c "imap-login" || true)
held=$(pss); roles
echo "$TREE: K=$K $line; login processes now $logins; tree PSS $base -> $held kB: $(( (held - base) / K )) kB per idle session"
echo go >&"${C[1]}"
read -r line <&"${C[0]}"; echo "$line"
kill -TERM "$m"; wait "$m" || true
kill "$(cat "$o/backend/run/master.pid")"
rm -rf "$o"
