"""Instructions per login from bench/instr/run.sh's callgrind files (see there)."""

import glob
import os
import pwd
import sys

#: files below this many instructions are helpers (MODE=hs counts every forked process)
MIN_IR = int(os.environ.get("MIN_IR", 10**8))
ROLES = {"root": "master+zygote", "dovecot": "auth", "dovenull": "login"}


def totals(directory: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in glob.glob(f"{directory}/cg.*.out"):
        with open(path) as f:
            ir = next((int(line.split()[1]) for line in f if line.startswith("summary:")), 0)
        if ir < MIN_IR:  # a short-lived helper, not a proxyd process
            continue
        role = ROLES.get(pwd.getpwuid(os.stat(path).st_uid).pw_name, "other")
        found[role] = found.get(role, 0) + ir
    return found


out, n1, n2, trees = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
#: WORK=noop: NOOP round trips of a logged-in session instead of logins
what = "NOOP round trip" if os.environ.get("WORK") == "noop" else "login"
logins = 2 * (n2 - n1)
for tree in trees:
    name = os.path.basename(tree)
    a, b = totals(f"{out}/{name}-{n1}"), totals(f"{out}/{name}-{n2}")
    per = {role: (b[role] - a.get(role, 0)) / logins / 1000 for role in b}
    parts = ", ".join(f"{role} {value:,.0f}" for role, value in sorted(per.items()))
    print(f"{tree}: k-instructions per {what} (IMAP/POP3 average): {parts}; total {sum(per.values()):,.0f}")
