"""``login_access_sockets``: ask access services about a new client before greeting it
(Dovecot's ``src/login-common/access-lookup.c`` and ``login_access_lookup_next()``
in ``src/login-common/main.c``).

For each socket in order: connect, send ``<protocol>\\n`` with the client's
socket attached (SCM_RIGHTS), and read one reply.  Exactly ``1\\n`` allows and
moves on to the next socket; ``0\\n``, anything else, end of file, an error or
no reply within the timeout refuses, and the client is to be closed without a
greeting.  While the lookup runs the client socket is watched: a client that
hangs up ends the lookup (refused).  The log lines are Dovecot's.
"""

from __future__ import annotations

import array
import logging
import os
import socket
from collections.abc import Sequence
from typing import Final

import trio

#: Dovecot's ACCESS_LOOKUP_TIMEOUT_MSECS
DEFAULT_TIMEOUT: Final = 60.0

_log = logging.getLogger("proxyd")


class _ClientGone(Exception):
    pass


def _peer_ip(fd: int) -> str:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return ""
    try:
        return str(sock.getpeername()[0])
    except (OSError, IndexError):
        return ""
    finally:
        sock.detach()


async def _watch_client(fd: int) -> None:
    """Return when the client sends data; raise ``_ClientGone`` when it disconnects."""
    try:
        probe = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                data = probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _ClientGone from exc
            if not data:
                raise _ClientGone
            return  # real input: stop watching, as Dovecot does
    finally:
        probe.detach()


async def _lookup(
    path: str, name: str, protocol: str, client_fd: int, log: logging.Logger
) -> bool | None:
    """One access socket's answer (Dovecot's ``access_lookup()`` and its input handler).

    None when the request could not even be sent: Dovecot then drops the client
    without the "Client refused" line.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            await sock.connect(path)
        except OSError as exc:
            log.error("connect(%s) failed: %s", name, exc.strerror or exc)
            return None
        line = f"{protocol}\n".encode()
        fds = array.array("i", [client_fd]).tobytes()
        try:
            sent = await sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            log.error("fd_send(%s) failed: %s", name, exc.strerror or exc)
            return None
        if sent != len(line):
            log.error("fd_send(%s) didn't write enough bytes", name)
            return None
        try:
            reply = await sock.recv(3)
        except OSError as exc:
            log.error("read(%s) failed: %s", name, exc.strerror or exc)
            return False
        if reply == b"1\n":
            return True
        if reply not in (b"", b"0\n"):
            log.error("access(%s): Invalid input", name)
        return False


async def _ask(
    path: str, name: str, protocol: str, client_fd: int, seconds: float, log: logging.Logger
) -> bool | None:
    """``_lookup()`` within ``seconds`` while watching the client; raises ``_ClientGone``."""
    answer: list[bool | None] = []
    async with trio.open_nursery() as nursery:

        async def lookup() -> None:
            with trio.move_on_after(seconds):
                answer.append(await _lookup(path, name, protocol, client_fd, log))
            if not answer:
                log.error("access(%s): Timed out while waiting for reply", name)
                answer.append(False)
            nursery.cancel_scope.cancel()

        nursery.start_soon(lookup)
        nursery.start_soon(_watch_client, client_fd)
    return answer[0] if answer else False


async def check_access(
    socket_paths: Sequence[str],
    protocol: str,
    client_fd: int,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Dovecot's fixed per-socket lookup timeout
    *,
    base_dir: str | None = None,
    remote_ip: str | None = None,
    log: logging.Logger | None = None,
) -> bool:
    """Ask every access socket about the client on ``client_fd``; True only if all allow.

    ``socket_paths`` are the names of ``login_access_sockets`` in order (empty:
    allowed); a relative name is taken under ``base_dir`` (Dovecot's login
    processes resolve them in their ``login/`` directory), and the names as
    given appear in the log.  ``protocol`` is the daemon name sent (``imap``,
    ``pop3``).  ``timeout`` is per socket.  ``client_fd`` stays open and
    owned by the caller; nothing is read from it.  ``remote_ip`` is for the
    log lines (default: the socket's peer address).  Logged as Dovecot does:
    a refusal at info level, ``access(NAME): Client refused (rip=...)``; a
    client that hung up, ``access(NAME): Client disconnected during lookup``;
    errors talking to the service at error level.
    """
    logger = log or _log
    rip = remote_ip if remote_ip is not None else _peer_ip(client_fd)
    for name in socket_paths:
        path = name if base_dir is None or os.path.isabs(name) else os.path.join(base_dir, name)
        gone = False
        allowed: bool | None = False
        try:
            allowed = await _ask(path, name, protocol, client_fd, timeout, logger)
        except* _ClientGone:
            gone = True
        if gone:
            logger.info("access(%s): Client disconnected during lookup (rip=%s)", name, rip)
            return False
        if allowed is None:
            return False
        if not allowed:
            logger.info("access(%s): Client refused (rip=%s)", name, rip)
            return False
    return True
