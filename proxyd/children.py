"""The first code a forked child runs: become a login, relay, auth or tcpwrap process.

The composition root of the child processes: the one module that knows every
kind of child (``proxyd.login``, ``proxyd.auth``, ``proxyd.access``); the
master only asks the zygote for "a child of kind K" and talks to it through
``proxyd.ipc``.

Everything that needs root or the file system happens here, before
``privileges.drop()``: memory limits, the auth socket connection, TLS contexts
(prebuilt in the zygote), then chroot and the uid switch, then ``trio.run``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import NoReturn, assert_never

import trio

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.client import AuthClient
from proxyd.auth.opening import open_authenticator
from proxyd.auth.protocol import AUTH_SOCKET_NAME
from proxyd.auth.server import serve_auth_connections
from proxyd.config.filters import FilterResolver
from proxyd.config.settings import (
    EffectiveService,
    InetListener,
    Settings,
    UnixListener,
    effective_service,
)
from proxyd.ipc.channel import Channel, read_waiting
from proxyd.ipc.inherited import BoundSocket
from proxyd.ipc.messages import (
    CacheFlush,
    Command,
    CountReply,
    IpLimit,
    Kick,
    LastLogin,
    LastLoginReply,
    QueueFull,
    Report,
    ServiceFull,
    Status,
    Stop,
    Who,
    read_command,
)
from proxyd.lmtp.rawlog import RawlogDir
from proxyd.lmtp.session import LmtpContext
from proxyd.lmtp.spool import TempDir
from proxyd.lmtp.worker import LMTP_SERVICE, LmtpWorker
from proxyd.login.session import LoginContext
from proxyd.login.tls import TlsContexts
from proxyd.login.worker import LoginWorker
from proxyd.master import privileges
from proxyd.master.listeners import handoff_services
from proxyd.master.zygote import InheritedSockets
from proxyd.protocols import registry
from proxyd.protocols.lmtp.settings import LmtpSettings
from proxyd.protocols.spec import ProtocolSpec
from proxyd.proxied.handoff import RELAY_SOCKET_NAME, hand_off
from proxyd.proxied.relayhost import RelayHost
from proxyd.sockstream import SockStream

log = logging.getLogger("proxyd")

def auth_socket_path(settings: Settings) -> str:
    return os.path.join(settings.base_dir, "login", AUTH_SOCKET_NAME)


class ChildEntry:
    """The entry point of every forked child (called in the zygote's fork).

    It holds what the children need that is built before the fork: the TLS
    contexts (reading certificates needs the file system a chrooted child has
    not), and per login service a ``LoginPlan``: everything a login process derives
    from the configuration, made once in the zygote instead of in every child (in
    high-security mode that is once per connection; what a child does not compute
    it pays for neither in instructions nor in the pages its first writes copy).
    The zygote calls ``prepare`` before each fork and ``reload`` when it re-reads
    the configuration.
    """

    def __init__(self, settings: Settings) -> None:
        self.tls = TlsContexts.build(settings)
        self._plans: dict[str, LoginPlan] = {}

    def reload(self, settings: Settings) -> None:
        self.tls = TlsContexts.build(settings)
        self._plans.clear()

    def prepare(self, settings: Settings, kind: str, service: str, inherited: InheritedSockets) -> None:
        """In the zygote, before a fork: a login service's plan, made at its first fork."""
        if kind != "login" or service in self._plans or registry.by_service(service).login is None:
            return
        self._plans[service] = LoginPlan.make(settings, service, inherited, self.tls)
        gc.freeze()  # made after the zygote froze its heap: no child's collection scans it either

    def __call__(
        self, settings: Settings, kind: str, service: str, control: socket.socket, inherited: InheritedSockets
    ) -> NoReturn:
        _child_main(settings, kind, service, control, inherited, self.tls, self._plans.get(service))


@dataclass(frozen=True, slots=True)
class LoginPlan:
    """What every login process of one service starts from (see ``ChildEntry``)."""

    eff: EffectiveService
    spec: ProtocolSpec
    listeners: list[BoundSocket]
    #: the inherited descriptors the process keeps (its service's listeners)
    keep: frozenset[int]
    #: the auth socket's path before the chroot, and the login directory after it
    auth_path: str
    access_dir: str
    #: whom the process becomes (None: not running as root), or why it cannot
    identity: privileges.Identity | None
    identity_error: privileges.PrivilegeError | None
    #: a fresh process's context (its auth client not yet connected): every child
    #: gets its own copy with the fork
    ctx: LoginContext

    @classmethod
    def make(cls, settings: Settings, service: str, inherited: InheritedSockets, tls: TlsContexts) -> LoginPlan:
        eff = effective_service(settings, service)
        mine = inherited.listeners.get(service, [])
        listeners = [
            BoundSocket(service, settings.service(service).listeners[index], address, sock)
            for sock, index, address in mine
        ]
        identity: privileges.Identity | None = None
        identity_error: privileges.PrivilegeError | None = None
        if os.geteuid() == 0:
            try:
                identity = privileges.resolve_identity(eff.user, eff.group, eff.chroot)
            except privileges.PrivilegeError as exc:
                identity_error = exc  # each child fails with it, as when it looked the user up itself
        path = auth_socket_path(settings)
        login_dir = os.path.join(settings.base_dir, "login")
        relay_path = os.path.join(login_dir, RELAY_SOCKET_NAME)
        inside, access_dir = path, login_dir
        if identity is not None and identity.chroot:
            inside, access_dir, relay_path = (
                "/" + os.path.relpath(p, identity.chroot) for p in (path, access_dir, relay_path)
            )
        handing_off = inherited.relay is not None and service in handoff_services(settings)
        ctx = LoginContext(
            settings=settings,
            auth=AuthClient(inside),
            server_tls=tls.server,
            backend_tls=tls.backend,
            resolver=FilterResolver(settings) if settings.filters else None,
            server_tls_by_key=tls.server_by_key,
            handoff=partial(hand_off, relay_path, service) if handing_off else None,
        )
        return cls(
            eff=eff,
            spec=registry.by_service(service),
            listeners=listeners,
            keep=frozenset(sock.fileno() for sock, _, _ in mine),
            auth_path=path,
            access_dir=access_dir,
            identity=identity,
            identity_error=identity_error,
            ctx=ctx,
        )


def _child_main(
    settings: Settings,
    kind: str,
    service: str,
    control: socket.socket,
    inherited: InheritedSockets,
    tls: TlsContexts,
    plan: LoginPlan | None = None,
) -> NoReturn:
    # the zygote's signal dispositions (SIGINT and SIGHUP ignored, SIGTERM the default)
    # and its environment (import_environment applied) are already the child's: set once
    # there, not in every child (see proxyd.master.zygote)
    code = 0
    try:
        if kind == "auth":
            _auth_process(settings, control, inherited)
        elif kind == "tcpwrap":
            _tcpwrap_process(settings, control, inherited)
        elif kind == "relay":
            _relay_process(settings, control, inherited)
        elif registry.by_service(service).login is None:  # LMTP: not a login service
            _lmtp_process(settings, control, inherited, tls)
        else:
            _login_process(plan or LoginPlan.make(settings, service, inherited, tls), control, inherited)
    except BaseException:
        log.exception("%s process failed", service or kind)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def _control(sock: socket.socket) -> Channel[Report, Command]:
    """A child's end of its control socketpair with the master, with what the master
    queued in it before the fork (``Channel.received_already``)."""
    waiting = read_waiting(sock)
    return Channel(SockStream(sock), read_command, waiting)


def _close_all_but(inherited: InheritedSockets, keep: set[int]) -> None:
    for socks in inherited.listeners.values():
        for sock, _index, _address in socks:
            if sock.fileno() not in keep:
                sock.close()
    if inherited.auth.fileno() not in keep:
        inherited.auth.close()
    if inherited.tcpwrap is not None and inherited.tcpwrap.fileno() not in keep:
        inherited.tcpwrap.close()
    if inherited.relay is not None and inherited.relay.fileno() not in keep:
        inherited.relay.close()


def _login_process(plan: LoginPlan, control: socket.socket, inherited: InheritedSockets) -> None:
    eff = plan.eff
    privileges.set_title(eff.name)
    _close_all_but(inherited, set(plan.keep))
    privileges.limit_memory(eff.vsz_limit)
    privileges.raise_fd_limit(eff.client_limit)
    # connect to the auth process while its socket path is still reachable
    auth_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    auth_sock.connect(plan.auth_path)
    if plan.identity_error is not None:
        raise plan.identity_error
    privileges.drop(plan.identity)
    trio.run(_login_main, plan.ctx, plan.spec, eff, plan.listeners, control, auth_sock, plan.access_dir)


async def _login_main(
    ctx: LoginContext,
    spec: ProtocolSpec,
    eff: EffectiveService,
    listeners: list[BoundSocket],
    control_sock: socket.socket,
    auth_sock: socket.socket,
    access_dir: str,
) -> None:
    control = _control(control_sock)
    auth = ctx.auth
    assert isinstance(auth, AuthClient)
    async with trio.open_nursery() as nursery:
        await nursery.start(auth.run)
        auth.adopt(SockStream(auth_sock))
        worker = LoginWorker(ctx, spec, eff, listeners, control, auth, access_dir, on_finished=_exit_now)
        await worker.run()
        nursery.cancel_scope.cancel()


def _lmtp_process(settings: Settings, control: socket.socket, inherited: InheritedSockets, tls: TlsContexts) -> None:
    """An lmtp process: like a login process, but it may never hold a password (see proxyd.lmtp)."""
    eff = effective_service(settings, LMTP_SERVICE)
    privileges.set_title(LMTP_SERVICE)
    svc = settings.service(LMTP_SERVICE)
    # the master's index runs over both kinds
    configured: list[InetListener | UnixListener] = [*svc.listeners, *svc.unix_listeners]
    mine = [(sock, configured[index]) for sock, index, _address in inherited.listeners.get(LMTP_SERVICE, [])]
    _close_all_but(inherited, {sock.fileno() for sock, _ in mine})
    privileges.limit_memory(eff.vsz_limit)
    privileges.raise_fd_limit(eff.client_limit)
    # the auth socket's directory is the login processes' only: connect before the drop
    path = auth_socket_path(settings)
    auth_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    auth_sock.connect(path)
    identity = None
    if os.geteuid() == 0:
        identity = privileges.resolve_identity(eff.user, eff.group, eff.chroot)
    # opened by path while there is no chroot; the files are made in it after the drop
    # what the process reads once: the top level with protocol lmtp { } applied
    process = FilterResolver(settings).lookup(LMTP_SERVICE) if settings.filters else settings
    temp_dir = TempDir.open(process.mail_temp_dir)
    own = process.of(LmtpSettings)
    rawlog_dir = RawlogDir.open(own.lmtp_rawlog_dir)
    proxy_rawlog_dir = RawlogDir.open(own.lmtp_proxy_rawlog_dir)
    privileges.drop(identity)
    ctx = LmtpContext(
        hostname=settings.hostname or socket.gethostname(),
        greeting=settings.login_greeting,
        recipient_delimiter=settings.recipient_delimiter,
        add_received_header=own.lmtp_add_received_header,
        hdr_delivery_address=own.lmtp_hdr_delivery_address,
        workarounds=frozenset(own.lmtp_client_workarounds),
        temp_dir=temp_dir,
        verbose_replies=own.lmtp_verbose_replies,
        rawlog_dir=rawlog_dir,
        proxy_rawlog_dir=proxy_rawlog_dir,
        auth=AuthClient(path),
        server_tls=tls.server,
        backend_tls=tls.backend,
    )
    trio.run(_lmtp_main, ctx, settings, eff, mine, control, auth_sock, tls.server_by_key)


async def _lmtp_main(
    ctx: LmtpContext,
    settings: Settings,
    eff: EffectiveService,
    listeners: list[tuple[socket.socket, InetListener | UnixListener]],
    control_sock: socket.socket,
    auth_sock: socket.socket,
    tls_by_key: Mapping[str, ssl.SSLContext],
) -> None:
    auth = ctx.auth
    assert isinstance(auth, AuthClient)
    async with trio.open_nursery() as nursery:
        await nursery.start(auth.run)
        auth.adopt(SockStream(auth_sock))
        worker = LmtpWorker(
            ctx, settings, eff, listeners, _control(control_sock), on_finished=_exit_now,
            resolver=FilterResolver(settings) if settings.filters else None,
            server_tls_by_key=tls_by_key,
        )
        await worker.run()
        nursery.cancel_scope.cancel()


def _exit_now() -> NoReturn:
    """A finished login process has nothing left to close or say: end it without
    unwinding Trio (in high-security mode that teardown is a good part of a login's cost).
    Nor ``logging.shutdown()``: every handler proxyd installs (``proxyd.log``: a line file,
    syslog) has written each line as it came, so there is nothing to flush, and each child
    would copy the pages of the logging machinery it walks only to close descriptors that
    the exit closes anyway."""
    sys.stderr.flush()
    os._exit(0)


def _auth_process(settings: Settings, control: socket.socket, inherited: InheritedSockets) -> None:
    privileges.set_title("auth")
    _close_all_but(inherited, {inherited.auth.fileno()})
    identity = None
    if os.geteuid() == 0:
        auth = effective_service(settings, "auth")  # service auth { user group }
        identity = privileges.resolve_identity(auth.user, auth.group, "")
    trio.run(partial(_auth_main, settings, inherited.auth, control, identity))


async def _auth_main(
    settings: Settings, listener: socket.socket, control_sock: socket.socket, identity: privileges.Identity | None
) -> None:
    control = _control(control_sock)
    async with open_authenticator(settings) as authenticator, trio.open_nursery() as nursery:
        # the passdbs are open (args files read, as Dovecot's auth preinit does as root);
        # from here on the process runs as default_internal_user
        privileges.drop(identity)
        stop_accepting = trio.Event()
        try:
            await control.send(Status(clients=0, accepting=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # the master stopped while we started (it closed our channel): nothing to serve
            return

        async def stopped() -> None:
            # a reload (or the master gone): take no new connection; the master waits for
            # this answer before it starts login processes that must reach our successor
            stop_accepting.set()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await control.send(Status(clients=0, accepting=False))

        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            nursery.start_soon(_wait_signal, signals, nursery)
            nursery.start_soon(_wait_master, control, stopped, authenticator)
            # returns once we stopped accepting and the login processes we serve have gone
            await serve_auth_connections(listener, lambda: authenticator, stop_accepting)
            nursery.cancel_scope.cancel()


async def _wait_signal(signals: AsyncIterator[int], nursery: trio.Nursery) -> None:
    async for _ in signals:
        nursery.cancel_scope.cancel()
        return


async def _wait_master(
    control: Channel[Report, Command],
    on_stop: Callable[[], Awaitable[None]],
    authenticator: Authenticator | None = None,
) -> None:
    """Commands from the master: ``Stop``, and for the auth process ``CacheFlush`` and
    ``LastLogin``.  ``on_stop`` runs on ``Stop`` or when the master is gone."""
    while (message := await control.receive()) is not None:
        match message:
            case Stop():
                break
            case CacheFlush() if authenticator is not None:
                count = authenticator.flush_cache(list(message.users) or None)
                await control.send(CountReply(message.id, count))
            case LastLogin() if authenticator is not None:
                last = authenticator.last_login(message.user)
                host, at = last if last is not None else (None, None)
                await control.send(LastLoginReply(message.id, host, at))
            case (
                CacheFlush() | LastLogin() | QueueFull() | ServiceFull() | IpLimit()
                | Who() | Kick()
            ):
                pass  # for other processes
            case _:
                assert_never(message)
    await on_stop()


def _relay_process(settings: Settings, control: socket.socket, inherited: InheritedSockets) -> None:
    """The relay process: unprivileged and chrooted like the login processes it takes sessions from."""
    privileges.set_title("relay")
    listener = inherited.relay
    assert listener is not None
    _close_all_but(inherited, {listener.fileno()})
    services = handoff_services(settings)
    privileges.raise_fd_limit(settings.default_client_limit)
    identity = None
    if os.geteuid() == 0:
        eff = effective_service(settings, min(services))
        identity = privileges.resolve_identity(eff.user, eff.group, eff.chroot)
    privileges.drop(identity)
    trio.run(_relay_main, settings, listener, control, services)


async def _relay_main(
    settings: Settings, listener: socket.socket, control_sock: socket.socket, services: frozenset[str]
) -> None:
    control = _control(control_sock)
    await RelayHost(settings, listener, control, services).run()


def _tcpwrap_process(settings: Settings, control: socket.socket, inherited: InheritedSockets) -> None:
    """The built-in ``tcpwrap`` access service (hosts.allow / hosts.deny)."""
    privileges.set_title("tcpwrap")
    listener = inherited.tcpwrap
    assert listener is not None
    _close_all_but(inherited, {listener.fileno()})
    svc = settings.service("tcpwrap")
    root = svc.chroot or "/"
    identity = None
    if os.geteuid() == 0:
        user = settings.default_internal_user if svc.user == "$default_internal_user" else svc.user
        identity = privileges.resolve_identity(user, svc.group, "")
    privileges.drop(identity)
    files = (os.path.join(root, "etc/hosts.allow"), os.path.join(root, "etc/hosts.deny"))
    trio.run(partial(_tcpwrap_main, listener, control, files))


async def _tcpwrap_main(listener: socket.socket, control_sock: socket.socket, files: tuple[str, str]) -> None:
    from proxyd.access.server import serve_tcpwrap_socket

    control = _control(control_sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_tcpwrap_socket, trio.socket.from_stdlib_socket(listener), *files)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            nursery.start_soon(_wait_signal, signals, nursery)

            async def stop() -> None:
                nursery.cancel_scope.cancel()

            await _wait_master(control, stop)
