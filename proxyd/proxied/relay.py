"""After login: pump bytes both ways until one side closes (Dovecot's ``login_proxy_detach()``).

No per-line work happens here.  When both sides are plain TCP sockets the bytes
never enter Python: the process's splice hub (``proxyd.proxied.splicehub``) moves
them socket -> pipe -> socket inside the kernel, for every such session of the
process in one task.  With TLS on either side a plain pump with large reads is used
(two tasks per session).
Like Dovecot, the whole proxy ends when either side disconnects.

``relay(pause_after=...)`` relays only until the session is quiet (no bytes either
way for that long) or a bulk transfer begins, then stops with the session intact
(``RelayStats.paused``): what the hub had read and not written yet comes back in
``RelayStats.held_*``.  A high-security login process relays this way before it
hands a session to the relay process (``ProxiedConnection``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from proxyd import counters
from proxyd.errtext import cause_text, os_error
from proxyd.proxied.splicehub import HubRelay, hub, splice_loop
from proxyd.sockstream import socket_of

_CHUNK: Final = 256 * 1024


@dataclass(slots=True)
class RelayStats:
    """Byte counters and the side that ended the session, for the disconnect log line."""

    client_to_server: int = 0
    server_to_client: int = 0
    closed_by: str = ""  # "client" | "server"
    error: str = ""
    last_activity: float = field(default_factory=trio.current_time)
    #: ``pause_after``: stopped quiet (or at a bulk transfer's start), both sides open
    paused: bool = False
    #: when paused: bytes read and not written yet (not counted: whoever sends them does)
    held_to_server: bytes = b""
    held_to_client: bytes = b""


async def relay(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    *,
    client_pending: bytes = b"",
    server_pending: bytes = b"",
    stats: RelayStats | None = None,
    pause_after: float = 0.0,
) -> RelayStats:
    """Relay until either side closes; return the counters.

    ``client_pending`` are bytes the client pipelined after its login command,
    ``server_pending`` bytes the backend sent after its tagged OK; they go out first.
    ``stats`` goes on counting a session relayed before (paused); with ``pause_after``
    (seconds, plain sockets only) the relay also ends once the session is quiet (see
    the module's text).
    """
    stats = RelayStats() if stats is None else stats
    stats.paused = False
    if client_pending:
        await server.send_all(client_pending)
        _count(stats, "client", len(client_pending))
    if server_pending:
        await client.send_all(server_pending)
        _count(stats, "server", len(server_pending))

    client_sock, server_sock = socket_of(client), socket_of(server)
    if client_sock is not None and server_sock is not None:
        # both plain sockets: the process's splice hub moves the bytes, this task waits
        session = HubRelay(client_sock, server_sock, functools.partial(_count, stats))
        try:
            if pause_after > 0:
                await _until_quiet(session, stats, pause_after)
            else:
                await hub().relay(session)
        finally:
            # the hub counted the bytes it moved (and the process's counters) itself
            stats.client_to_server += session.dirs[0].count
            stats.server_to_client += session.dirs[1].count
            stats.last_activity = max(stats.last_activity, session.last_activity)
        if stats.paused:
            return stats
        if not session.bulk:
            stats.closed_by, stats.error = session.closed_by, session.error
            return stats
        # a bulk transfer: a task per direction from here on (see splicehub)
        to_server, to_client = session.dirs
        await _both_ways(
            stats,
            functools.partial(splice_loop, client_sock, server_sock, to_server, session.on_count),
            functools.partial(splice_loop, server_sock, client_sock, to_client, session.on_count),
        )
        return stats
    await _both_ways(
        stats,
        functools.partial(_pump_loop, client, server, stats, "client"),
        functools.partial(_pump_loop, server, client, stats, "server"),
    )
    return stats


def _last_activity(stats: RelayStats, session: HubRelay) -> float:
    return max(stats.last_activity, session.last_activity)


async def _until_quiet(session: HubRelay, stats: RelayStats, quiet: float) -> None:
    """The session on the hub until either side ends it, or until ``quiet`` seconds passed
    without a byte read either way, or a bulk transfer began: then ``stats.paused``, with
    what the hub held taken off it (and un-counted) into ``stats.held_*``."""
    relay_hub = hub()
    while True:
        with trio.move_on_at(_last_activity(stats, session) + quiet) as waited:
            await relay_hub.relay(session)
        if not (session.bulk or waited.cancelled_caught):
            return  # ended by a side (``session.closed_by``)
        if session.bulk or trio.current_time() - _last_activity(stats, session) >= quiet:
            break
        # bytes moved since the deadline was set: back on the hub until the next one
    stats.paused = True
    stats.held_to_server, stats.held_to_client = session.take_held()


async def _both_ways(
    stats: RelayStats, to_server: Callable[[], Awaitable[None]], to_client: Callable[[], Awaitable[None]]
) -> None:
    """Both directions until either ends; the first to end names the side that closed."""
    async with trio.open_nursery() as nursery:

        async def direction(name: str, run: Callable[[], Awaitable[None]]) -> None:
            try:
                await run()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                stats.error = stats.error or _describe(exc)
            if not stats.closed_by:
                stats.closed_by = name
            nursery.cancel_scope.cancel()

        nursery.start_soon(direction, "client", to_server)
        nursery.start_soon(direction, "server", to_client)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return os_error(exc)
    return cause_text(exc, str(exc) or type(exc).__name__)


def _count(stats: RelayStats, name: str, n: int) -> None:
    if name == "client":
        stats.client_to_server += n
        counters.add(counters.Counter.BYTES_CLIENT_TO_BACKEND, n)
    else:
        stats.server_to_client += n
        counters.add(counters.Counter.BYTES_BACKEND_TO_CLIENT, n)
    stats.last_activity = trio.current_time()


async def _pump_loop(src: trio.abc.Stream, dst: trio.abc.Stream, stats: RelayStats, name: str) -> None:
    while True:
        data = await src.receive_some(_CHUNK)
        if not data:
            return
        await dst.send_all(data)
        _count(stats, name, len(data))
