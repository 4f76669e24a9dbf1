"""Summarise the cProfile dumps bench/probe.py wrote (bench/profile.sh).

    python bench/cprofile_summary.py OUTDIR LOGINS

Merges ``OUTDIR/cprofile-imap-login-*.pstats`` (``cprofile-proxyd-*`` for a proxyd
without the process model), prints the profiled time and call counts per login
grouped by component, then the usual pstats tables.  cProfile's own overhead
inflates small Python functions, so read the groups as proportions, not times.
"""

from __future__ import annotations

import glob
import os
import pstats
import re
import sys
from collections import defaultdict

_GROUPS: tuple[tuple[str, str], ...] = (
    (r"^~$", "builtins"),
    (r"site-packages/proxyd/(master/|ipc/|login/worker\.py)", "proxyd: process model (login/worker.py, master/, ipc/)"),
    (r"site-packages/proxyd/auth/", "proxyd: auth client"),
    (r"site-packages/proxyd/protocols/", "proxyd: protocol engines (protocols/)"),
    (r"site-packages/proxyd/proxied/relay\.py", "proxyd: proxied/relay.py"),
    (r"site-packages/proxyd/login/session\.py", "proxyd: login/session.py"),
    (r"site-packages/(proxyd|passdb_drivers)/", "proxyd: other"),
    (r"site-packages/(trio|outcome|sniffio)/|attrs generated methods (trio|outcome)", "trio runtime"),
    (r"/logging/", "stdlib logging"),
    (r"/json/", "stdlib json"),
    (r"/contextlib\.py", "stdlib contextlib"),
    (r"/ipaddress\.py", "stdlib ipaddress"),
)
_SYSCALL = re.compile(r"socket|posix\.|epoll|select|fcntl")


def _group(filename: str, name: str) -> str:
    if filename == "~" and _SYSCALL.search(name):
        return "system calls (send, recv, connect, splice, close, epoll, ...)"
    for pattern, label in _GROUPS:
        if re.search(pattern, filename):
            return label
    return "other stdlib / frozen"


def main() -> None:
    outdir, logins = sys.argv[1], int(sys.argv[2])
    files = [
        f
        for pattern in ("cprofile-imap-login-*.pstats", "cprofile-proxyd-*.pstats")
        for f in sorted(glob.glob(os.path.join(outdir, pattern)))
        if os.path.getsize(f)
    ]
    stats = pstats.Stats(*files)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    time_by: defaultdict[str, float] = defaultdict(float)
    calls_by: defaultdict[str, int] = defaultdict(int)
    for (filename, _line, name), (_cc, ncalls, tottime, _cum, _callers) in raw.items():
        group = _group(filename, name)
        time_by[group] += tottime
        calls_by[group] += ncalls
    total = sum(time_by.values())
    print(f"# merged: {' '.join(os.path.basename(f) for f in files)}")
    print(f"# {logins} logins; {sum(calls_by.values()) / logins:.0f} Python-level calls per login")
    print("\n## profiled time by component (share) and calls per login")
    for group in sorted(time_by, key=lambda g: -time_by[g]):
        print(f"{100 * time_by[group] / total:5.1f} %  {calls_by[group] / logins:8.1f} calls/login  {group}")
    print()
    stats.sort_stats("tottime").print_stats(50)
    stats.sort_stats("cumulative").print_stats(50)


if __name__ == "__main__":
    main()
