"""After login: pump bytes both ways until one side closes (Dovecot's ``login_proxy_detach()``).

No per-line work happens here.  When both sides are plain TCP sockets the bytes
never enter Python: ``os.splice`` moves them socket -> pipe -> socket inside the
kernel.  With TLS on either side a plain pump with large reads is used.
Like Dovecot, the whole proxy ends when either side disconnects.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass, field
from typing import Final

import trio

_CHUNK: Final = 256 * 1024
_PIPE_SIZE: Final = 256 * 1024
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


@dataclass(slots=True)
class RelayStats:
    """Byte counters and the side that ended the session, for the disconnect log line."""

    client_to_server: int = 0
    server_to_client: int = 0
    closed_by: str = ""  # "client" | "server"
    error: str = ""
    last_activity: float = field(default_factory=trio.current_time)


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None


async def relay(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    *,
    client_pending: bytes = b"",
    server_pending: bytes = b"",
) -> RelayStats:
    """Relay until either side closes; return the counters.

    ``client_pending`` are bytes the client pipelined after its login command,
    ``server_pending`` bytes the backend sent after its tagged OK; they go out first.
    """
    stats = RelayStats()
    if client_pending:
        await server.send_all(client_pending)
        stats.client_to_server += len(client_pending)
    if server_pending:
        await client.send_all(server_pending)
        stats.server_to_client += len(server_pending)

    client_sock, server_sock = _socket_of(client), _socket_of(server)
    async with trio.open_nursery() as nursery:

        async def direction(name: str, src: trio.abc.Stream, dst: trio.abc.Stream,
                            src_sock: trio.socket.SocketType | None,
                            dst_sock: trio.socket.SocketType | None) -> None:
            try:
                if src_sock is not None and dst_sock is not None:
                    await _splice_loop(src_sock, dst_sock, stats, name)
                else:
                    await _pump_loop(src, dst, stats, name)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                stats.error = stats.error or _describe(exc)
            if not stats.closed_by:
                stats.closed_by = name
            nursery.cancel_scope.cancel()

        nursery.start_soon(direction, "client", client, server, client_sock, server_sock)
        nursery.start_soon(direction, "server", server, client, server_sock, client_sock)
    return stats


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _count(stats: RelayStats, name: str, n: int) -> None:
    if name == "client":
        stats.client_to_server += n
    else:
        stats.server_to_client += n
    stats.last_activity = trio.current_time()


async def _pump_loop(src: trio.abc.Stream, dst: trio.abc.Stream, stats: RelayStats, name: str) -> None:
    while True:
        data = await src.receive_some(_CHUNK)
        if not data:
            return
        await dst.send_all(data)
        _count(stats, name, len(data))


async def _splice_loop(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, stats: RelayStats, name: str
) -> None:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        src_fd, dst_fd = src.fileno(), dst.fileno()
        while True:
            try:
                moved = os.splice(src_fd, write_end, _CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src)
                continue
            if moved == 0:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            _count(stats, name, moved)
            while moved:
                try:
                    moved -= os.splice(read_end, dst_fd, moved, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst)
            # give other sessions a turn when data never stops coming
            await trio.lowlevel.checkpoint()
    finally:
        os.close(read_end)
        os.close(write_end)
