"""bench/floor/relay.sh's raw.txt -> markdown tables: per target, medians over rounds.

    python bench/floor/relay_summary.py RAW.txt [RAW.txt...]

NOOP: p50 and p99 round trip, and p50 / p99 added over direct in the same round (median
over rounds of the per-round difference); the target's CPU per NOOP (its cgroup over the
call / (NOOPs + 100 warm-up)).  FETCH of the 10 MB message with 1 and 8 sessions: MB/s,
x direct in the same round, and the target's CPU-ms per relayed MB (its cgroup; the kernel
part where recorded), beside the backend's and the client's together.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def main() -> None:
    runs: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    direct: dict[tuple[str, str], dict[str, str]] = {}
    order: list[str] = []
    loads: list[float] = []
    monitor: list[str] = []
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                kv = fields(line)
                if line.startswith("monitor "):
                    monitor.append(f"{kv['other_cores_median']} (max {kv['other_cores_max']})")
                    continue
                if "scenario" not in kv or "label" not in kv:
                    continue
                kv["round"] = f"{path}:{kv['round']}"  # rounds of several files apart
                runs[(kv["scenario"], kv["label"])].append(kv)
                loads.append(float(kv["load"]))
                if kv["label"] == "direct":
                    direct[(kv["round"], kv["scenario"])] = kv
                if kv["label"] not in order:
                    order.append(kv["label"])
    med = statistics.median

    def against(kv: dict[str, str], key: str) -> float | None:
        base = direct.get((kv["round"], kv["scenario"]))
        return float(base[key]) if base else None

    print("NOOP round trip, µs (median over rounds; added = target - direct in the same round)")
    print()
    print("| target | p50 | p99 | p50 added | p99 added | p50 added per round | CPU µs per NOOP |")
    print("|---|---|---|---|---|---|---|")
    for label in order:
        rs = runs.get(("noop", label), [])
        if not rs:
            continue
        p50 = [float(r["p50_us"]) for r in rs]
        p99 = [float(r["p99_us"]) for r in rs]
        if label == "direct":
            print(f"| direct | {med(p50):.0f} | {med(p99):.0f} | - | - | - | - |")
            continue
        add50 = [float(r["p50_us"]) - (against(r, "p50_us") or 0) for r in rs]
        add99 = [float(r["p99_us"]) - (against(r, "p99_us") or 0) for r in rs]
        cpu = [int(r["cg_cpu_ns"]) / 1000 / (int(r["n"]) + 100) for r in rs]
        print(
            f"| {label} | {med(p50):.0f} | {med(p99):.0f} | {med(add50):+.0f} | {med(add99):+.0f}"
            f" | {', '.join(f'{a:+.0f}' for a in add50)} | {med(cpu):.1f} |"
        )
    for scenario, sessions in (("fetch1", 1), ("fetch8", 8)):
        print()
        print(f"FETCH of the 10 MB message, {sessions} session(s), {scenario}")
        print()
        print(
            "| target | MB/s | x direct | x direct per round | CPU-ms per MB (kernel) | proxy cores"
            " | backend + client CPU-ms per MB | errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label in order:
            rs = runs.get((scenario, label), [])
            if not rs:
                continue
            mbs = [float(r["mb_per_s"]) for r in rs]
            errors = sum(int(r["errors"]) for r in rs)
            rest = [
                (int(r.get("backend_cpu_ns", 0)) + int(r.get("client_cpu_ns", 0)))
                / 1e6
                / float(r["mbytes"])
                for r in rs
                if float(r["mbytes"])
            ]
            if label == "direct":
                print(f"| direct | {med(mbs):.0f} | 1 | - | - | - | {med(rest):.3f} | {errors} |")
                continue
            ratio = [float(r["mb_per_s"]) / (against(r, "mb_per_s") or float("nan")) for r in rs]
            cpu = [int(r["cg_cpu_ns"]) / 1e6 / float(r["mbytes"]) for r in rs if float(r["mbytes"])]
            kernel = [
                int(r["cg_sys_ns"]) / 1e6 / float(r["mbytes"])
                for r in rs
                if "cg_sys_ns" in r and float(r["mbytes"])
            ]
            cpu_text = f"{med(cpu):.3f}" + (f" ({med(kernel):.3f})" if kernel else "")
            cores = [int(r["cg_cpu_ns"]) / 1e9 / float(r["secs"]) for r in rs]
            print(
                f"| {label} | {med(mbs):.0f} | {med(ratio):.2f} | {', '.join(f'{x:.2f}' for x in ratio)}"
                f" | {cpu_text} | {med(cores):.2f} | {med(rest):.3f} | {errors} |"
            )
    if loads:
        print()
        print(
            f"{len(runs.get(('noop', 'direct'), []))} round(s);"
            f" load average (1 min) at each call: median {med(loads):.1f}, {min(loads):.1f}..{max(loads):.1f}"
        )
    for m in monitor:
        print(f"other work on the machine (the rig's monitor, cores): median {m}")


if __name__ == "__main__":
    main()
