"""System calls per login from bench/instr/syscalls.sh's strace files (see there)."""

import glob
import os
import re
import sys
from collections import Counter

ROLES = {"root": "master+zygote", "dovecot": "auth", "dovenull": "login"}
#: ``PID name(`` starts a call; ``PID <... name resumed>`` ends one begun earlier
_CALL = re.compile(r"^(\d+) +(?:<\.\.\. )?(\w+)(\(| resumed>)")


def counts(directory: str) -> dict[str, Counter[str]]:
    users: dict[str, str] = {}
    with open(f"{directory}/users") as f:
        for line in f:
            pid, user = line.split()
            users[pid] = user
    found: dict[str, Counter[str]] = {}
    with open(f"{directory}/trace", errors="replace") as f:
        for line in f:
            m = _CALL.match(line)
            if m is None:
                continue
            pid, name, how = m.groups()
            role = ROLES.get(users.get(pid, ""), "other")
            per = found.setdefault(role, Counter())
            if how == "(":
                per[name] += 1
            if "= -1 EAGAIN" in line:
                per[f"{name} (EAGAIN)"] += 1
    return found


def python_calls(directory: str) -> dict[str, Counter[str]]:
    """bench/probe.py's counts of the login processes (TOOL=calls), all summed as ``login``."""
    per: Counter[str] = Counter()
    for path in glob.glob(f"{directory}/calls/calls-*.txt"):
        with open(path) as f:
            for line in f:
                n, _, name = line.rstrip("\n").partition("\t")
                per[name] += int(n)
    return {"login": per}


def perf_counts(directory: str) -> dict[str, Counter[str]]:
    """perf stat's CSV (TOOL=perf): the login processes' counts, all summed as ``login``."""
    per: Counter[str] = Counter()
    with open(f"{directory}/perf.txt") as f:
        for line in f:
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                name = fields[2].rpartition(":")[2].removeprefix("sys_enter_")
                name = {"sys_enter": "all", "sys_exit_accept4": "accept4 (EAGAIN)"}.get(name, name)
                per[name] += int(fields[0])
    return {"login": per}


out, n1, n2, trees = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
logins = n2 - n1
calls = os.environ.get("TOOL") == "calls"
if calls:
    counts = python_calls
elif os.environ.get("TOOL") == "perf":
    counts = perf_counts
for tree in trees:
    name = tree.rstrip("/").rpartition("/")[2]
    a, b = counts(f"{out}/{name}-{n1}"), counts(f"{out}/{name}-{n2}")
    print(f"{tree}: {'Python calls' if calls else 'system calls'} per login")
    for role in sorted(b):
        diff = Counter(b[role])
        diff.subtract(a.get(role, Counter()))
        if "all" in diff:  # perf: the count of every call is one of the counts
            total = diff["all"] / logins
        else:
            total = sum(v for k, v in diff.items() if calls or "(EAGAIN)" not in k) / logins
        least = 1 if calls else 0.05
        parts = ", ".join(
            f"{k} {v / logins:.2f}" for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if abs(v / logins) >= least
        )
        print(f"  {role}: {total:.1f}: {parts}")
