"""Listeners and the accept loop: turn sockets into ``LoginSession``s.

In this single-process arrangement one Trio run serves every listener; the
session code does not care how processes are arranged.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio

from proxyd.auth.request import ConnectionInfo
from proxyd.config.settings import InetListener, IPNetwork, Settings
from proxyd.login.imap import IMAP
from proxyd.login.protocol import ProtocolSpec
from proxyd.login.session import LoginContext, LoginSession
from proxyd.protocols.sessionid import new_session_id

log = logging.getLogger("proxyd")

#: login service name -> protocol plug-in
PROTOCOLS: Final[dict[str, ProtocolSpec]] = {"imap": IMAP}

_SKIPPABLE_BIND_ERRORS: Final = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL})


@dataclass(frozen=True, slots=True)
class BoundListener:
    """One listening socket and what it serves."""

    listener: trio.SocketListener
    spec: ProtocolSpec
    config: InetListener
    address: str


def _bind_host(address: str) -> str | None:
    if address == "*":
        return "0.0.0.0"
    if address == "::":
        return "::"
    return address


async def open_listeners(settings: Settings) -> list[BoundListener]:
    """Bind every configured listener of every enabled protocol (``port = 0`` disables one)."""
    bound: list[BoundListener] = []
    for proto in settings.protocols:
        spec = PROTOCOLS.get(proto)
        if spec is None:
            continue
        service = settings.service(spec.service)
        for config in service.listeners:
            if config.port == 0:
                continue
            for address in config.addresses or settings.listen:
                host = _bind_host(address)
                try:
                    listeners = await trio.open_tcp_listeners(config.port, host=host, backlog=4096)
                except OSError as exc:
                    if address == "::" and exc.errno in _SKIPPABLE_BIND_ERRORS:
                        log.warning("%s: IPv6 not available here, skipping listen on [::]", spec.service)
                        continue
                    raise OSError(
                        exc.errno, f"service({spec.service}): listen({address}, {config.port}) failed: {exc.strerror}"
                    ) from exc
                bound += [BoundListener(lst, spec, config, address) for lst in listeners]
    return bound


def _plain_ip(ip: str) -> str:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _in_networks(ip: str, networks: Sequence[IPNetwork]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in networks)


def connection_info(sock_stream: trio.SocketStream, service: str, settings: Settings, *, tls: bool) -> ConnectionInfo:
    """Addresses, trust and the session id of a freshly accepted connection (Dovecot's ``client_alloc()``)."""
    local = sock_stream.socket.getsockname()
    remote = sock_stream.socket.getpeername()
    lip, lport = _plain_ip(local[0]), int(local[1])
    rip, rport = _plain_ip(remote[0]), int(remote[1])
    trusted = _in_networks(rip, settings.login_trusted_networks)
    return ConnectionInfo(
        service=service,
        local_ip=lip,
        local_port=lport,
        remote_ip=rip,
        remote_port=rport,
        real_local_ip=lip,
        real_local_port=lport,
        real_remote_ip=rip,
        real_remote_port=rport,
        secured=tls or trusted or rip == lip,
        tls=tls,
        trusted=trusted,
        session_id=new_session_id(rip, rport, time.time_ns() // 1000),
    )


async def serve(
    bound: list[BoundListener],
    current_context: Callable[[], LoginContext],
    session_nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener until cancelled.

    Sessions run in ``session_nursery``, so cancelling the accept loops (shutdown)
    leaves them running for their grace period.  Each connection gets the context
    current at accept time.
    """
    async with trio.open_nursery() as nursery:
        for item in bound:
            handler = partial(_handle, item, current_context)
            nursery.start_soon(
                partial(trio.serve_listeners, handler, [item.listener], handler_nursery=session_nursery)
            )
        task_status.started()


async def _handle(item: BoundListener, current_context: Callable[[], LoginContext], stream: trio.SocketStream) -> None:
    ctx = current_context()
    try:
        conn = connection_info(stream, item.spec.name, ctx.settings, tls=item.config.ssl)
    except OSError:
        await trio.aclose_forcefully(stream)  # the client left before we looked
        return
    client: trio.abc.Stream = stream
    if item.config.ssl:
        if ctx.server_tls is None:
            await trio.aclose_forcefully(stream)
            return
        client = trio.SSLStream(stream, ctx.server_tls, server_side=True)
    session = LoginSession(ctx, item.spec, client, conn, implicit_tls=item.config.ssl)
    try:
        await session.run()
    except Exception:
        # a bug must cost one connection, never the process
        logging.getLogger(item.spec.service).exception("Internal error in session: %s", session.log_fields())
        await trio.aclose_forcefully(client)
