"""Summary of bench/instr/noop.sh's raw output: medians over rounds, added latency per round.

For each target and protocol, the median over rounds of the NOOP p50 and p99 round trip and
of the p50 added over direct in the same round; for the FETCH relay, MB/s, its ratio to
direct's in the same round and proxyd's CPU per relayed MB.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def main(path: str) -> None:
    noop: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    relay: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    direct_p50: dict[tuple[str, str], float] = {}
    direct_mbs: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            if line.startswith("target "):
                print(line.rstrip())
                continue
            kv = fields(line)
            if kv.get("mode") == "noop":
                key = (kv["label"], kv["proto"])
                p50 = float(kv["p50_us"])
                noop[key]["p50"].append(p50)
                noop[key]["p99"].append(float(kv["p99_us"]))
                if kv["label"] == "direct":
                    direct_p50[(kv["round"], kv["proto"])] = p50
                else:
                    noop[key]["added"].append(p50 - direct_p50[(kv["round"], kv["proto"])])
                    noop[key]["cpu"].append(float(kv["proxy_cpu_ns_per_noop"]) / 1000)
            elif kv.get("mode") == "relay":
                mbs = float(kv["mb_per_s"])
                relay[kv["label"]]["mbs"].append(mbs)
                if kv["label"] == "direct":
                    direct_mbs[kv["round"]] = mbs
                else:
                    relay[kv["label"]]["ratio"].append(mbs / direct_mbs[kv["round"]])
                    relay[kv["label"]]["cpu"].append(float(kv["proxy_cpu_ms_per_mb"]))
    med = statistics.median
    print("NOOP µs (median over rounds): target proto p50 p99 added-p50 [added per round] proxyd-CPU-per-NOOP")
    for (label, proto), v in sorted(noop.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        added = v.get("added", [])
        extra = f" +{med(added):.0f} {[round(a) for a in added]} cpu {med(v['cpu']):.1f}" if added else ""
        print(f"  {label:7} {proto} {med(v['p50']):.0f} {med(v['p99']):.0f}{extra}")
    print("FETCH 10 MB, 1 session: target MB/s x-direct CPU-ms/MB (per round)")
    for label, v in sorted(relay.items()):
        if label == "direct":
            print(f"  direct  {[round(x) for x in v['mbs']]}")
        else:
            print(
                f"  {label:7} {[round(x) for x in v['mbs']]} {[round(x, 2) for x in v['ratio']]}"
                f" {[round(x, 3) for x in v['cpu']]}"
            )


if __name__ == "__main__":
    main(sys.argv[1])
