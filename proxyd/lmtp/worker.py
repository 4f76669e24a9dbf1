"""An ``lmtp`` process: accepts MTA connections on the service's listeners and runs ``LmtpSession``s.

It keeps the same accounting with the master as a login process (``Status``
reports: clients and whether it still accepts, so ``process_limit``,
``client_limit`` and ``service_count`` work as for any Dovecot service) but
none of the login services' extras: no auth penalty, no pre-login limits
("Connection queue full" is for clients that have not logged in; an MTA
never logs in), no sessions for ``proxyctl who``/``kick`` (Dovecot's
``doveadm proxy list`` does not show LMTP deliveries either).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Final, assert_never

import trio

from proxyd.auth.request import ConnectionInfo
from proxyd.config.filters import FilterResolver
from proxyd.config.settings import EffectiveService, InetListener, Settings, UnixListener
from proxyd.ipc.channel import Channel
from proxyd.ipc.inherited import accept_forever
from proxyd.ipc.messages import (
    CacheFlush,
    Command,
    CountReply,
    IpLimit,
    Kick,
    LastLogin,
    QueueFull,
    Report,
    ServiceFull,
    Status,
    Stop,
    Who,
    WhoReply,
)
from proxyd.ipc.serving import serve_until_stopped
from proxyd.lmtp.session import LmtpContext, LmtpSession
from proxyd.login.haproxy import HaproxyRejected, read_proxy_header
from proxyd.login.server import apply_proxy_header, connection_info, in_networks
from proxyd.login.tls import server_key
from proxyd.protocols.lmtp.plugin import LMTP
from proxyd.protocols.sessionid import new_session_id
from proxyd.wakeup import Wakeup

log = logging.getLogger("lmtp")

#: the service's name (its ``service`` block, its process title)
LMTP_SERVICE: Final = LMTP.service



class LmtpWorker:
    """The trio side of one lmtp process."""

    def __init__(
        self,
        ctx: LmtpContext,
        settings: Settings,
        service: EffectiveService,
        listeners: list[tuple[socket.socket, InetListener | UnixListener]],
        control: Channel[Report, Command],
        on_finished: Callable[[], None] | None = None,
        *,
        resolver: FilterResolver | None = None,
        server_tls_by_key: Mapping[str, ssl.SSLContext] | None = None,
    ) -> None:
        self.ctx = ctx
        #: Dovecot's protocol/local/remote blocks, applied per connection
        self.resolver = resolver
        self.server_tls_by_key = server_tls_by_key or {}
        self.settings = settings
        self.service = service
        self.listeners = listeners
        self.control = control
        self.on_finished = on_finished
        self.clients = 0
        self.served = 0
        self._conn_seq = 0
        self.stopping = False
        self._changed = Wakeup()
        self._last_status: tuple[bool, bool] = (True, True)

    def accepting(self) -> bool:
        if self.stopping:
            return False
        if self.service.service_count and self.served >= self.service.service_count:
            return False
        return self.clients < self.service.client_limit

    def _finished(self) -> bool:
        exhausted = self.stopping or (0 < self.service.service_count <= self.served)
        return exhausted and not self.clients

    async def _report(self) -> None:
        self._changed.notify()
        status = (self.accepting(), not self.clients)
        if status == self._last_status:
            return
        self._last_status = status
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.control.send(Status(clients=self.clients, accepting=status[0]))

    async def run(self) -> None:
        async with serve_until_stopped(
            finished=self._finished, changed=self._changed, stop=self._stop, on_finished=self.on_finished
        ) as nursery:
            nursery.start_soon(self._control_loop)
            for sock, listener in self.listeners:
                nursery.start_soon(self._accept_loop, sock, listener, nursery)
            await self._report()

    async def _stop(self) -> None:
        self.stopping = True
        await self._report()

    async def _accept_loop(
        self, sock: socket.socket, listener: InetListener | UnixListener, nursery: trio.Nursery
    ) -> None:
        def take(conn: socket.socket, _addr: object) -> None:
            self.served += 1
            self.clients += 1
            nursery.start_soon(self._serve, conn, listener)

        await accept_forever(sock, take, name=LMTP_SERVICE, accepting=self.accepting, changed=self._changed)

    async def _serve(self, conn: socket.socket, listener: InetListener | UnixListener) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        try:
            await self._report()
            try:
                info = self._info(stream, conn)
                if listener.haproxy:
                    settings = self.settings
                    header, _ = await read_proxy_header(
                        stream, info.real_remote_ip, settings.haproxy_trusted_networks, settings.haproxy_timeout
                    )
                    info = apply_proxy_header(info, header, settings)
            except HaproxyRejected as exc:
                log.log(exc.level, "%s", exc.log_line)
                await trio.aclose_forcefully(stream)
                return
            except OSError:
                await trio.aclose_forcefully(stream)
                return
            ctx, trusted = self._for_connection(info)
            info = dataclasses.replace(info, trusted=trusted)
            client: trio.abc.Stream = stream
            if listener.ssl:
                if ctx.server_tls is None:
                    await trio.aclose_forcefully(stream)
                    return
                client = trio.SSLStream(stream, ctx.server_tls, server_side=True)
                info = dataclasses.replace(info, tls=True, secured=True)
            try:
                self._conn_seq += 1
                await LmtpSession(ctx, client, info, self._conn_seq).run()
            except Exception:
                log.exception("Internal error in LMTP session from %s", info.remote_ip or "local")
        finally:
            self.clients -= 1
            if not self._finished():
                with trio.CancelScope(shield=True):
                    await self._report()
            else:
                self._changed.notify()

    def _for_connection(self, info: ConnectionInfo) -> tuple[LmtpContext, bool]:
        """The context with Dovecot's protocol/local/remote blocks applied; is the MTA trusted?"""
        if self.resolver is None or not info.remote_ip:
            return self.ctx, info.trusted
        settings = self.resolver.lookup(LMTP_SERVICE, info.local_ip, info.remote_ip)
        trusted = in_networks(info.remote_ip, settings.login_trusted_networks)
        if settings is self.settings:
            return self.ctx, trusted
        ctx = dataclasses.replace(
            self.ctx,
            greeting=settings.login_greeting,
            server_tls=self.server_tls_by_key.get(server_key(settings)),
        )
        return ctx, trusted

    def _info(self, stream: trio.SocketStream, conn: socket.socket) -> ConnectionInfo:
        if conn.family == socket.AF_UNIX:
            # a local MTA on the UNIX socket: no addresses, secured, not a trusted peer for XCLIENT
            return ConnectionInfo(
                service="lmtp", local_ip="", local_port=0, remote_ip="", remote_port=0,
                real_local_ip="", real_local_port=0, real_remote_ip="", real_remote_port=0,
                secured=True, tls=False, session_id=new_session_id("", 0, 0),
            )
        return connection_info(stream, "lmtp", self.settings, tls=False)

    async def _control_loop(self) -> None:
        await self.control.each(self._command)
        self.stopping = True
        self._changed.notify()

    async def _command(self, message: Command) -> None:
        match message:
            case Stop():
                await self._stop()
            case QueueFull() | ServiceFull() | IpLimit() | CacheFlush() | LastLogin():
                # an MTA is never a pre-login client to displace (a full lmtp service makes
                # new MTAs wait in the listen queue, as in Dovecot); the cache is the auth's
                pass
            case Who():
                await self.control.send(WhoReply(message.id, ()))
            case Kick():
                await self.control.send(CountReply(message.id, 0))
            case _:
                assert_never(message)
