"""Sockets a child process inherits from the master (bound before any fork), and the
one loop that accepts on them."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from proxyd.config.settings import InetListener, UnixListener
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd")


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """One listening socket: which service and which ``inet_listener``/``unix_listener`` it belongs to."""

    service: str
    listener: InetListener | UnixListener
    address: str  # the IP address, or the UNIX socket's path
    sock: socket.socket


#: accept() failures that pass (the process is short of descriptors or memory for a moment)
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def accept_forever(
    sock: socket.socket,
    take: Callable[[socket.socket, Any], None],
    *,
    name: str,
    accepting: Callable[[], bool] = lambda: True,
    changed: Wakeup | None = None,
) -> None:
    """Accept on an inherited listening socket that other processes share, forever.

    ``take`` gets each new connection and its peer's address.  While ``accepting()`` is false the loop
    waits for ``changed``; a connection another process took first is no
    error.  Short-lived resource errors are logged as ``NAME: accept() failed``
    and retried.
    """
    sock.setblocking(False)
    # socket.accept() without its two enum conversions per call (family and type of the
    # listener, asked again for every connection); the listener is non-blocking, so
    # accept() would not make the new socket blocking either
    family, kind, proto = int(sock.family), int(sock.type), sock.proto
    while True:
        while not accepting():
            assert changed is not None, "accepting() can only change with a Wakeup"
            await changed.wait()
        await trio.lowlevel.wait_readable(sock)
        if not accepting():
            continue
        try:
            fd, addr = sock._accept()  # type: ignore[attr-defined]  # what accept() calls
            conn = socket.socket(family, kind, proto, fileno=fd)
        except (BlockingIOError, InterruptedError):
            continue  # another process took it
        except OSError as exc:
            if exc.errno in _ACCEPT_RETRY_ERRNOS:
                log.error("%s: accept() failed: %s", name, exc.strerror)
                await trio.sleep(0.1)
                continue
            raise
        take(conn, addr)
