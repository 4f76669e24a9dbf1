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

from proxyd import counters
from proxyd.errtext import cause_text, os_error
from proxyd.sockstream import socket_of

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
        _count(stats, "client", len(client_pending))
    if server_pending:
        await client.send_all(server_pending)
        _count(stats, "server", len(server_pending))

    client_sock, server_sock = socket_of(client), socket_of(server)
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


class _PipePool:
    """Kernel pipes for splice, borrowed only while bytes are in flight.

    An idle session holds no pipe: Linux caps the pipe memory of an unprivileged
    user (pipe-user-pages-soft), and thousands of idle proxied sessions must not
    use it up, or every new pipe shrinks to one page.
    """

    def __init__(self, keep: int = 32) -> None:
        self._free: list[tuple[int, int]] = []
        self._keep = keep

    def take(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # EPERM past the per-user limit: keep the default size
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        return read_end, write_end

    def give_back(self, pipe: tuple[int, int], *, empty: bool) -> None:
        if empty and len(self._free) < self._keep:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


_PIPES = _PipePool()


def _splice_in(src_fd: int, write_end: int) -> int | None:
    """Bytes moved from the socket into the pipe; None when there is nothing to read now."""
    try:
        return os.splice(src_fd, write_end, _CHUNK, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return None


def _splice_out(read_end: int, dst_fd: int, count: int) -> int:
    """Bytes moved from the pipe to the socket; 0 when the socket cannot take more now."""
    try:
        return os.splice(read_end, dst_fd, count, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return 0


async def _splice_loop(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, stats: RelayStats, name: str
) -> None:
    src_fd, dst_fd = src.fileno(), dst.fileno()
    while True:
        await trio.lowlevel.wait_readable(src)
        pipe = _PIPES.take()
        pending = 0
        try:
            # drain what is there; a short read means the socket is empty for now
            while True:
                moved = _splice_in(src_fd, pipe[1])
                if moved is None:
                    break
                if moved == 0:
                    if name == "client":
                        # pass the client's EOF on; a backend's EOF is not passed to
                        # the client: the session may keep the client open a while
                        # longer (login_proxy_max_disconnect_delay) before closing it
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    return
                _count(stats, name, moved)
                pending = moved
                while pending:
                    sent = _splice_out(pipe[0], dst_fd, pending)
                    pending -= sent
                    if pending:
                        await trio.lowlevel.wait_writable(dst)
                if moved < _CHUNK:
                    break
                # data keeps coming: let other sessions run between chunks
                await trio.lowlevel.checkpoint()
        finally:
            _PIPES.give_back(pipe, empty=pending == 0)
