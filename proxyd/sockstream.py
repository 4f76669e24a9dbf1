"""A connected socket as a Trio stream, for the per-login hot path.

``trio.SocketStream`` takes a trip through the scheduler for every send and
receive, even when the kernel could do it at once (a checkpoint before and a
yield after), and sets two TCP options on every socket it wraps.  A login makes
about twenty such calls (client, backend, auth and master sockets), and each
trip costs more than the system call itself.  ``SockStream`` does what it can
at once and waits (``wait_readable`` / ``wait_writable``) only when the socket
would block; every ``_FAIR_OPS``-th call that did not wait still yields, so a
client that always has data ready cannot keep the other sessions of its
process from running.  Every call is still a cancellation point: in a
cancelled scope it raises before it sends or receives anything.

It sets no socket options: accepted sockets inherit ``TCP_NODELAY`` and
``TCP_NOTSENT_LOWAT`` from their listener (``proxyd.master.listeners``), and
``connect_ip`` sets them once before connecting.  ``socket`` is the Trio
socket object, as on ``trio.SocketStream``, for code that needs the socket
itself (the relay's splice, the hand-off, the HAProxy header peek).
"""

from __future__ import annotations

import contextlib
import errno
import socket as stdlib_socket
from typing import Final

import trio

#: calls that completed without waiting, between two forced yields
_FAIR_OPS: Final = 16
#: what trio.SocketStream sets (see ``set_tcp_options``)
_NOTSENT_LOWAT: Final = 2**14
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})
_DEFAULT_RECEIVE: Final = 65536


def set_tcp_options(sock: stdlib_socket.socket) -> None:
    """trio.SocketStream's defaults (no Nagle delay, a 16 KiB unsent-data mark), set once:
    on a listener they are inherited by every connection it accepts."""
    sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
    if hasattr(stdlib_socket, "TCP_NOTSENT_LOWAT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)


def _broken(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class SockStream(trio.abc.HalfCloseableStream):
    """A connected stream socket (TCP or UNIX) as a ``trio.abc.HalfCloseableStream``."""

    __slots__ = ("_fast", "_sending", "_sock", "socket")

    def __init__(self, sock: stdlib_socket.socket) -> None:
        #: the Trio socket (``from_stdlib_socket`` also makes it non-blocking)
        self.socket = trio.socket.from_stdlib_socket(sock)
        self._sock = sock
        self._sending = False
        self._fast = 0

    async def _fair(self) -> None:
        """A yield every ``_FAIR_OPS`` calls that did not wait."""
        self._fast += 1
        if self._fast >= _FAIR_OPS:
            self._fast = 0
            await trio.lowlevel.checkpoint()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending data on this stream")
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing is sent
        sock = self._sock
        self._sending = True
        try:
            with memoryview(data) as view:
                total, size = 0, len(view)
                if size == 0 and sock.fileno() == -1:
                    raise trio.ClosedResourceError("socket was already closed")
                while total < size:
                    try:
                        total += sock.send(view[total:] if total else view)
                    except BlockingIOError:
                        self._fast = 0
                        await trio.lowlevel.wait_writable(sock)
                    except OSError as exc:
                        raise _broken(exc) from exc
        finally:
            self._sending = False
        await self._fair()

    async def wait_send_all_might_not_block(self) -> None:
        if self._sock.fileno() == -1:
            raise trio.ClosedResourceError
        await trio.lowlevel.wait_writable(self._sock)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.socket.did_shutdown_SHUT_WR:
            return
        try:
            self.socket.shutdown(stdlib_socket.SHUT_WR)
        except OSError as exc:
            raise _broken(exc) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = _DEFAULT_RECEIVE
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                self._fast = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                raise _broken(exc) from exc
            await self._fair()
            return data

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


def socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under a plain (no TLS) socket stream of either kind; None for any other."""
    if isinstance(stream, (SockStream, trio.SocketStream)):
        return stream.socket
    return None


async def connect_ip(
    ip: str, port: int, source_ip: str = "", *, bind_no_port: int = 0, local: list[str] | None = None
) -> SockStream:
    """A plain TCP connect to an IP address (no name resolution, no happy eyeballs), with
    ``set_tcp_options``; ``source_ip`` binds first (``bind_no_port``: the
    ``IP_BIND_ADDRESS_NO_PORT`` option number, 0 for none).  When the connect fails,
    ``local`` (if given) gets the ``IP:PORT`` it was made from, for the log."""
    family = stdlib_socket.AF_INET6 if ":" in ip else stdlib_socket.AF_INET
    # made non-blocking by the kernel: no FIONBIO here (SockStream's Trio socket sets it once)
    sock = stdlib_socket.socket(family, stdlib_socket.SOCK_STREAM | stdlib_socket.SOCK_NONBLOCK)
    try:
        set_tcp_options(sock)
        if source_ip:
            if bind_no_port:
                # bind-before-connect: the kernel picks the port at connect() time
                with contextlib.suppress(OSError):
                    sock.setsockopt(stdlib_socket.SOL_IP, bind_no_port, 1)
            sock.bind((source_ip, 0))
        err = sock.connect_ex((ip, port))
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ERROR)
        else:
            await trio.lowlevel.checkpoint()
        if err:
            raise OSError(err, f"Error connecting to {(ip, port)!r}: {errno.errorcode.get(err, err)}")
    except BaseException:
        if local is not None:
            local.append(sockname_text(sock))
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return SockStream(sock)


def sockname_text(sock: stdlib_socket.socket | trio.socket.SocketType) -> str:
    """The socket's own ``IP:PORT`` ("" when it has none): Dovecot's ``local=`` in a
    failed proxy connection's log line."""
    try:
        name = sock.getsockname()
    except OSError:
        return ""
    if not isinstance(name, tuple) or not name[1]:
        return ""
    return f"{name[0]}:{name[1]}"
