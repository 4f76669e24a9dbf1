"""Bounded load for the soak suite and bench/flood.py: idle connections, floods, real logins.

Everything here is a client on loopback, bounded in count and time: a flood
opens ``rate * duration`` connections and no more, every wait has a deadline.
Times are wall-clock seconds (``trio.current_time()`` of the real clock).
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field

import trio

#: how long any single read waits before the client gives up
READ_TIMEOUT = 10.0
#: a flood connection that is not even accepted within this time counts as refused
CONNECT_TIMEOUT = 10.0


async def read_line(stream: trio.SocketStream, buf: bytearray, timeout: float = READ_TIMEOUT) -> bytes:
    """The next CRLF-terminated line (without it); b"" when the server closed first."""
    with trio.move_on_after(timeout):
        while b"\n" not in buf:
            data = await stream.receive_some(4096)
            if not data:
                return b""
            buf += data
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        return line.rstrip(b"\r")
    raise TimeoutError(f"no line within {timeout:.1f} s")


async def imap_login(address: str, port: int, user: str, password: str) -> float:
    """Connect, LOGIN, LOGOUT; seconds from connect to the tagged OK of LOGIN.

    Raises ``OSError`` or ``TimeoutError`` when the login does not succeed.
    """
    start = trio.current_time()
    stream = await trio.open_tcp_stream(address, port)
    async with stream:
        buf = bytearray()
        greeting = await read_line(stream, buf)
        if not greeting.startswith(b"* OK"):
            raise OSError(f"no greeting: {greeting[:80]!r}")
        await stream.send_all(b'a LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
        while True:
            line = await read_line(stream, buf)
            if not line:
                raise OSError("closed during LOGIN")
            if line.startswith(b"a "):
                break
        if not line.startswith(b"a OK"):
            raise OSError(f"login failed: {line[:120]!r}")
        took = trio.current_time() - start
        with contextlib.suppress(OSError, trio.BrokenResourceError, TimeoutError):
            await stream.send_all(b"b LOGOUT\r\n")
            while (line := await read_line(stream, buf, 2)) and not line.startswith(b"b "):
                pass
        return took


@dataclass
class IdleSessions:
    """Connections that stay open doing nothing (pre-login, or logged in)."""

    streams: list[trio.SocketStream] = field(default_factory=list)

    async def open(
        self, address: str, port: int, count: int, *, login: tuple[str, str] | None = None, parallel: int = 1
    ) -> None:
        """Open ``count`` more, ``parallel`` at a time; with ``login`` each logs in (a proxied
        idle session)."""
        if parallel > 1:
            errors: list[BaseException] = []

            async def share(n: int) -> None:
                try:
                    await self.open(address, port, n, login=login)
                except (OSError, TimeoutError, trio.BrokenResourceError) as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for part in range(parallel):
                    nursery.start_soon(share, count // parallel + (1 if part < count % parallel else 0))
            if errors:  # one error, not a group of thousands (pytest chokes on those)
                raise OSError(f"{len(errors)} of {parallel} openers failed; first: {errors[0]!r}")
            return
        for _ in range(count):
            stream = await trio.open_tcp_stream(address, port)
            buf = bytearray()
            greeting = await read_line(stream, buf)
            if not greeting.startswith(b"* OK"):
                await stream.aclose()
                raise OSError(f"no greeting for idle connection: {greeting[:80]!r}")
            if login is not None:
                user, password = login
                await stream.send_all(b'a LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
                while not (line := await read_line(stream, buf)).startswith(b"a "):
                    if not line:
                        raise OSError("closed during LOGIN")
                if not line.startswith(b"a OK"):
                    raise OSError(f"login failed: {line[:120]!r}")
            self.streams.append(stream)

    async def alive(self, probe: bytes = b"") -> int:
        """How many are still open (with ``probe``, e.g. ``b"n NOOP\\r\\n"``, answered)."""
        count = 0
        for stream in self.streams:
            try:
                if probe:
                    await stream.send_all(probe)
                    buf = bytearray()
                    with trio.fail_after(5):
                        line = await read_line(stream, buf)
                    if line:
                        count += 1
                else:
                    with trio.move_on_after(0):
                        if not await stream.receive_some(1):
                            continue  # EOF: closed by the server
                    count += 1
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, TimeoutError):
                continue
        return count

    async def close(self) -> None:
        for stream in self.streams:
            await trio.aclose_forcefully(stream)
        self.streams.clear()


@dataclass
class FloodStats:
    """What happened to the connections of one flood."""

    opened: int = 0
    #: connect() failed or took longer than CONNECT_TIMEOUT
    refused: int = 0
    greeted: int = 0
    #: seconds from connect to the greeting line
    greeting_times: list[float] = field(default_factory=list)
    #: connections that got no greeting within the read timeout
    never_greeted: int = 0
    #: connections the server closed with a goodbye (``* BYE Connection queue full``)
    displaced: int = 0

    def greeting_percentile(self, pct: float) -> float:
        if not self.greeting_times:
            return float("nan")
        ordered = sorted(self.greeting_times)
        return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def flood(
    address: str,
    port: int,
    *,
    rate: float,
    duration: float,
    stats: FloodStats,
    hold: float = 30.0,
    greeting_timeout: float = 3.0,
    sources: tuple[str, ...] = (),
) -> None:
    """Open ``rate`` connections a second for ``duration`` seconds (``rate * duration`` in all).

    Each reads its greeting and then holds the connection, idle, until the server
    closes it or ``hold`` seconds pass.  Returns once every connection is closed.
    ``sources``: loopback addresses to connect from in turn.  Thousands of connections
    from one address to one port soon reuse a client port whose previous connection
    the server closed (TIME_WAIT there): that SYN waits a retransmission (1 s), which
    is the loopback's artefact, not the server's.
    """
    total = int(rate * duration)

    async def one(n: int) -> None:
        start = trio.current_time()
        sock = trio.socket.socket()
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                if sources:
                    await sock.bind((sources[n % len(sources)], 0))
                await sock.connect((address, port))
        except (OSError, trio.TooSlowError):
            sock.close()
            stats.refused += 1
            return
        stream = trio.SocketStream(sock)
        stats.opened += 1
        async with stream:
            buf = bytearray()
            try:
                greeting = await read_line(stream, buf, greeting_timeout)
            except TimeoutError:
                stats.never_greeted += 1
                return
            except (OSError, trio.BrokenResourceError):
                stats.never_greeted += 1
                return
            if not greeting:
                stats.never_greeted += 1
                return
            stats.greeted += 1
            stats.greeting_times.append(trio.current_time() - start)
            with trio.move_on_after(hold), contextlib.suppress(OSError, trio.BrokenResourceError):
                while True:
                    line = await read_line(stream, buf, hold)
                    if not line:
                        return
                    if b"BYE" in line or line.startswith(b"-ERR"):
                        stats.displaced += 1

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for n in range(total):
            await trio.sleep_until(start + n / rate)
            nursery.start_soon(one, n)


@dataclass
class LoginSeries:
    """A real user's logins during a phase: each one's time, and those that failed."""

    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def worst(self) -> float:
        return max(self.times) if self.times else float("nan")


async def real_user(
    address: str, port: int, user: str, password: str, *, interval: float, count: int, series: LoginSeries
) -> None:
    """Log in ``count`` times, one start every ``interval`` seconds (each bounded by READ_TIMEOUT)."""
    start = trio.current_time()
    for n in range(count):
        await trio.sleep_until(start + n * interval)
        try:
            with trio.fail_after(READ_TIMEOUT * 2):
                series.times.append(await imap_login(address, port, user, password))
        except (OSError, TimeoutError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            series.failures.append(f"{type(exc).__name__}: {exc}")
