"""The ``tcpwrap`` access service: a UNIX socket that judges client connections
(Dovecot's ``src/util/tcpwrap.c``).

A login process connects, sends ``<daemon>\\n`` (the protocol: ``imap``,
``pop3``) with the client's TCP socket attached (SCM_RIGHTS), and reads one
answer: ``1\\n`` allowed, ``0\\n`` refused.  The verdict comes from
hosts.allow/hosts.deny, re-read for every lookup as libwrap does, with the
client's address from ``getpeername()`` of the received socket and the server
address and port from its ``getsockname()``; no name or IDENT lookups (see
``proxyd.access.match``).

Unlike Dovecot's tcpwrap (one process per lookup, ``client_limit = 1``), one
Trio task serves each lookup, so lookups run side by side; the files are read
and matched in a worker thread.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import stat
from typing import Final

import trio

from proxyd.access.match import Decision, Endpoint, Request, hosts_access
from proxyd.access.tables import load_table

log = logging.getLogger("tcpwrap")

#: Dovecot's INPUT_TIMEOUT_MSECS: a client that sends nothing is dropped
INPUT_TIMEOUT: Final = 10.0
#: Dovecot reads the request with one ``fd_read()`` into a 1024-byte buffer
MAX_REQUEST: Final = 1024
_FD_SIZE: Final = array.array("i").itemsize


def endpoints_of(fd: int) -> tuple[Endpoint, Endpoint]:
    """(client, server) of a received connection, as libwrap's ``sock_host()`` sees them.

    A socket that is not TCP over IPv4/IPv6, or whose peer is gone, has the
    address ``"unknown"``.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket at all
        return Endpoint(), Endpoint()
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return Endpoint(), Endpoint()
        try:
            peer = sock.getpeername()
        except OSError:
            return Endpoint(), Endpoint()
        local = sock.getsockname()
        return Endpoint(addr=str(peer[0])), Endpoint(addr=str(local[0]), port=int(local[1]))
    finally:
        sock.detach()  # the caller owns and closes the fd


def decide(daemon: str, fd: int | None, allow_path: str, deny_path: str) -> Decision:
    """The verdict for the connection ``fd`` asking for ``daemon`` (blocking: reads the files)."""
    client, server = endpoints_of(fd) if fd is not None else (Endpoint(), Endpoint())
    allow, deny = load_table(allow_path), load_table(deny_path)
    for warning in allow.warnings + deny.warnings:
        log.warning("%s", warning)
    return hosts_access(Request(daemon=daemon, client=client, server=server), allow, deny)


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    return fds


async def handle_lookup(conn: trio.socket.SocketType, allow_path: str, deny_path: str) -> None:
    """Serve one lookup on an accepted connection and close it.

    A failure inside costs this lookup only (the asker sees no answer, which
    refuses the client), never the service.
    """
    received: list[int] = []
    try:
        await _lookup(conn, allow_path, deny_path, received)
    except Exception:
        log.exception("Internal error in tcpwrap lookup")
    finally:
        for fd in received:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


async def _lookup(
    conn: trio.socket.SocketType, allow_path: str, deny_path: str, received: list[int]
) -> None:
    """Read the request, judge, answer; fds that arrived go into ``received`` for closing."""
    with trio.move_on_after(INPUT_TIMEOUT):
        try:
            data, ancdata, _flags, _addr = await conn.recvmsg(
                MAX_REQUEST, socket.CMSG_SPACE(_FD_SIZE)
            )
        except OSError as exc:
            log.error("fd_read() failed: %s", exc.strerror or exc)
            return
        received.extend(_received_fds(ancdata))
        if not data:
            log.error("fd_read() failed: %s", "Connection reset by peer")
            return
        if not (1 < len(data) < MAX_REQUEST and data.endswith(b"\n")):
            log.error("Invalid input from client")
            return
        daemon = data[:-1].split(b"\0", 1)[0].decode("latin-1")
        fd = received[0] if received else None
        decision = await trio.to_thread.run_sync(decide, daemon, fd, allow_path, deny_path)
        for note in decision.notes:
            log.warning("%s", note)
        verdict = "allowed" if decision.allowed else "refused"
        log.debug("%s %s: %s", daemon, verdict, decision.reason)
        with contextlib.suppress(OSError):
            await conn.send(b"1\n" if decision.allowed else b"0\n")


async def serve_tcpwrap_socket(
    listener: trio.socket.SocketType,
    allow_path: str = "/etc/hosts.allow",
    deny_path: str = "/etc/hosts.deny",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve lookups on ``listener``, a listening UNIX stream socket, until cancelled."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            conn, _ = await listener.accept()
            nursery.start_soon(handle_lookup, conn, allow_path, deny_path)


async def serve_tcpwrap(
    listener_path: str,
    allow_path: str = "/etc/hosts.allow",
    deny_path: str = "/etc/hosts.deny",
    *,
    mode: int = 0o600,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the UNIX socket ``listener_path`` and serve tcpwrap lookups until cancelled.

    A stale socket at ``listener_path`` is replaced (anything else there is an
    error).  ``mode`` is the socket's permission bits (Dovecot's
    ``unix_listener`` default is 0600; the login processes' user must be able
    to connect).  Use ``nursery.start()`` to know when it is listening; the
    socket file is removed again when the service stops.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(listener_path).st_mode):
            os.unlink(listener_path)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await listener.bind(listener_path)
        os.chmod(listener_path, mode)
        listener.listen(128)
        try:
            await serve_tcpwrap_socket(listener, allow_path, deny_path, task_status=task_status)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(listener_path)
    finally:
        listener.close()
