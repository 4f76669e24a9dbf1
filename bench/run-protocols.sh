#!/usr/bin/env bash
# bench/run-protocols.sh - ManageSieve and Submission logins/s and LMTP deliveries/s,
# proxyd against Dovecot 2.3's own proxy in one run, with CPU per operation and the
# ratios proxyd/Dovecot (see bench/bench_protocols.py). As root (the proxies drop
# privileges); Debian's dovecot-managesieved, -submissiond and -lmtpd installed.
#
#   bench/run-protocols.sh                  # ~2 min
#   ROUNDS=3 bench/run-protocols.sh         # less noise: the order alternates, medians
#   LOGINS=400 MESSAGES=400 CLIENTS=8 bench/run-protocols.sh
#
# Measures this checkout's working tree with the project's venv (VENV, default .venv,
# else /work/main/.venv).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
VENV=${VENV:-$SRC/.venv}
[ -x "$VENV/bin/python" ] || VENV=/work/main/.venv
[ -x "$VENV/bin/python" ] || { echo "no venv: set VENV=/path/to/venv" >&2; exit 2; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; HEAD $(git -C "$SRC" log -1 --format=%h 2>/dev/null || echo '?')"
cd "$SRC"
PYTHONPATH="$SRC" "$VENV/bin/python" "$HERE/bench_protocols.py"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
