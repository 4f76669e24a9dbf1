#!/usr/bin/env bash
# bench/run.sh - one command, one interleaved run: proxyd against a direct backend
# connection and the anchors (Dovecot's high-performance proxy, nginx), on the
# shared rig in ../shared/bench (or $RIG).  Prints the rig's ratio tables.
#
#   bench/run.sh                       # IMAP scenarios, ROUNDS=1 (~3 min per round)
#   ROUNDS=2 bench/run.sh              # less noise
#   TARGETS="direct dovecot_hp proxyd" SCENARIOS="login_imap" bench/run.sh
#   TARGETS="direct dovecot_hs dovecot_hp nginx proxyd proxyd_hs" bench/run.sh
#                                      # proxyd_hs: high-security mode (service_count = 1)
#
# The committed HEAD is measured (PROXYD_TREE=1: the working tree as it is).
# The rig's files are not modified: they are copied into a scratch directory with
# bench/proxyd-target.sh appended to targets.sh, so proxyd's config lists only the
# protocols and settings this checkout supports (the rig's config also asks for pop3).
# Raw data, tables and gzipped logs land in bench/results/<UTC stamp>/ (or $OUT).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
RIG=${RIG:-$(cd "$SRC/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$RIG" ] && [ -f "$RIG/run-all.sh" ] || { echo "bench rig not found; set RIG=/path/to/shared/bench" >&2; exit 2; }

export RUN=${RUN:-/tmp/bench-run}
[ -x "$RUN/bin/loadgen" ] || "$RIG/setup.sh"
WORK=$(mktemp -d /tmp/proxyd-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# What is measured: by default the committed HEAD (exported with git archive), since
# other people edit this checkout while it runs; PROXYD_TREE=1 takes the working tree
# as it is, uncommitted changes included.
if [ "${PROXYD_TREE:-0}" = 1 ]; then
  BUILD_SRC=$SRC
else
  BUILD_SRC=$WORK/src
  mkdir -p "$BUILD_SRC"
  git -C "$SRC" archive HEAD | tar -x -C "$BUILD_SRC"
fi
PROXYD_SRC="$BUILD_SRC" RUN="$RUN" "$RIG/proxyd-venv.sh"
{
  echo "venv built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $SRC"
  git -C "$SRC" log -1 --format='HEAD %H %cI %s' 2>/dev/null
  if [ "${PROXYD_TREE:-0}" = 1 ]; then
    echo "from the working tree; uncommitted changes to the installed code (git status --short):"
    git -C "$SRC" status --short -- proxyd passdb_drivers pyproject.toml 2>/dev/null
  else
    echo "from HEAD (git archive); uncommitted changes were not installed"
  fi
  # pip install builds the mypyc-compiled modules (setup.py) when it can, else pure Python
  compiled=$(find "$RUN/proxyd-venv/lib" -path '*/site-packages/proxyd/*' -name '*.so' | wc -l)
  if [ "$compiled" -gt 0 ]; then
    echo "compiled: $compiled modules (mypyc, [tool.proxyd.mypyc] in pyproject.toml)"
  else
    echo "compiled: none (pure Python: mypyc or the C compiler was missing at build time)"
  fi
} > "$RUN/proxyd-venv/SOURCE.txt"
grep '^compiled:' "$RUN/proxyd-venv/SOURCE.txt" >&2
mkdir -p "$WORK/rig"
for f in "$RIG"/*; do ln -s "$f" "$WORK/rig/$(basename "$f")"; done
rm -f "$WORK/rig/targets.sh" "$WORK/rig/run-all.sh" "$WORK/rig/results"
cp "$RIG/targets.sh" "$RIG/run-all.sh" "$WORK/rig/"
mkdir -p "$HERE/results"
ln -s "$HERE/results" "$WORK/rig/results"
cat "$HERE/proxyd-target.sh" >> "$WORK/rig/targets.sh"

export ROUNDS=${ROUNDS:-1}
export TARGETS=${TARGETS:-direct dovecot_hp nginx proxyd}
export SCENARIOS=${SCENARIOS:-login_imap noop_imap relay1_imap relay8_imap idle2000_imap}
export IDLE_KS=${IDLE_KS:-2000}
export OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
cp "$RUN/proxyd-venv/SOURCE.txt" "$OUT/source.txt"
rc=0
"$WORK/rig/run-all.sh" || rc=$?
# run-all.sh skips a target that fails to start and carries on: say so loudly
for t in proxyd proxyd_hs; do
  case " $TARGETS " in
    *" $t "*)
      if ! grep -q " target=$t " "$OUT/raw.txt" 2>/dev/null; then
        echo "bench/run.sh: no $t measurements in $OUT/raw.txt - $t did not start?" >&2
        echo "  config: $RUN/conf/proxyd*.conf  log: $RUN/logs/$t.log (gz copy in $OUT/logs)" >&2
        rc=1
      fi ;;
  esac
done
exit "$rc"
