"""A connection flood against a full login service while a real user logs in once a second.

    bench/flood.sh                          # proxyd (HP and HS) and Dovecot's proxy, 20/s and 200/s
    python -m bench.flood --mode hp --rates 20,200 --duration 20
    PROXYD_E2E_REFERENCE=dovecot python -m bench.flood --mode hp   # Dovecot's own proxy

Setup: a Dovecot backend on 127.0.0.2 and the proxy on 127.0.0.1 (tests/soak/stack.py),
high-performance mode (``service_count = 0``, ``client_limit = 50``,
``process_limit = 2``: room for 100) or high-security mode (``service_count = 1``,
``process_limit = 100``: the same room).

Phases, each bounded in count and time:

1. *rest*: 5 logins of the real user, one a second, nothing else connected;
2. *full*: 100 idle pre-login connections, then 5 logins (each displaces the oldest);
3. for each rate: 100 idle connections, then a flood of ``rate`` new idle
   connections a second for ``duration`` seconds while the real user logs in once
   a second; each flood connection's time to its greeting is recorded;
4. *after*: 5 logins once the flood connections are gone.

Prints one markdown table row per phase.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.soak.load import FloodStats, IdleSessions, LoginSeries, flood, real_user
from tests.soak.stack import PASSWORD, USER, proxy_stack

IDLE = 100
#: the flood comes from 127.0.1.1-100 (see tests/soak/load.py flood(): TIME_WAIT on loopback)
FLOOD_SOURCES = tuple(f"127.0.1.{n}" for n in range(1, 101))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _row(target: str, phase: str, series: LoginSeries, stats: FloodStats | None = None) -> str:
    logins = ", ".join(_ms(t) for t in series.times)
    cells = [
        target, phase, str(len(series.times)), str(len(series.failures)),
        _ms(series.median), _ms(series.worst),
    ]
    if stats is None:
        cells += ["", "", "", "", ""]
    else:
        cells += [
            str(stats.opened), str(stats.never_greeted),
            _ms(stats.greeting_percentile(50)), _ms(stats.greeting_percentile(99)),
            _ms(max(stats.greeting_times, default=float("nan"))),
        ]
    return "| " + " | ".join(cells) + f" | {logins} |"


HEADER = (
    "| target | phase | logins | failed | median ms | worst ms | flood conns | not greeted in 3 s "
    "| greeting p50 ms | p99 ms | max ms | each login (ms) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def _logins(address: str, port: int, count: int) -> LoginSeries:
    series = LoginSeries()
    await real_user(address, port, USER, PASSWORD, interval=1.0, count=count, series=series)
    return series


async def run(address: str, port: int, target: str, rates: list[float], duration: float) -> list[str]:
    rows = [_row(target, "rest", await _logins(address, port, 5))]
    idle = IdleSessions()
    try:
        await idle.open(address, port, IDLE)
        rows.append(_row(target, f"full ({IDLE} idle)", await _logins(address, port, 5)))
    finally:
        await idle.close()
    for rate in rates:
        idle = IdleSessions()
        stats = FloodStats()
        series = LoginSeries()
        try:
            await idle.open(address, port, IDLE)
            # each login is bounded (tests/soak/load.py), so is the phase: slow logins push
            # the later ones back, so the bound is generous
            with trio.fail_after(duration * 3 + 300):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(
                        flood, address, port, rate=rate, duration=duration, stats=stats,
                        hold=duration + 5, sources=FLOOD_SOURCES,
                    ))
                    await real_user(
                        address, port, USER, PASSWORD, interval=1.0, count=int(duration), series=series
                    )
        finally:
            await idle.close()
        rows.append(_row(target, f"flood {rate:g}/s for {duration:g} s", series, stats))
        await trio.sleep(2)
    rows.append(_row(target, "after", await _logins(address, port, 5)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("hp", "hs"), default="hp")
    parser.add_argument("--rates", default="20,200")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    reference = os.environ.get("PROXYD_E2E_REFERENCE", "")
    target = ("dovecot" if reference else "proxyd") + f" {args.mode.upper()}"
    limits = (
        {"service_count": 0, "client_limit": 50, "process_limit": 2}
        if args.mode == "hp"
        else {"service_count": 1, "client_limit": 1, "process_limit": IDLE}
    )
    with proxy_stack(**limits) as stack:
        rows = trio.run(run, stack.address, stack.port, target, rates, args.duration)
        log = stack.proxy.log_text()
    if args.header:
        print(HEADER)
    print("\n".join(rows))
    full = log.count("Connection queue full")
    print(f"<!-- {target}: {full} 'Connection queue full' log lines -->")


if __name__ == "__main__":
    main()
