"""bench/floor/run.sh's raw.txt -> a markdown table: per target, medians over the rounds.

    python bench/floor/summary.py RAW.txt [RAW.txt...]

CPU-ms and page faults per login are the target cgroup's (user + kernel) over the load
window divided by the logins the load generator counted; "rig" is the load generator's
own figure (utime + stime of the process tree from /proc, as the rig's tables).  With
STRACE=N, run.sh's lines are system calls per login instead (a table of their own).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict


def main() -> None:
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    loads: list[str] = []
    calls: dict[str, tuple[float, float]] = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                if line.startswith("#"):
                    loads.append(line.rsplit("load ", 1)[-1].split()[0])
                    continue
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                if "syscalls" in fields:
                    calls[fields["label"]] = (float(fields["syscalls"]), float(fields["failed"]))
                    continue
                logins = float(fields["logins"])
                if not logins:
                    continue
                rows[fields["label"]].append(
                    {
                        "cpu": (int(fields["user_ns"]) + int(fields["sys_ns"])) / 1e6 / logins,
                        "sys": int(fields["sys_ns"]) / 1e6 / logins,
                        "faults": int(fields["pgfault"]) / logins,
                        "rate": float(fields["rate"]),
                        "rig": float(fields["cpu_ms_per_login"]),
                        "backend": float(fields["backend_cpu_ms_per_login"]),
                        "errors": float(fields["errors"]),
                        "other": float(fields.get("other_cores", "nan")),
                    }
                )

    if calls:
        print("| target | system calls per login (strace -f -c) | of which failed (EAGAIN...) |")
        print("|---|---|---|")
        for name, (total, failed) in calls.items():
            print(f"| {name} | {total:.1f} | {failed:.1f} |")
    if not rows:
        return

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    direct = med("direct", "rate") if "direct" in rows else 0.0
    print(
        "| target | CPU-ms per login (kernel) | min..max | page faults per login | logins/s | x direct | rig CPU-ms | backend CPU-ms | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        cpus = [r["cpu"] for r in runs]
        ratio = f"{med(name, 'rate') / direct:.2f}" if direct else "-"
        cpu = "-" if name == "direct" else f"{med(name, 'cpu'):.3f} ({med(name, 'sys'):.3f})"
        spread = "-" if name == "direct" else f"{min(cpus):.3f}..{max(cpus):.3f}"
        faults = "-" if name == "direct" else f"{med(name, 'faults'):.0f}"
        print(
            f"| {name} | {cpu} | {spread} | {faults} | {med(name, 'rate'):.0f} | {ratio} "
            f"| {med(name, 'rig'):.3f} | {med(name, 'backend'):.3f} | {sum(r['errors'] for r in runs):.0f} |"
        )
    others = [r["other"] for runs in rows.values() for r in runs]
    print(
        f"\n{len(next(iter(rows.values()), []))} round(s); load average (1 min) at each start:"
        f" {min(loads, key=float)}..{max(loads, key=float)}; other work's cores during the"
        f" windows (the rig's monitor): median {statistics.median(others):.2f}, max {max(others):.2f}"
    )


if __name__ == "__main__":
    main()
