#!/usr/bin/env bash
# bench/flood.sh - the flood-at-capacity measurement of bench/RESULTS.md, in one run:
# proxyd and Dovecot's own proxy, high-performance and high-security mode, 20 and 200
# new connections a second for DURATION (default 20) seconds while a real user logs in
# every INTERVAL (default 0.25) seconds (bench/flood.py says what each phase does).  Loopback only, as root
# (the stack runs proxyd in its deployed shape).  Prints one markdown table.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-$SRC/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
DURATION=${DURATION:-20}
RATES=${RATES:-20,200}
INTERVAL=${INTERVAL:-0.25}
cd "$SRC"
export PYTHONPATH=$SRC
header=--header
for mode in ${MODES:-hp hs}; do
  for reference in "" dovecot; do
    PROXYD_E2E_REFERENCE=$reference timeout 1200 "$PY" bench/flood.py --mode "$mode" \
      --rates "$RATES" --duration "$DURATION" --interval "$INTERVAL" $header ||
      echo "| ${reference:-proxyd} ${mode^^} | (run failed: see stderr) |"
    header=
  done
done
