"""A login process: accepts on its service's listeners and runs ``LoginSession``s.

Started by the zygote (``proxyd.master.zygote``) with the listening sockets
already open.  It tells the master over its control channel how many clients
it has and whether it still accepts, so the master can keep Dovecot's
``process_min_avail`` / ``process_limit`` / ``client_limit`` / ``service_count``
accounting.  Commands from the master: ``stop`` (finish the sessions, accept no
more), ``queue-full`` (destroy the oldest pre-login client: Dovecot's answer
to a full service), ``who`` and ``kick``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, assert_never

import trio

from proxyd import counters
from proxyd.auth.client import AuthClient
from proxyd.config.settings import EffectiveService
from proxyd.ipc.channel import Channel
from proxyd.ipc.inherited import BoundSocket, accept_forever
from proxyd.ipc.messages import (
    CacheFlush,
    Command,
    CountReply,
    IpLimit,
    Kick,
    LastLogin,
    PreloginCount,
    QueueFull,
    Report,
    ServiceFull,
    Status,
    Stop,
    Who,
    WhoReply,
    WhoRow,
)
from proxyd.ipc.serving import serve_until_stopped
from proxyd.login.access import check_access
from proxyd.login.haproxy import HaproxyRejected, read_proxy_header
from proxyd.login.server import apply_proxy_header, connection_info_of, fixed_local_address
from proxyd.login.session import LoginContext, LoginSession
from proxyd.protocols.engine import State
from proxyd.protocols.spec import ProtocolSpec
from proxyd.proxied.connection import session_matches
from proxyd.proxied.proxystate import ProxyState
from proxyd.sockstream import SockStream
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd")

#: how long "no clients any more" waits before it is told to the master (seconds)
IDLE_REPORT_DELAY: Final = 1.0

#: the goodbye to a connection from an address at proxyd_prelogin_per_ip_limit
TOO_MANY_FROM_IP: Final = "Too many connections from your IP address."




class LoginWorker:
    """The trio side of one login process."""

    def __init__(
        self,
        ctx: LoginContext,
        spec: ProtocolSpec,
        service: EffectiveService,
        listeners: list[BoundSocket],
        control: Channel[Report, Command],
        auth: AuthClient,
        access_dir: str = "",
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        #: called once nothing is left to do (the process can end without unwinding)
        self.on_finished = on_finished
        #: per-process proxy state, as in Dovecot: login_source_ips rotation, backend records
        #: and the disconnect pacing of login_proxy_max_disconnect_delay
        self.proxy_state = ProxyState(
            source_ips=ctx.settings.login_source_ips.addresses,
            max_disconnect_delay=ctx.settings.login_proxy_max_disconnect_delay,
        )
        self.spec = spec
        self.service = service
        self.listeners = listeners
        #: each listener's local address where it is the same for every connection
        self._fixed_local = {b.sock.fileno(): fixed_local_address(b.sock) for b in listeners}
        self.control = control
        self.auth = auth
        self.clients: dict[int, LoginSession] = {}
        #: where login_access_sockets live as this process sees them (chroot or not)
        self.access_dir = access_dir
        self.served = 0
        #: accepted connections whose session task has not registered yet
        self.starting = 0
        self.stopping = False
        #: the master says the service is full (``ServiceFull``): displace, don't queue
        self.service_full = False
        #: proxyd_prelogin_per_ip_limit: pre-login connections are counted (by the master)
        self._count_prelogin = ctx.settings.proxyd_prelogin_per_ip_limit > 0
        self._uncounted = frozenset(
            ctx.settings.login_trusted_networks + ctx.settings.haproxy_trusted_networks
        )
        #: the addresses the master says are at the limit (``IpLimit``): refused at once
        self.ips_over_limit: set[str] = set()
        self._changed = Wakeup()
        self._next_id = 0
        #: what the master assumes of a new process: accepting, no clients
        self._last_status: tuple[bool, bool, float | None] = (True, True, None)
        #: False once an accept loop saw the process full and no status woke it since
        self._seen_accepting = True
        self._idle_report_pending = False
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ accounting
    def accepting(self) -> bool:
        if self.stopping:
            return False
        if self.service.service_count and self.served >= self.service.service_count:
            return False
        return len(self.clients) + self.starting < self.service.client_limit

    def _finished(self) -> bool:
        """Nothing left to do: no clients and no more accepting, ever."""
        exhausted = self.stopping or (
            self.service.service_count > 0 and self.served >= self.service.service_count
        )
        return exhausted and not self.clients and not self.starting

    def _logging_in(self) -> bool:
        """A client may still ask the auth process (one that failed to log in to its
        backend is back in the pre-login state and may try again)."""
        return bool(self.starting) or any(not s.proxying for s in self.clients.values())

    def _status(self) -> tuple[bool, bool, float | None]:
        """What the master's accounting needs: accepting?, idle?, and with a service_count
        (the master displaces these processes' clients) since when the oldest client
        still logging in waits."""
        oldest = self._oldest_prelogin() if self.service.service_count else None
        return (self.accepting(), not self.clients, oldest)

    def _status_message(self) -> Status | None:
        """Wake our own waiters if what they wait for may have changed; the status message
        for the master if its view changed (a message for every login would cost more
        than the login itself)."""
        status = self._status()
        accepting, idle, _ = status
        if accepting != self._seen_accepting or self.stopping or self.service_full or self.service.service_count:
            # the waiters: the accept loops (accepting), serve_until_stopped and the
            # auth hand-back (only once stopping or exhausted); nobody else needs a wake-up
            # at every client's start and end
            self._seen_accepting = accepting
            self._changed.notify()
        if status == self._last_status:
            return None
        if idle and status[0::2] == self._last_status[0::2] and not self._finished():
            # only "no clients any more": told at most a second later, as Dovecot's
            # master_status_update() does, so at light load a login costs no report (the
            # next client usually comes first); "busy" is always told at once, so the master
            # never takes a process with clients for idle (idle_kill)
            self._report_idle_later()
            return None
        self._last_status = status
        accepting, idle, oldest = status
        return Status(clients=0 if idle else len(self.clients), accepting=accepting, prelogin_since=oldest)

    def _report_idle_later(self) -> None:
        if self._idle_report_pending or self._nursery is None:
            return
        self._idle_report_pending = True

        async def later() -> None:
            await trio.sleep(IDLE_REPORT_DELAY)
            self._idle_report_pending = False
            if self.clients or self.starting:
                return  # busy again: nothing to tell
            self._last_status = status = self._status()
            accepting, _, oldest = status
            await self._send(Status(clients=0, accepting=accepting, prelogin_since=oldest))

        self._nursery.start_soon(later)

    async def _report(self) -> None:
        if (message := self._status_message()) is not None:
            await self._send(message)

    async def _send(self, message: Report) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.control.send(message)

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        for message in self.control.received_already():  # queued before the fork: before any accept
            await self._command(message)
        async with serve_until_stopped(
            finished=self._finished, changed=self._changed, stop=self._stop, on_finished=self.on_finished
        ) as nursery:
            self._nursery = nursery
            nursery.start_soon(self._control_loop)
            nursery.start_soon(self._let_go_of_auth)
            for bound in self.listeners:
                nursery.start_soon(self._accept_loop, bound, nursery)
            await self._report()

    async def _let_go_of_auth(self) -> None:
        """After a reload the old auth process serves us until we let go of it: once we
        accept no more and nobody here is logging in, close the connection."""
        while True:
            if self.stopping and not self._logging_in():
                await self.auth.close()
            await self._changed.wait()

    async def _stop(self) -> None:
        """Accept no more (SIGTERM, ``Stop``); with no clients left, run() returns at once."""
        self.stopping = True
        await self._report()

    def _may_accept(self) -> bool:
        """The accept loops' condition; it records when a loop saw "full", so that the next
        status that finds room wakes it.

        Recorded by the loop, not inferred from the last notification: a connection the
        loop takes fills the last slot without a status, and a session that ended before
        the new one registered freed it again.  Compared with the last notification
        nothing had changed, and the loop, which had seen "full", waited for good (the
        soak suite's flood at capacity: no new connection was taken until a flood client
        left, and then only by the other process).
        """
        accepting = self.accepting()
        if not accepting:
            self._seen_accepting = False
        return accepting or self._can_displace()

    def _can_displace(self) -> bool:
        """Full service (the master said so): a new client may displace a pre-login one here.

        Only in high-performance mode: a process that serves a fixed number of clients
        (``service_count``) leaves the eviction to the master, which knows them all.
        """
        return (
            self.service_full
            and not self.stopping
            and self.service.service_count == 0
            and any(not s.proxying and not s.destroyed for s in self.clients.values())
        )

    def _counted_ip(self, remote: Any) -> str | None:
        """The client address whose pre-login connections this one counts for (None: none)."""
        if not self._count_prelogin:
            return None
        try:
            ip = str(remote[0])
            address = ipaddress.ip_address(ip)
        except (TypeError, IndexError, ValueError):
            return None
        if any(address in network for network in self._uncounted):
            return None
        return ip

    async def _accept_loop(self, bound: BoundSocket, nursery: trio.Nursery) -> None:
        def take(conn: socket.socket, remote: Any) -> None:
            ip = self._counted_ip(remote)
            if ip is not None and ip in self.ips_over_limit:
                # one address may not fill the room for clients logging in; nor displace them
                nursery.start_soon(self._refuse, bound, conn)
                return
            if not self.accepting():
                # Dovecot's avail-overflow: the oldest pre-login client makes room at once,
                # so a flood never queues real users behind it in the accept queue
                self._destroy_oldest_prelogin()
            self.served += 1
            self.starting += 1
            nursery.start_soon(self._serve, bound, conn, remote, ip, nursery)

        with contextlib.suppress(trio.ClosedResourceError):  # closed when the master is gone
            await accept_forever(
                bound.sock, take, name=self.spec.service,
                accepting=self._may_accept, changed=self._changed,
            )

    async def _refuse(self, bound: BoundSocket, conn: socket.socket) -> None:
        """A connection from an address at proxyd_prelogin_per_ip_limit: a goodbye, no session."""
        counters.add(counters.Counter.PRELOGIN_PER_IP_REFUSED)
        stream = SockStream(conn)
        if not bound.listener.ssl and self.spec.login is not None:
            with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, OSError):
                await stream.send_all(self.spec.login.goodbye(TOO_MANY_FROM_IP))
        await trio.aclose_forcefully(stream)

    async def _serve(
        self, bound: BoundSocket, conn: socket.socket, remote: Any, counted_ip: str | None,
        nursery: trio.Nursery,
    ) -> None:
        self.starting -= 1
        stream = SockStream(conn)
        tls = bound.listener.ssl
        ctx = self.ctx
        try:
            # no getsockname()/getpeername() per connection where accept() and the
            # listener's address tell (two syscalls fewer per login)
            local = self._fixed_local.get(bound.sock.fileno()) or conn.getsockname()
            if not remote:  # a UNIX listener's peer
                remote = conn.getpeername()
            # the settings of this connection: protocol/local/remote blocks applied
            ctx = ctx.for_connection(self.spec.name, local[0], remote[0])
            settings = ctx.settings
            info = connection_info_of(local, remote, self.spec.name, settings, tls=tls)
            if bound.listener.haproxy:
                header, _ = await read_proxy_header(
                    stream, info.real_remote_ip, settings.haproxy_trusted_networks, settings.haproxy_timeout
                )
                # the addresses HAProxy reports choose the settings, as in Dovecot
                ctx = self.ctx.for_connection(self.spec.name, header.local_ip, header.remote_ip)
                settings = ctx.settings
                info = apply_proxy_header(info, header, settings)
            if settings.login_access_sockets and not await check_access(
                settings.login_access_sockets, self.spec.name, conn.fileno(),
                base_dir=self.access_dir, remote_ip=info.remote_ip,
                log=logging.getLogger(self.spec.service),
            ):
                await trio.aclose_forcefully(stream)
                await self._report()
                return
        except HaproxyRejected as exc:
            logging.getLogger(self.spec.service).log(exc.level, "%s", exc.log_line)
            await trio.aclose_forcefully(stream)
            await self._report()
            return
        except OSError:
            await trio.aclose_forcefully(stream)
            await self._report()
            return
        client: trio.abc.Stream = stream
        if tls:
            if ctx.server_tls is None:
                await trio.aclose_forcefully(stream)
                await self._report()
                return
            client = trio.SSLStream(stream, ctx.server_tls, server_side=True)
        session = LoginSession(
            ctx, self.spec, client, info, implicit_tls=tls, proxy_state=self.proxy_state
        )
        self._next_id += 1
        client_id = self._next_id
        self.clients[client_id] = session
        await self._report()
        if counted_ip is not None:
            await self._send(PreloginCount(counted_ip, 1))

        def logged_in() -> None:
            # called once: at the login, or at the end of a session that never logged in
            session.on_logged_in = None
            if counted_ip is not None:
                # a proxied session no longer counts: the limit is for clients logging in
                nursery.start_soon(self._send, PreloginCount(counted_ip, -1))
            if self.service.service_count:
                nursery.start_soon(self._report)  # no longer one the master may displace
            elif self.stopping:
                self._changed.notify()  # perhaps nobody needs the auth process any more

        session.on_logged_in = logged_in
        try:
            await session.run()
        except Exception:
            logging.getLogger(self.spec.service).exception("Internal error in session: %s", session.log_fields())
            await trio.aclose_forcefully(client)
        finally:
            del self.clients[client_id]
            if session.on_logged_in is not None:  # it never logged in
                session.on_logged_in()
            # a process that is done exits now: its exit tells the master enough
            if (message := self._status_message()) is not None and not self._finished():
                with trio.CancelScope(shield=True):
                    await self._send(message)

    # ------------------------------------------------------------------ commands
    async def _control_loop(self) -> None:
        await self.control.each(self._command)
        # the master is gone: finish what we have, take nothing new; our copies of the
        # listening sockets go too, so that once every process has let go a connect is
        # refused instead of waiting in a queue nobody reads (shutdown_clients = no)
        self.stopping = True
        for bound in self.listeners:
            trio.lowlevel.notify_closing(bound.sock)
            bound.sock.close()
        self._changed.notify()

    async def _command(self, message: Command) -> None:
        match message:
            case Stop():
                await self._stop()
            case QueueFull():
                self._destroy_oldest_prelogin()
            case ServiceFull():
                self.service_full = message.full
                self._changed.notify()
            case IpLimit(ip=ip, over=over):
                if over:
                    self.ips_over_limit.add(ip)
                else:
                    self.ips_over_limit.discard(ip)
            case Who():
                await self.control.send(WhoReply(message.id, self._who(message.mask)))
            case Kick():
                await self.control.send(CountReply(message.id, self._kick(message.masks, message.host)))
            case CacheFlush() | LastLogin():
                pass  # the auth process's
            case _:
                assert_never(message)

    def _oldest_prelogin(self) -> float | None:
        """When the longest-waiting client still logging in here connected (None: none is)."""
        return min(
            (s.connected_at for s in self.clients.values() if not s.proxying and not s.destroyed),
            default=None,
        )

    def _destroy_oldest_prelogin(self) -> None:
        prelogin = [s for s in self.clients.values() if not s.proxying and not s.destroyed]
        # Dovecot's client_destroy_oldest(): the oldest client with nothing in flight
        # (not waiting for the auth process or a backend), else simply the oldest
        idle = [s for s in prelogin if s.engine.state is State.NOT_AUTHENTICATED]
        if prelogin:
            victim = min(idle or prelogin, key=lambda s: s.connected_at)
            victim.destroy("Connection queue full", "Connection queue full")
            counters.add(counters.Counter.QUEUE_FULL)

    def _matching(self, masks: Sequence[str], host: str | None = None) -> list[LoginSession]:
        return [
            s for s in self.clients.values()
            # proxied sessions and those logging in to their backend (Dovecot's pending proxies)
            if (s.proxying or s.proxy_pending)
            and not (s.relayed is not None and s.relayed.moved)
            and session_matches(s.user, s.backend_address.rpartition(":")[0], s.backend_host, masks, host)
        ]

    def _who(self, mask: str) -> tuple[WhoRow, ...]:
        now = time.time()
        return tuple(
            WhoRow.of(s.user, self.spec.name, s.conn.remote_ip, s.backend_address, s.connected_at, now)
            for s in self._matching([mask])
        )

    def _kick(self, masks: Sequence[str], host: str | None = None) -> int:
        victims = self._matching(masks, host)
        for session in victims:
            session.destroy("Kicked by admin")
        return len(victims)
