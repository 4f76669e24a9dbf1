"""Reading the PROXY header of a ``haproxy = yes`` listener's connection (Dovecot's
``master_service_haproxy_new()``), before anything else touches the stream.

The header is consumed exactly: the socket is read with ``MSG_PEEK`` and only
the header's own bytes are taken off it.  Whatever the client sent after the
header (an IMAP command, a TLS ClientHello) stays in the kernel's buffer for
the session, so an implicit-TLS listener can wrap the raw stream afterwards as
if no header had been there.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Final

import trio

from proxyd.protocols.haproxy import (
    MAX_HEADER_SIZE,
    HaproxyError,
    HaproxyParser,
    NeedData,
    ProxyHeader,
)
from proxyd.sockstream import SockStream

#: Dovecot's ``haproxy_timeout`` default
DEFAULT_TIMEOUT: Final = 3.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class HaproxyRejected(Exception):
    """The connection must be closed without a word; log ``log_line`` at ``level``.

    The texts and levels are Dovecot's: ``Client not trusted`` is a warning,
    a timeout or a bad header an error, a client that left an info line.
    """

    def __init__(self, log_line: str, level: int = logging.ERROR) -> None:
        super().__init__(log_line)
        self.log_line = log_line
        self.level = level


def is_trusted(peer_ip: str, trusted: Sequence[IPNetwork]) -> bool:
    """True when ``peer_ip`` is in one of ``trusted`` (``haproxy_trusted_networks``).

    An IPv4-mapped IPv6 peer counts as its IPv4 address, as in Dovecot's
    ``net_is_in_network()``; an empty list trusts nobody.
    """
    try:
        addr = ipaddress.ip_address(peer_ip.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in trusted)


def _plain(address: object) -> tuple[str, int]:
    """(ip, port) of a ``getsockname()``/``getpeername()`` result, IPv4-mapped IPv6 as IPv4."""
    if not isinstance(address, tuple) or len(address) < 2:
        return "", 0
    ip = str(address[0]).split("%", 1)[0]
    mapped = ipaddress.ip_address(ip)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        ip = str(mapped.ipv4_mapped)
    return ip, int(address[1])


def _disconnected(rip: str, reason: str) -> HaproxyRejected:
    return HaproxyRejected(f"haproxy: Client disconnected (rip={rip}): {reason}", logging.INFO)


async def _discard(sock: trio.socket.SocketType, count: int, rip: str) -> None:
    """Take ``count`` already-peeked bytes off the socket."""
    while count > 0:
        try:
            chunk = await sock.recv(count)
        except OSError as exc:
            raise _disconnected(rip, exc.strerror or str(exc)) from exc
        if not chunk:
            raise _disconnected(rip, os.strerror(errno.ECONNRESET))
        count -= len(chunk)


async def _read_exact_header(
    sock: trio.socket.SocketType, new_parser: Callable[[], HaproxyParser], rip: str
) -> ProxyHeader:
    consumed = b""
    while True:
        try:
            peeked = await sock.recv(max(1, MAX_HEADER_SIZE - len(consumed)), socket.MSG_PEEK)
        except OSError as exc:
            raise _disconnected(rip, exc.strerror or str(exc)) from exc
        if not peeked:
            # Dovecot maps EOF to ECONNRESET for this log line
            raise _disconnected(rip, os.strerror(errno.ECONNRESET))
        # a fresh parser over everything so far: the peeked bytes are not ours yet
        result = new_parser().feed(consumed + peeked)
        if isinstance(result, NeedData):
            # every byte before an incomplete header's end belongs to the header
            await _discard(sock, len(peeked), rip)
            consumed += peeked
            continue
        if isinstance(result, HaproxyError):
            raise HaproxyRejected(result.log_line(rip), logging.ERROR)
        await _discard(sock, result.length - len(consumed), rip)
        return result


async def read_proxy_header(
    stream: trio.SocketStream | SockStream,
    peer_ip: str,
    trusted: Sequence[IPNetwork],
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the haproxy_timeout setting
) -> tuple[ProxyHeader, bytes]:
    """Check the peer and read its PROXY header off ``stream``.

    ``peer_ip`` is the real (socket) remote address, ``trusted`` the parsed
    ``haproxy_trusted_networks``, ``timeout`` ``haproxy_timeout`` in seconds.
    Returns the header and the bytes read past it, which are always ``b""``
    here because the header is consumed exactly (the rest stays unread on the
    socket).  Raises ``HaproxyRejected`` for an untrusted peer, a timeout, a
    client that left, or an invalid header; the caller then closes the
    connection and logs ``exc.log_line`` at ``exc.level``.
    """
    if not is_trusted(peer_ip, trusted):
        raise HaproxyRejected(f"haproxy: Client not trusted (rip={peer_ip})", logging.WARNING)
    sock = stream.socket
    try:
        lip, lport = _plain(sock.getsockname())
        _, rport = _plain(sock.getpeername())
    except OSError as exc:
        raise _disconnected(peer_ip, exc.strerror or str(exc)) from exc

    def new_parser() -> HaproxyParser:
        return HaproxyParser(
            real_remote_ip=peer_ip, real_remote_port=rport, real_local_ip=lip, real_local_port=lport
        )

    with trio.move_on_after(timeout):
        header = await _read_exact_header(sock, new_parser, peer_ip)
        return header, b""
    raise HaproxyRejected(f"haproxy: Client timed out (rip={peer_ip})", logging.ERROR)
