"""A logged-in client spliced onto its backend, until either side leaves.

Theory of operation
-------------------
``ProxiedConnection`` is the post-login half of a session (Dovecot's detached
``login_proxy``): it runs the relay (``proxyd.proxied.relay``), writes the
``proxy(USER,IP:PORT): Disconnected by ...`` log line, and when the backend side ended
first keeps the client open a while (``login_proxy_max_disconnect_delay``, paced
by the owning process's ``ProxyState``), dropping what it sends.

It is used in two places: inside the login process that did the login (TLS on
either side, high-performance mode), and in the relay process, which takes over
plaintext sessions from high-security login processes (``proxyd.proxied.handoff``)
so that an idle proxied session does not keep a whole login process alive.

A high-security login process relays a plaintext session itself first, and offers
it to the relay process only once it has been quiet for ``HANDOFF_QUIET`` (or a
bulk transfer begins): a session that ends soon after its login (log in, check,
log out) never pays for the hand-off, and an idle one still leaves its login
process within a fraction of a second.  What the relay had read and not written
when it paused goes along in the hand-off record, with the byte counts so far, so
the relay process's disconnect line tells the whole session.

An admin kick (``kick()``) ends it the same way as a backend disconnect, with
"Disconnected by proxy: REASON" in the log and no message to the client.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from proxyd.log import DEFAULT_LOGIN_FORMAT, MAX_LOGIN_USER_LEN, emit_line, login_line, sanitize
from proxyd.proxied.proxystate import BackendRecord, ProxyState
from proxyd.proxied.relay import RelayStats, relay
from proxyd.sockstream import socket_of

_RECV_SIZE: Final = 4096
#: high-security mode: how long (seconds) a plaintext session must be quiet, no byte
#: either way, before its login process offers it to the relay process.  Each byte
#: moved starts it again, so a client's back-to-back commands (a check: SELECT,
#: FETCH, LOGOUT, each a round trip of well under this apart on a LAN and most WAN
#: links) stay in the login process, which they leave at their close without a
#: hand-off; an idle session (IDLE, a client that stays connected) still moves within
#: it, so it bounds what an idle session costs beyond today's: its login process
#: lives this much longer (at the ~170 high-security logins/s two cores sustain, ~35
#: processes more at any time).  Dovecot's login process keeps a proxied session for
#: its whole life in this mode.
HANDOFF_QUIET: Final = 0.2


@dataclass(slots=True)
class ProxiedConnection:
    client: trio.abc.Stream
    backend: trio.abc.Stream
    #: the client's bytes pipelined after its login, the backend's after its reply
    client_pending: bytes
    backend_pending: bytes
    user: str
    protocol: str
    remote_ip: str
    backend_ip: str
    backend_port: int
    #: Dovecot's login_log_format_elements of the session, fixed at login
    log_fields: str
    log: logging.Logger
    state: ProxyState
    #: the owning process's record of this backend (connection counted as proxying)
    record: BackendRecord | None
    #: wall clock of the client's connect, comparable across processes
    connected_at: float = field(default_factory=time.time)
    #: the backend as the passdb named it (``host``), for ``kick --host`` by name
    backend_host: str = ""
    #: login_log_format of the session (``%$``: the message, ``%s``: ``log_fields``)
    log_format: str = DEFAULT_LOGIN_FORMAT
    #: handed to the relay process: from here on kicks and ``who`` are its business
    moved: bool = False
    #: what was relayed before a hand-off (bytes from the client, to the client) and how
    #: long the session had been quiet then: the relay process's disconnect line counts
    #: the whole session
    relayed_in: int = 0
    relayed_out: int = 0
    quiet_for: float = 0.0
    #: what ``kick()`` cancels: the relay's own scope (``run``) or the login session's
    #: (``run_within``); None until the relay starts (a kick before that is carried out
    #: when it does, or passed on by the hand-off)
    _scope: trio.CancelScope | None = None
    _kick_reason: str = ""
    _delay_taken: bool = False
    #: ``run_within()`` ended by its scope's cancel: ``kicked_out()`` closes the client
    _client_left_open: bool = False

    def kick(self, reason: str) -> None:
        """End the session from outside (``proxyctl kick``)."""
        self._kick_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    @property
    def backend_address(self) -> str:
        return f"{self.backend_ip}:{self.backend_port}"

    def matches(self, masks: Sequence[str], host: str | None = None) -> bool:
        """``who``/``kick`` selection: see ``session_matches``."""
        return session_matches(self.user, self.backend_ip, self.backend_host, masks, host)

    @property
    def log_user(self) -> str:
        return sanitize(self.user, MAX_LOGIN_USER_LEN)

    @property
    def kicked(self) -> bool:
        return bool(self._kick_reason)

    @property
    def kick_reason(self) -> str:
        return self._kick_reason

    def plain_sockets(self) -> tuple[trio.socket.SocketType, trio.socket.SocketType] | None:
        """Both sides' sockets when neither has TLS (only then can it move to another process)."""
        client, backend = socket_of(self.client), socket_of(self.backend)
        if client is not None and backend is not None:
            return client, backend
        return None

    async def release(self) -> None:
        """Drop this process's hold on a session another process has taken over.

        Closing a descriptor that another process still holds sends nothing.
        """
        self.client_pending = self.backend_pending = b""
        await trio.aclose_forcefully(self.backend)
        await trio.aclose_forcefully(self.client)
        if self.record is not None:
            ProxyState.disconnected(self.record)

    async def run(self) -> None:
        """Relay until either side closes, log it, linger if the backend went first."""
        scope = self._scope = trio.CancelScope()
        if self._kick_reason:
            scope.cancel()
        try:
            with scope:
                await self._relay()
            if scope.cancelled_caught:
                await self._kicked()
        finally:
            await close_gracefully(self.client)

    async def run_within(
        self, scope: trio.CancelScope, handoff: Callable[[], Awaitable[bool]] | None = None
    ) -> bool:
        """``run()`` inside a scope the caller has entered already and that nothing but
        ``kick()`` and the caller's own deadline (none: a proxied session has no timeout)
        cancels: the login session's, so that a session costs one scope.  When this raises
        ``Cancelled`` for a kick, the client is still open: the caller, once out of the
        scope, calls ``kicked_out()``.

        With ``handoff`` (plain sockets only) the session is offered to the relay process
        once quiet (``HANDOFF_QUIET``); True when it took it: the caller then only
        ``release()``s it.  Refused, the session stays here to its end."""
        self._scope = scope
        if self._kick_reason:
            scope.cancel()
        moved = False
        try:
            moved = await self._relay(handoff)
        finally:
            if moved:
                pass  # the relay process has both sides now
            elif scope.cancel_called:
                self._client_left_open = True
            else:
                await close_gracefully(self.client)
        return moved

    async def kicked_out(self) -> None:
        """After ``run_within()`` ended in its cancelled scope: for a kick what ``run()`` does
        after its own scope caught one, then (in any case) the client's close."""
        if not self._client_left_open:
            return
        self._client_left_open = False
        try:
            if self._kick_reason:
                await self._kicked()
        finally:
            await close_gracefully(self.client)

    async def _kicked(self) -> None:
        # kicks are delayed like a backend disconnect (LOGIN_PROXY_FREE_FLAG_DELAYED),
        # unless the backend had gone already and the delay is running
        delay = 0.0 if self._delay_taken else self._disconnect_delay()
        self._log("Disconnected by proxy: %s%s", self._kick_reason, _delay_text(delay))
        await self._linger(delay)

    async def _relay(self, handoff: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Relay to the end and log it; with ``handoff``, offer the session once quiet
        (True: taken, nothing logged or closed here)."""
        stats = RelayStats(
            client_to_server=self.relayed_in,
            server_to_client=self.relayed_out,
            last_activity=trio.current_time() - self.quiet_for,
        )
        try:
            # with an offer to make, the relay pauses once quiet (``stats.paused``)
            pause_after = HANDOFF_QUIET if handoff is not None else 0.0
            while True:
                await relay(
                    self.client, self.backend, client_pending=self.client_pending,
                    server_pending=self.backend_pending, stats=stats, pause_after=pause_after,
                )
                if not stats.paused:
                    break
                assert handoff is not None
                # what the relay held goes first, wherever the session goes on
                self.client_pending, self.backend_pending = stats.held_to_server, stats.held_to_client
                if await self._hand_off(stats, handoff):
                    return True
                pause_after = 0.0  # refused: relayed here to its end
        finally:
            if not self.moved:
                self.client_pending = self.backend_pending = b""
                # the server side goes at once; the client's may wait (disconnect delay)
                await close_gracefully(self.backend)
                if self.record is not None:
                    ProxyState.disconnected(self.record)
        delay = self._disconnect_delay() if stats.closed_by == "server" else 0.0
        self._delay_taken = True
        idle = math.floor(trio.current_time() - stats.last_activity)
        error = f": {stats.error}" if stats.error else ""
        self._log(
            "Disconnected by %s%s (%ds idle, in=%d, out=%d)%s",
            stats.closed_by, error, idle, stats.client_to_server, stats.server_to_client,
            _delay_text(delay),
        )
        await self._linger(delay)
        return False

    async def _hand_off(self, stats: RelayStats, handoff: Callable[[], Awaitable[bool]]) -> bool:
        """Offer the paused session (``handoff()``); True when the relay process took it."""
        self.relayed_in, self.relayed_out = stats.client_to_server, stats.server_to_client
        self.quiet_for = max(0.0, trio.current_time() - stats.last_activity)
        # meanwhile a kick is only recorded, as before the relay started: the hand-off's
        # last word passes it on, or, when the session stays, the cancel below carries it
        # out here (the hand-off itself is never cut short, see proxyd.proxied.handoff)
        scope, self._scope = self._scope, None
        try:
            return await handoff()
        finally:
            self._scope = scope
            if self._kick_reason and not self.moved and scope is not None:
                scope.cancel()

    def _log(self, fmt: str, *args: object) -> None:
        # the detached proxy logs on the proxy's event: its prefix names the backend
        if self.log.isEnabledFor(logging.INFO):
            prefix = f"proxy({self.log_user},{self.backend_ip}:{self.backend_port}): "
            emit_line(self.log, logging.INFO, login_line(self.log_format, prefix + fmt % args, self.log_fields))

    def _disconnect_delay(self) -> float:
        """How long the client stays after its backend side ended (spec §5.3); 0 = close now."""
        if self.record is None:
            return 0.0
        return self.state.disconnect_delay(self.record)

    async def _linger(self, delay: float) -> None:
        """Keep the client open for ``delay`` seconds, dropping what it sends, unless it leaves first."""
        if delay <= 0:
            return
        assert self.record is not None
        try:
            with trio.move_on_after(delay):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while await self.client.receive_some(_RECV_SIZE):
                        pass
        finally:
            ProxyState.delayed_disconnect_done(self.record)


def session_matches(
    user: str, backend_ip: str, backend_host: str, masks: Sequence[str], host: str | None
) -> bool:
    """One of the user masks (``*`` and ``?``; none given: everyone) and, for ``kick
    --host`` (Dovecot's KICK-HOST), the backend: its IP or the ``host`` the passdb gave."""
    if host is not None and (not host or host not in (backend_ip, backend_host)):
        return False
    return any(fnmatch.fnmatchcase(user, mask or "*") for mask in masks or ("*",))


def _delay_text(delay: float) -> str:
    return f" - disconnecting client in {round(delay * 1000)}ms" if delay > 0 else ""


async def close_gracefully(stream: trio.abc.Stream) -> None:
    """Close with a TLS close_notify where there is TLS, but never wait long for it."""
    if (sock := socket_of(stream)) is not None:
        sock.close()  # all a socket stream's aclose() does, minus a cancellable checkpoint
        return
    with trio.move_on_after(1, shield=True) as scope:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.aclose()
    if scope.cancelled_caught:
        await trio.aclose_forcefully(stream)
