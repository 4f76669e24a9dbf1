#!/usr/bin/env bash
# bench/instr/run.sh - instructions per login (callgrind), repeatable on a loaded machine.
#
#   bench/instr/run.sh TREE [TREE...]      # e.g. /work/main and a detached worktree of an older commit
#
# For each proxyd checkout: two runs of the whole process tree under
# `valgrind --tool=callgrind --trace-children=yes` (HP mode: service_count = 0,
# process_min_avail = 2, static passdb naming only the host, as the rig's config),
# one with N1 and one with N2 IMAP + POP3 logins (CONC clients at a time, default 2; the rig's
# users and Dovecot backend in a private network namespace).  Instructions per login
# = (run N2 - run N1) / (2 * (N2 - N1)), per role (master+zygote, auth, login
# processes): start-up costs cancel out.  PYTHONHASHSEED=0; ~5 min per run.
# MODE=hs: high-security login services (service_count = 1, a process per connection;
# every forked process counts, the per-login figure includes the fork and Trio's start).
# MYPYC=1: each TREE is measured as its mypyc-compiled build (setup.py): TREE's files are
# copied to $OUT/build-NAME, a wheel is built there (PROXYD_MYPYC=1, without build isolation:
# $PY's setuptools and mypyc) and installed with --target into $OUT/build-NAME/site, which
# goes on PYTHONPATH instead of TREE.  TREE itself may also be such a --target directory.
# proxyd runs from its output directory: `python -m` puts the current directory first on
# sys.path, so a run started inside a checkout would measure that checkout, not TREE.
# WORK=noop: instead of logins, one IMAP and one POP3 session of N NOOP round trips each
# (the rig's loadgen): instructions per relayed NOOP round trip (N1=200 N2=2200 is enough).
# Needs the rig's setup (../shared/bench/setup.sh: backend config and users).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/instr/lib.sh
source "$HERE/lib.sh"
N1=${N1:-20} N2=${N2:-220} CONC=${CONC:-2} MODE=${MODE:-hp}
OUT=${OUT:-/tmp/proxyd-instr}
PY=${PY:-/work/main/.venv/bin/python}
if [ "${BENCH_IN_NETNS:-}" != 1 ]; then
  for tree in "$@"; do
    site=$tree
    if [ "${MYPYC:-0}" = 1 ]; then
      site=$OUT/build-$(basename "$tree")
      build_compiled "$tree" "$site"
      site=$site/site
    fi
    for n in "$N1" "$N2"; do
      env BENCH_IN_NETNS=1 TREE="$tree" SITE="$site" N="$n" CONC="$CONC" MODE="$MODE" unshare -n -- "$0" &
    done
    wait
  done
  WORK=${WORK:-login} MIN_IR=$([ "$MODE" = hs ] && echo 0 || echo 100000000) "$PY" "$HERE/summary.py" "$OUT" "$N1" "$N2" "$@"
  exit 0
fi
ip link set lo up
o=$OUT/$(basename "$TREE")-$N
instr_backend "$o"
ZERO=""
# high-security: a forked child's counts start at the fork (callgrind would carry the parent's over)
if [ "$MODE" = hs ]; then ZERO=--zero-before=PyOS_AfterFork_Child; fi
instr_proxyd_conf "$o" "$MODE" "imap pop3" unchrooted
cd "$o"
PYTHONHASHSEED=0 PYTHONPATH=${SITE:-$TREE} valgrind --tool=callgrind --trace-children=yes $ZERO --callgrind-out-file="$o/cg.%p.out" \
  "$PY" -m proxyd -c "$o/proxyd.conf" > "$o/proxyd.log" 2>&1 &
m=$!
for _ in $(seq 1 1200); do (echo > /dev/tcp/127.0.0.1/20072) 2>/dev/null && break; sleep 0.5; done
sleep 2
if [ "${WORK:-login}" = noop ]; then
  # one logged-in session per protocol, N NOOP round trips each (the rig's client)
  for p in "imap 20071 user0001" "pop3 20072 user0002"; do
    set -- $p
    "${LOADGEN:-/tmp/bench-run/bin/loadgen}" -mode noop -proto "$1" -addr "127.0.0.1:$2" -n "$N" -user "$3" -timeout 120s -max-wall 900s
  done
else
  "$PY" "$HERE/login_client.py" imap 20071 "$N" "$CONC" 0
  "$PY" "$HERE/login_client.py" pop3 20072 "$N" "$CONC" 0
fi
kill -TERM "$m"; wait "$m" || true
kill "$(cat "$o/backend/run/master.pid")"
