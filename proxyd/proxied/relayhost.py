"""The relay process: proxied plaintext sessions handed off by high-security login processes.

Theory of operation
-------------------
The master binds the relay socket (``base_dir/login/relay``, ``SOCK_SEQPACKET``)
and starts a few relay processes (one per CPU, at most four) that accept on it,
unprivileged and chrooted like the login processes.  Each hand-off (``proxyd.proxied.handoff``) brings a record and the
client's and backend's sockets; the process answers ``OK`` and runs a
``ProxiedConnection`` for it, which logs the disconnect exactly as the login
process would have (under the login service's log name).  Nothing here parses
what a client sends.

Commands from the master: ``who`` and ``kick`` (these sessions are listed and
kicked like any proxied session), ``stop`` (take no more, finish the sessions:
after a reload the new relay processes take the new ones).  Each process's
``ProxyState`` paces ``login_proxy_max_disconnect_delay`` over the sessions it
holds, as each of Dovecot's login processes does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Final, assert_never

import trio

from proxyd.config.settings import Settings
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
    WhoRow,
)
from proxyd.ipc.serving import serve_until_stopped
from proxyd.proxied.connection import ProxiedConnection
from proxyd.proxied.handoff import (
    ACCEPTED,
    MAX_RECORD,
    REFUSED,
    HandoffError,
    HandoffRecord,
    fds_of,
    parse_last_word,
)
from proxyd.proxied.proxystate import ProxyState
from proxyd.sockstream import SockStream
from proxyd.wakeup import Wakeup

log = logging.getLogger("proxyd")

#: how long ``who``/``kick`` wait for a session's last word (the hand-off's own bound)
_LAST_WORD_WAIT: Final = 10.0


class RelayHost:
    def __init__(
        self, settings: Settings, listener: socket.socket, control: Channel[Report, Command], services: frozenset[str]
    ) -> None:
        self.listener = listener
        self.control = control
        #: the login services whose sessions may be handed here (their log names)
        self.services = services
        self.client_limit = settings.default_client_limit
        self.state = ProxyState(max_disconnect_delay=settings.login_proxy_max_disconnect_delay)
        self.sessions: dict[int, ProxiedConnection] = {}
        #: sessions taken whose login process has not yet said its last word (GO or a
        #: kick): until then that process answers for them, and ``who``/``kick`` here
        #: wait for the word instead of counting them in both places
        self._arriving: dict[int, trio.Event] = {}
        self.stopping = False
        #: the accept loop's scope: a stopping relay process takes no more hand-offs
        #: (its successor after a reload shares the socket and must get them all)
        self._accepting = trio.CancelScope()
        self._next_id = 0
        self._changed = Wakeup()

    async def run(self) -> None:
        with self.listener:
            await self._run()

    async def _run(self) -> None:
        async with serve_until_stopped(
            finished=lambda: self.stopping and not self.sessions, changed=self._changed, stop=self._on_sigterm
        ) as nursery:
            nursery.start_soon(self._control_loop)
            nursery.start_soon(self._accept_loop, nursery)
            await self._report()

    async def _report(self) -> None:
        self._changed.notify()
        message = Status(clients=len(self.sessions), accepting=not self.stopping)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.control.send(message)

    async def _on_sigterm(self) -> None:
        self._stop()

    # ------------------------------------------------------------------ hand-offs
    def _stop(self) -> None:
        self.stopping = True
        self._accepting.cancel()
        self._changed.notify()

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        def take(conn: socket.socket, _addr: object) -> None:
            nursery.start_soon(self._take, trio.socket.from_stdlib_socket(conn), nursery)

        with self._accepting:
            await accept_forever(self.listener, take, name="relay")

    async def _take(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        session_id, taken = 0, False
        with sock, trio.move_on_after(10):
            try:
                data, ancdata, flags, _ = await sock.recvmsg(MAX_RECORD, socket.CMSG_SPACE(4 * 4))
            except OSError:
                return
            fds = fds_of(ancdata)
            # each descriptor becomes a socket object once (it asks the kernel for the
            # socket's type, family and protocol): from here on the objects own them
            socks = _stream_sockets(fds) if len(fds) == 2 else None
            try:
                if len(fds) != 2 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise HandoffError("a hand-off needs one record and two sockets")
                if socks is None:
                    raise HandoffError("a handed-off descriptor is not a stream socket")
                record = HandoffRecord.decode(data)
                if record.service not in self.services:
                    raise HandoffError(f"unknown service {record.service!r}")
            except HandoffError as exc:
                log.error("relay: refused a hand-off: %s", exc)
                _close(fds, socks)
                return
            if self.stopping or len(self.sessions) >= self.client_limit:
                _close(fds, socks)
                await _answer(sock, REFUSED)
                return
            client, backend = (SockStream(s) for s in socks)
            self._next_id += 1
            session_id = self._next_id
            session = self.sessions[session_id] = self._proxied(record, client, backend)
            arrived = self._arriving[session_id] = trio.Event()
            try:
                await _answer(sock, ACCEPTED)
                # the login process's last word: GO, or a kick that reached it meanwhile
                with contextlib.suppress(OSError):
                    taken, kick = parse_last_word(await sock.recv(256))
                    if kick:
                        session.kick(kick)
            finally:
                if not taken:  # the login process kept it (or died), or we are going away
                    del self.sessions[session_id]
                del self._arriving[session_id]
                arrived.set()
                if not taken:
                    await session.release()
        if taken:
            nursery.start_soon(self._serve, session_id)

    def _proxied(self, record: HandoffRecord, client: SockStream, backend: SockStream) -> ProxiedConnection:
        entry = self.state.record(record.backend_ip, record.backend_port)
        ProxyState.connected(entry)
        return ProxiedConnection(
            client=client,
            backend=backend,
            client_pending=record.client_pending,
            backend_pending=record.backend_pending,
            user=record.user,
            protocol=record.protocol,
            remote_ip=record.remote_ip,
            backend_ip=record.backend_ip,
            backend_port=record.backend_port,
            log_fields=record.log_fields,
            log_format=record.log_format,
            log=logging.getLogger(record.service),
            state=self.state,
            record=entry,
            connected_at=record.connected_at,
            backend_host=record.backend_host,
            relayed_in=record.bytes_in,
            relayed_out=record.bytes_out,
            quiet_for=record.quiet_for,
        )

    async def _serve(self, session_id: int) -> None:
        # (no status report per session: the master counts relay processes, not their clients)
        session = self.sessions[session_id]
        try:
            await session.run()
        except Exception:
            log.exception("relay: internal error in session of %s", session.log_user)
        finally:
            del self.sessions[session_id]
            self._changed.notify()
            with trio.CancelScope(shield=True):
                # closed already unless cancelled before run() got going
                await trio.aclose_forcefully(session.backend)
                await trio.aclose_forcefully(session.client)

    # ------------------------------------------------------------------ commands
    async def _control_loop(self) -> None:
        await self.control.each(self._command)
        self._stop()  # the master is gone: finish what we have

    async def _command(self, message: Command) -> None:
        match message:
            case Stop():
                self._stop()
                await self._report()
            case Who():
                await self._last_words([message.mask])
                now = time.time()
                rows = tuple(
                    WhoRow.of(s.user, s.protocol, s.remote_ip, s.backend_address, s.connected_at, now)
                    for s in self._matching([message.mask])
                )
                await self.control.send(WhoReply(message.id, rows))
            case Kick():
                await self._last_words(message.masks, message.host)
                victims = self._matching(message.masks, message.host)
                for session in victims:
                    session.kick("Kicked by admin")
                await self.control.send(CountReply(message.id, len(victims)))
            case QueueFull() | ServiceFull() | IpLimit() | CacheFlush() | LastLogin():
                pass  # for login and auth processes
            case _:
                assert_never(message)

    async def _last_words(self, masks: Sequence[str], host: str | None = None) -> None:
        """Wait for the last word of the matching sessions still arriving: a kick passed on
        by it was counted by the login process, a GO makes the session ours to count."""
        with trio.move_on_after(_LAST_WORD_WAIT):
            for session_id, arrived in list(self._arriving.items()):
                session = self.sessions.get(session_id)
                if session is not None and session.matches(masks, host):
                    await arrived.wait()

    def _matching(self, masks: Sequence[str], host: str | None = None) -> list[ProxiedConnection]:
        return [
            s for i, s in self.sessions.items()
            if i not in self._arriving and not s.kicked and s.matches(masks, host)
        ]


def _stream_sockets(fds: list[int]) -> list[socket.socket] | None:
    """Socket objects for handed-off descriptors; None (and the descriptors left as they
    were) unless every one is a stream socket."""
    socks: list[socket.socket] = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            break
        socks.append(sock)
        if sock.type != socket.SOCK_STREAM:
            break
    else:
        return socks
    for sock in socks:
        sock.detach()
    return None


def _close(fds: list[int], socks: list[socket.socket] | None) -> None:
    """Close handed-off descriptors, through their socket objects where there are any."""
    if socks is None:
        for fd in fds:
            os.close(fd)
    else:
        for sock in socks:
            sock.close()


async def _answer(sock: trio.socket.SocketType, answer: bytes) -> None:
    with contextlib.suppress(OSError):
        await sock.send(answer)
