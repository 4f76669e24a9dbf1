#!/usr/bin/env bash
# bench/instr/engines.sh - the sans-IO engines' instructions per login (callgrind), alone.
#
#   bench/instr/engines.sh DIR [DIR...]    # a checkout, or a --target install of a build
#
# Runs bench/instr/engines.py (IMAP and POP3 logins through the client-side and backend
# login engines, no I/O) with N1 and N2 logins of each protocol under callgrind, with DIR
# on PYTHONPATH (from a scratch directory: no checkout first on sys.path); prints
# (run N2 - run N1) / (2 * (N2 - N1)): instructions per login, IMAP/POP3 average.
# MYPYC=1 bench/instr/run.sh leaves the compiled build of a tree in $OUT/build-NAME/site.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N1=${N1:-100} N2=${N2:-600}
PY=${PY:-/work/main/.venv/bin/python}
work=$(mktemp -d /tmp/proxyd-engines.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
for dir in "$@"; do
  ir=()
  for n in "$N1" "$N2"; do
    PYTHONHASHSEED=0 PYTHONPATH=$dir valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
      "$PY" "$HERE/engines.py" "$n" 2>/dev/null
    ir+=("$(awk '/^summary:/ { print $2 }' "$work/cg.out")")
  done
  compiled=$(PYTHONPATH=$dir "$PY" -c 'import proxyd.protocols.imap.server as m; print("compiled" if m.__file__.endswith(".so") else "pure Python")')
  echo "$dir ($compiled): $(( (ir[1] - ir[0]) / (2 * (N2 - N1)) )) instructions per login in the engines"
done
