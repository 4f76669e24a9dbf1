"""A connection flood against a full login service while a real user logs in.

    bench/flood.sh                          # proxyd (HP and HS) and Dovecot's proxy, 20/s and 200/s
    python -m bench.flood --mode hp --rates 20,200 --duration 20
    PROXYD_E2E_REFERENCE=dovecot python -m bench.flood --mode hp   # Dovecot's own proxy

Setup: a Dovecot backend on 127.0.0.2 and the proxy on 127.0.0.1 (tests/soak/stack.py),
high-performance mode (``service_count = 0``, ``client_limit = 50``,
``process_limit = 2``: room for 100) or high-security mode (``service_count = 1``,
``process_limit = 100``: the same room).

Phases, each bounded in count and time (the real user logs in every ``--interval``
seconds, 0.25 by default, one login at a time):

1. *rest*: 20 logins, nothing else connected;
2. *full*: 100 idle pre-login connections, then 20 logins (each displaces the oldest);
3. for each rate: 100 idle connections, then a flood of ``rate`` new idle
   connections a second for ``duration`` seconds while the real user logs in;
   each flood connection's time to its greeting is recorded;
4. *after*: 20 logins once the flood connections are gone.

The flood runs in a process of its own (``--flood-only``), so that the real user's
login times are not those of a client event loop busy opening 200 connections a
second.  Prints one markdown table row per phase: login p50/p99/max, the p50 as a
multiple of the rest phase's, and the flood connections' greeting times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.soak.load import FloodStats, IdleSessions, LoginSeries, flood, real_user
from tests.soak.stack import PASSWORD, USER, proxy_stack

IDLE = 100
#: logins of the real user in each phase without a flood
PHASE_LOGINS = 20
#: the flood comes from 127.0.1.1-100 (see tests/soak/load.py flood(): TIME_WAIT on loopback)
FLOOD_SOURCES = tuple(f"127.0.1.{n}" for n in range(1, 101))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _pct(times: list[float], pct: float) -> float:
    if not times:
        return float("nan")
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _row(target: str, phase: str, series: LoginSeries, rest: float, stats: FloodStats | None = None) -> str:
    cells = [
        target, phase, str(len(series.times)), str(len(series.failures)),
        _ms(series.median), _ms(_pct(series.times, 99)), _ms(series.worst),
        f"{series.median / rest:.1f}" if series.times and rest > 0 else "",
    ]
    if stats is None:
        cells += ["", "", "", "", ""]
    else:
        cells += [
            str(stats.opened), str(stats.never_greeted),
            _ms(stats.greeting_percentile(50)), _ms(stats.greeting_percentile(99)),
            _ms(max(stats.greeting_times, default=float("nan"))),
        ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| target | phase | logins | failed | login p50 ms | p99 ms | max ms | p50 / rest p50 "
    "| flood conns | not greeted in 3 s | greeting p50 ms | p99 ms | max ms |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def _logins(address: str, port: int, count: int, interval: float) -> LoginSeries:
    series = LoginSeries()
    await real_user(address, port, USER, PASSWORD, interval=interval, count=count, series=series)
    return series


async def _flood_process(address: str, port: int, rate: float, duration: float) -> FloodStats:
    """The flood, run by this script in another process; its figures come back as JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        await trio.run_process(
            [sys.executable, __file__, "--flood-only", f"{address}:{port}", "--rates", f"{rate:g}",
             "--duration", f"{duration:g}", "--stats", out.name],
            stdout=subprocess.DEVNULL,
        )
        return FloodStats(**json.loads(await trio.Path(out.name).read_text()))


async def run(
    address: str, port: int, target: str, rates: list[float], duration: float, interval: float
) -> list[str]:
    await _logins(address, port, 2, interval)  # warm-up: the first login of a process costs more
    rest = await _logins(address, port, PHASE_LOGINS, interval)
    rows = [_row(target, "rest", rest, rest.median)]
    idle = IdleSessions()
    try:
        await idle.open(address, port, IDLE)
        full = await _logins(address, port, PHASE_LOGINS, interval)
        rows.append(_row(target, f"full ({IDLE} idle)", full, rest.median))
    finally:
        await idle.close()
    for rate in rates:
        idle = IdleSessions()
        series = LoginSeries()
        stats = FloodStats()
        try:
            await idle.open(address, port, IDLE)
            # each login is bounded (tests/soak/load.py), so is the phase: slow logins push
            # the later ones back, so the bound is generous
            with trio.fail_after(duration * 3 + 300):
                async with trio.open_nursery() as nursery:

                    async def flooding(rate: float = rate) -> None:
                        nonlocal stats
                        stats = await _flood_process(address, port, rate, duration)

                    nursery.start_soon(flooding)
                    await trio.sleep(0.5)  # the flood process is up and flooding
                    await real_user(
                        address, port, USER, PASSWORD, interval=interval,
                        count=int((duration - 1) / interval), series=series,
                    )
        finally:
            await idle.close()
        rows.append(_row(target, f"flood {rate:g}/s for {duration:g} s", series, rest.median, stats))
        await trio.sleep(2)
    rows.append(_row(target, "after", await _logins(address, port, PHASE_LOGINS, interval), rest.median))
    return rows


def _flood_only(target: str, rate: float, duration: float, stats_path: str) -> None:
    address, _, port = target.rpartition(":")
    stats = FloodStats()
    trio.run(lambda: flood(
        address, int(port), rate=rate, duration=duration, stats=stats,
        hold=duration + 5, sources=FLOOD_SOURCES,
    ))
    Path(stats_path).write_text(json.dumps(asdict(stats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("hp", "hs"), default="hp")
    parser.add_argument("--rates", default="20,200")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between the real user's logins")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    parser.add_argument("--flood-only", metavar="ADDRESS:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    if args.flood_only:
        _flood_only(args.flood_only, rates[0], args.duration, args.stats)
        return
    reference = os.environ.get("PROXYD_E2E_REFERENCE", "")
    target = ("dovecot" if reference else "proxyd") + f" {args.mode.upper()}"
    limits = (
        {"service_count": 0, "client_limit": 50, "process_limit": 2}
        if args.mode == "hp"
        else {"service_count": 1, "client_limit": 1, "process_limit": IDLE}
    )
    with proxy_stack(**limits) as stack:
        rows = trio.run(run, stack.address, stack.port, target, rates, args.duration, args.interval)
        log = stack.proxy.log_text()
    if args.header:
        print(HEADER)
    print("\n".join(rows))
    full = log.count("Connection queue full")
    print(f"<!-- {target}: {full} 'Connection queue full' log lines -->")


if __name__ == "__main__":
    main()
