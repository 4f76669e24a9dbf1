"""One client connection from accept to close (Dovecot's ``login-common``, in Trio).

Theory of operation
-------------------
``LoginSession.run()`` owns the client stream.  It feeds the protocol's sans-IO
engine, writes what the engine queues, and acts on the engine's events:

* ``AuthBegin`` starts a SASL exchange, which runs in the auth process
  (``AuthService.sasl``, Dovecot's AUTH/CONT lines): the session only relays its
  challenges and the client's answers (``_ClientSaslIO``).  The reply either
  fails the attempt (the engine renders Dovecot's text) or names a proxy
  destination;
* for a proxy destination ``proxyd.login.backend.proxy_login()`` connects and logs
  in; only then is anything the client sent after its login command forwarded, so
  nothing a client sends reaches a backend before it is authenticated;
* a ``nologin`` reply that names a ``host`` is a referral (IMAP
  ``[REFERRAL imap://...]``), Dovecot's ``client_auth_handle_reply()``;
* a failed XOAUTH2/OAUTHBEARER login first gets Dovecot's JSON error as a
  final challenge (sent by the auth process); the failure reply follows the
  client's answer;
* ``StartTLS`` wraps the stream; the bytes already read behind the command are fed
  to TLS, never to the command parser.

The whole pre-login phase runs under Dovecot's absolute 180 s timeout.  Once the
backend has accepted the login the session becomes a relay
(``proxyd.proxied.relay``), which has no timeout, like Dovecot's detached proxies.
In high-security mode a plaintext one moves to the relay process once it is quiet
(``ProxiedConnection.run_within``, ``LoginContext.handoff``).

When the backend side of a relay ends (the backend closed, or an admin kick),
the client may be kept open a while longer (``login_proxy_max_disconnect_delay``,
paced by the process's ``ProxyState``); anything it sends meanwhile is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, assert_never

import trio

from proxyd import counters
from proxyd.auth.client import is_communication_failure
from proxyd.auth.expand import Variables
from proxyd.auth.request import (
    AuthReply,
    AuthStatus,
    ConnectionInfo,
    FailCode,
    SaslIO,
    SaslStart,
)
from proxyd.config.filters import FilterResolver
from proxyd.config.settings import Settings
from proxyd.errtext import cause_text
from proxyd.log import MAX_LOGIN_USER_LEN, MAX_MECH_NAME_LEN, emit_line, login_line, sanitize
from proxyd.login import logformat
from proxyd.login.backend import BackendConnected, backend_login_for, proxy_login
from proxyd.login.disconnect import AuthFacts, extra_disconnect_reason
from proxyd.login.logformat import DEFAULT_ELEMENTS
from proxyd.login.proxyfields import (
    ProxyFieldError,
    ProxyTarget,
    parse_proxy_target,
    parse_referral,
    target_refusal,
)
from proxyd.login.streams import PrefixedStream
from proxyd.login.tls import client_cert_user, server_key
from proxyd.protocols.backend_events import BackendFailed, ProxyFailure
from proxyd.protocols.engine import State
from proxyd.protocols.events import (
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    ClientFailure,
    Close,
    Event,
    LogInfo,
    LoginPolicy,
    StartTLS,
    TrustedClientInfo,
    _NeedData,
)
from proxyd.protocols.spec import BackendLogin, LoginHooks, LoginServerEngine, ProtocolSpec
from proxyd.proxied.connection import ProxiedConnection, close_gracefully
from proxyd.proxied.proxystate import ProxyState

#: Dovecot's MASTER_LOGIN_TIMEOUT_SECS: absolute, armed at connect, never reset
LOGIN_TIMEOUT: Final = 180.0
#: the proxy TTL a fresh client starts with (LOGIN_PROXY_TTL)
PROXY_TTL: Final = 5
_RECV_SIZE: Final = 4096

_FAIL_CODES: Final = {
    FailCode.AUTH_FAILED: ClientFailure.AUTH_FAILED,
    FailCode.TEMP_FAIL: ClientFailure.TEMPFAIL,
    FailCode.AUTHZ_FAIL: ClientFailure.AUTHZ_FAILED,
    FailCode.USER_DISABLED: ClientFailure.USER_DISABLED,
    FailCode.PASS_EXPIRED: ClientFailure.PASS_EXPIRED,
    FailCode.INVALID_BASE64: ClientFailure.INVALID_BASE64,
    FailCode.LOGIN_DISABLED: ClientFailure.LOGIN_DISABLED,
}
#: login_proxy_failed(): what the proxy's error line says before the failure's own text
_FAILURE_LOG_PREFIX: Final = {
    ProxyFailure.INTERNAL: "Aborting due to internal error: ",
    ProxyFailure.INTERNAL_CONFIG: "",
    ProxyFailure.CONNECT: "",
    ProxyFailure.REMOTE: "Aborting due to remote server: ",
    ProxyFailure.REMOTE_CONFIG: "Aborting due to remote server: ",
    ProxyFailure.PROTOCOL: "Remote server sent invalid input: ",
    ProxyFailure.AUTH: "",
    ProxyFailure.AUTH_TEMPFAIL: "",
}


class AuthService(Protocol):
    """The auth process as the login side sees it: one SASL exchange per login attempt."""

    async def sasl(self, start: SaslStart, io: SaslIO) -> AuthReply: ...


@dataclass(frozen=True, slots=True)
class LoginContext:
    """Per-configuration state shared by every session; replaced whole on reload."""

    settings: Settings
    auth: AuthService
    server_tls: ssl.SSLContext | None
    backend_tls: Callable[[bool], ssl.SSLContext]
    #: hands a plaintext proxied session to the relay process (high-security mode);
    #: False when it stays here
    handoff: Callable[[ProxiedConnection], Awaitable[bool]] | None = None
    #: settings per connection (protocol/local/remote blocks) and the server TLS
    #: context of each TLS configuration they can give (by ``tls.server_key``)
    resolver: FilterResolver | None = None
    server_tls_by_key: Mapping[str, ssl.SSLContext] = dataclasses.field(default_factory=dict)

    def for_connection(self, protocol: str, local_ip: str, remote_ip: str) -> LoginContext:
        """This context with the settings of one connection (Dovecot's filters applied)."""
        if self.resolver is None:
            return self
        settings = self.resolver.lookup(protocol, local_ip, remote_ip)
        if settings is self.settings:
            return self
        return dataclasses.replace(
            self, settings=settings, server_tls=self.server_tls_by_key.get(server_key(settings))
        )


class _SessionEnded(Exception):
    """The client went away or the engine closed the session."""


@dataclass(slots=True)
class _Proxied:
    backend: BackendConnected
    #: the backend's port and ``host`` (not the whole target: a session lives on for
    #: hours and keeps where it went, not the password it used)
    port: int
    host: str
    user: str


class _ClientSaslIO:
    """``SaslIO`` for an exchange in the auth process: each challenge goes to the client."""

    def __init__(self, session: LoginSession) -> None:
        self._session = session
        #: the client ended the exchange (``*`` or a bad line); the engine has answered it
        self.aborted = False

    async def challenge(self, data: bytes) -> bytes | None:
        session = self._session
        session.engine.sasl_challenge(data)
        session._auth_waiting = True
        # left set when the client goes away here, and (as in Dovecot, whose '*'
        # never clears it) when it aborts: "client didn't finish SASL auth"
        response = session._exchange_answer(await session._next_event())
        if response is not None:
            session._auth_waiting = False
        if response is None:
            self.aborted = True
        return response


class LoginSession:
    """Serves one client connection."""

    def __init__(
        self,
        ctx: LoginContext,
        spec: ProtocolSpec,
        stream: trio.abc.Stream,
        conn: ConnectionInfo,
        *,
        implicit_tls: bool,
        proxy_state: ProxyState | None = None,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.stream = stream
        self.conn = conn
        self.implicit_tls = implicit_tls
        self.log = logging.getLogger(spec.service)
        self.started = trio.current_time()
        self.user = ""
        self.mech = ""
        self.proxy_ttl = PROXY_TTL
        self.trusted_info_seen = False
        #: the facts of client_get_extra_disconnect_reason() (``_extra_reason``)
        self._auth_first_started: float | None = None
        self._auth_waiting = False
        self._auth_request = False
        self._auth_aborted = False
        self._auth_comm_failed = False
        self._proxy_auth_failed = False
        self._auth_successes = 0
        self._last_fail: FailCode | None = None
        assert spec.login is not None, f"{spec.service} is not a login service"
        self.hooks: LoginHooks = spec.login
        self.engine: LoginServerEngine = self.hooks.new_server(self._policy(), ctx.settings)
        self.backend_address = ""
        #: the passdb ``host`` of the backend (for ``proxyctl who``), set when proxying starts
        self.backend_host = ""
        #: logging in to the backend right now (a kick ends it too, without a message)
        self.proxy_pending = False
        #: the login process's proxy state (source IP rotation, backend records)
        self.proxy_state = proxy_state or ProxyState(
            source_ips=ctx.settings.login_source_ips.addresses,
            max_disconnect_delay=ctx.settings.login_proxy_max_disconnect_delay,
        )
        #: wall clock of the connect, comparable across processes (``proxyctl who``)
        self.connected_at = time.time()
        #: the post-login relay, once the backend accepted the login
        self.relayed: ProxiedConnection | None = None
        self._kicked_while_pending = False
        self._scope = trio.CancelScope()
        self._destroy_text: str | None = None
        self._destroy_reason = ""
        #: the last default log fields and what they were made from (``log_fields``)
        self._log_fields_cache: tuple[str, str, ConnectionInfo, str] | None = None
        #: called once the backend accepted the login (the worker's pre-login count)
        self.on_logged_in: Callable[[], None] | None = None

    @property
    def destroyed(self) -> bool:
        """``destroy()`` was called: the session is on its way out."""
        return bool(self._destroy_reason) or (self.relayed is not None and self.relayed.kicked)

    @property
    def proxying(self) -> bool:
        """False until the backend accepted the login (pre-login), then True."""
        return self.relayed is not None

    def destroy(self, log_reason: str, text: str | None = None) -> None:
        """End the session from outside: a kick, or "Connection queue full" for a pre-login client.

        ``text`` is sent as the protocol's goodbye (only before login: a proxied
        stream is never written into, so kicked clients just see the close;
        neither is a session that is logging in to its backend).
        """
        if self.relayed is not None:
            self.relayed.kick(log_reason)
            return
        self._destroy_reason = log_reason
        self._destroy_text = text if not self.proxying and not self.proxy_pending else None
        self._kicked_while_pending = self.proxy_pending
        self._scope.cancel()

    # ------------------------------------------------------------------ helpers
    def _policy(self) -> LoginPolicy:
        s = self.ctx.settings
        return LoginPolicy(
            greeting=s.login_greeting,
            mechanisms=tuple(m.upper() for m in s.auth_mechanisms),
            ssl=s.ssl,
            tls_available=self.ctx.server_tls is not None,
            tls_active=self.conn.tls,
            secured=self.conn.secured,
            trusted=self.conn.trusted,
            disable_plaintext_auth=s.disable_plaintext_auth,
        )

    def _log(self, level: int, fmt: str, *args: object) -> None:
        """A client's log line: the message, then its fields, as ``login_log_format`` places them."""
        if self.log.isEnabledFor(level):
            settings = self.ctx.settings
            line = login_line(settings.login_log_format, fmt % args, self.log_fields())
            emit_line(self.log, level, line)

    def log_fields(self) -> str:
        """Dovecot's ``login_log_format_elements`` (``user=<> method= rip= lip= %c session=<>``)."""
        elements = self.ctx.settings.login_log_format_elements
        if elements != DEFAULT_ELEMENTS:
            return logformat.compiled(elements).render(self._log_variables())
        # the default, without the template machinery, and made again only when the
        # user, the mechanism or the connection facts changed (a login logs three lines)
        cached = self._log_fields_cache
        if cached is not None and cached[0] == self.user and cached[1] == self.mech and cached[2] is self.conn:
            return cached[3]
        parts = [f"user=<{self.log_user}>"]
        if self.mech:
            parts.append(f"method={sanitize(self.mech, MAX_MECH_NAME_LEN)}")
        parts += [f"rip={self.conn.remote_ip}", f"lip={self.conn.local_ip}"]
        if self.conn.tls:
            parts.append("TLS")
        elif self.conn.secured:
            parts.append("secured")
        parts.append(f"session=<{sanitize(self.conn.session_id)}>")
        fields = ", ".join(parts)
        self._log_fields_cache = (self.user, self.mech, self.conn, fields)
        return fields

    def _log_variables(self) -> Variables:
        """The client's variables for ``login_log_format_elements`` (get_var_expand_table)."""
        conn = self.conn
        user = self.user
        security = ""
        if isinstance(self.stream, trio.SSLStream) and conn.tls:
            cipher = self.stream.cipher()
            if cipher is not None:
                bits = cipher[2]
                security = f"{self.stream.version()} with cipher {cipher[0]} ({bits}/{bits} bits)"
        name, at, domain = user.partition("@")
        values: dict[str, str | None] = {
            "user": sanitize(user, MAX_LOGIN_USER_LEN) if user else None,
            "username": sanitize(name, MAX_LOGIN_USER_LEN) if user else None,
            "domain": sanitize(domain, MAX_LOGIN_USER_LEN) if at else None,
            "service": self.spec.name,
            "home": None,
            "lip": conn.local_ip,
            "rip": conn.remote_ip,
            "pid": str(os.getpid()),
            "mech": sanitize(self.mech, MAX_MECH_NAME_LEN) if self.mech else None,
            "lport": str(conn.local_port),
            "rport": str(conn.remote_port),
            "secured": "TLS" if conn.tls else ("secured" if conn.secured else None),
            "ssl_security": security,
            "mail_pid": "",
            "session": sanitize(conn.session_id),
            "real_lip": conn.real_local_ip,
            "real_rip": conn.real_remote_ip,
            "real_lport": str(conn.real_local_port),
            "real_rport": str(conn.real_remote_port),
        }
        for prefix in ("orig", "auth"):
            for part in ("user", "username", "domain"):
                values[f"{prefix}_{part}"] = values[part]
        return logformat.variables(values)

    @property
    def log_user(self) -> str:
        """The user name as log lines show it (what the client sent, sanitized)."""
        return sanitize(self.user, MAX_LOGIN_USER_LEN)

    def _elapsed(self) -> int:
        return math.floor(trio.current_time() - self.started)

    def auth_facts(self) -> AuthFacts:
        """This session's authentication facts, for the disconnect line."""
        now = trio.current_time()
        first = self._auth_first_started
        return AuthFacts(
            attempts=self.engine.auth_attempts,
            connected_secs=math.floor(now - self.started),
            auth_secs=0 if first is None else math.floor(now - first),
            require_client_cert=self.ctx.settings.auth_ssl_require_client_cert,
            tls=self.conn.tls,
            cert_valid=self.conn.valid_client_cert,
            auth_waiting=self._auth_waiting,
            auth_request=self._auth_request,
            # proxyd has no master login after the auth reply: authenticating
            # is the auth request's span, and the ``auth_request`` text wins
            authenticating=self._auth_request,
            aborted=self._auth_aborted,
            auth_process_failed=self._auth_comm_failed,
            proxy_auth_failed=self._proxy_auth_failed,
            successes=self._auth_successes,
            last_fail=self._last_fail,
        )

    def _extra_reason(self, reason: str) -> str:
        """``reason`` with Dovecot's ``(...)`` explanation appended, when there is one."""
        extra = extra_disconnect_reason(self.auth_facts())
        return f"{reason} {extra}" if extra else reason

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out:
            await self.stream.send_all(out)

    async def _next_event(self) -> Event:
        """The engine's next event, reading from the client as needed."""
        while True:
            event = self.engine.next_event()
            await self._flush()
            if not isinstance(event, _NeedData):
                return event
            try:
                data = await self.stream.receive_some(_RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.engine.receive_data(bytes(data))

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        """Serve the connection until it closes (or ``destroy()`` is called)."""
        # one scope for the whole session: Dovecot's login timeout is its deadline until
        # the backend accepted the login, and destroy() cancels it
        self._scope.deadline = self.started + LOGIN_TIMEOUT
        with self._scope:
            await self._run()
        if self.relayed is not None:
            # a kick ended the relay inside this scope (``run_within``): its log line, its
            # disconnect delay and the client's close come now
            await self.relayed.kicked_out()
            return
        if not self._scope.cancel_called:
            return
        if self._destroy_reason:
            if self._destroy_text is not None:
                await self._goodbye(self._destroy_text)
            if self._kicked_while_pending:
                self._log_close(f"Disconnected by proxy: {self._destroy_reason}")
            else:
                self._log_close(self._destroy_reason)
        else:
            await self._goodbye_inactive()
        await close_gracefully(self.stream)

    async def _run(self) -> None:
        proxied: _Proxied | None = None
        try:
            if self.implicit_tls and not await self._handshake():
                return
            proxied = await self._pre_login()
        except _SessionEnded:
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log_close("Connection closed")
            return
        finally:
            # ended from outside or timed out: run() says goodbye and closes
            if proxied is None and not self._scope.cancel_called:
                await close_gracefully(self.stream)
        if proxied is not None:
            self._scope.deadline = math.inf  # a proxied session has no timeout
            await self._proxy_after_login(proxied)

    async def _handshake(self) -> bool:
        assert isinstance(self.stream, trio.SSLStream)
        try:
            await self.stream.do_handshake()
        except trio.BrokenResourceError as exc:
            self._log(
                logging.INFO,
                "%s",
                self._extra_reason(
                    f"Disconnected: TLS handshaking: SSL_accept() failed: {cause_text(exc, 'Connection closed')}"
                ),
            )
            return False
        self._log_tls(self.stream)
        self._take_client_cert(self.stream)
        return True

    def _take_client_cert(self, tls: trio.SSLStream[trio.abc.Stream]) -> None:
        """A verified client certificate and its user name go with every auth request."""
        valid, user = client_cert_user(tls, self.ctx.settings.ssl_cert_username_field)
        if valid:
            self.conn = dataclasses.replace(self.conn, valid_client_cert=True, cert_username=user)

    def _log_tls(self, tls: trio.SSLStream[trio.abc.Stream]) -> None:
        """``verbose_ssl``: what each handshake agreed on."""
        if self.ctx.settings.verbose_ssl:
            cipher = tls.cipher()
            self._log(
                logging.INFO,
                "SSL: handshake finished: %s %s",
                tls.version(), cipher[0] if cipher else "",
            )

    async def _goodbye(self, text: str) -> None:
        """The engine's goodbye (``* BYE``, ``-ERR``), sent within a second even when cancelled."""
        self.engine.close(text)
        with trio.move_on_after(1, shield=True), contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError
        ):
            await self._flush()

    async def _goodbye_inactive(self) -> None:
        text = (
            "Disconnected for inactivity during authentication."
            if self.engine.state is State.AUTHENTICATING
            else "Disconnected for inactivity."
        )
        await self._goodbye(text)
        reason = "Inactivity during authentication" if self._auth_request else "Inactivity"
        self._log(logging.INFO, "%s", self._extra_reason(f"Disconnected: {reason}"))

    async def _pre_login(self) -> _Proxied | None:
        await self._flush()  # greeting
        while True:
            event = await self._next_event()
            match event:
                case AuthBegin():
                    proxied = await self._authenticate(event)
                    if proxied is not None:
                        return proxied
                case StartTLS():
                    await self._start_tls()
                case TrustedClientInfo():
                    self._apply_trusted_info(event)
                case LogInfo():
                    self._log(logging.INFO, "%s", event.message)
                case Close():
                    self._log_close(event.reason)
                    return None
                case AuthRefused():
                    self._log_refused(event)
                case AuthContinue() | AuthAborted():
                    pass  # only inside an exchange: cannot happen here
                case _:
                    assert_never(event)

    def _exchange_answer(self, event: Event) -> bytes | None:
        """The client's answer to a challenge; None when it ended the exchange (the engine
        has answered it).  Raises ``_SessionEnded`` when the session must end."""
        match event:
            case AuthContinue():
                return event.response
            case Close():
                self._log_close(event.reason)
                raise _SessionEnded
            case AuthRefused():
                self._auth_waiting = False  # the client did answer: the auth process refused it
                self._log_refused(event)
                return None
            case AuthAborted():
                self._auth_aborted = True
                self._last_fail = None
                return None
            case AuthBegin() | StartTLS() | TrustedClientInfo() | LogInfo():
                return None  # cannot come in the middle of an exchange
            case _:
                assert_never(event)

    def _log_refused(self, event: AuthRefused) -> None:
        """An attempt the engine refused by itself (Dovecot logs it with auth_verbose)."""
        if event.fail_code is not None:
            # refused at Dovecot's SASL layer: an attempt with a code, like an auth reply's
            if self._auth_first_started is None:
                self._auth_first_started = trio.current_time()
            self._last_fail = FailCode(event.fail_code)
        if self.ctx.settings.auth_verbose:
            self._log(logging.INFO, "%s", event.log_text)

    def _log_close(self, reason: str) -> None:
        # Dovecot 2.3: "Disconnected: Connection closed (...)", but "Aborted login by logging out (...)"
        if not reason.startswith(("Aborted", "Disconnected")):
            reason = f"Disconnected: {reason}"
        self._log(logging.INFO, "%s", self._extra_reason(reason))

    # ------------------------------------------------------------------ STARTTLS
    async def _start_tls(self) -> None:
        assert self.ctx.server_tls is not None
        # Bytes the client pipelined behind STARTTLS are the start of the TLS stream,
        # as in Dovecot: plaintext commands there just make the handshake fail.
        leftover = self.engine.trailing_data()
        transport: trio.abc.Stream = PrefixedStream(self.stream, leftover) if leftover else self.stream
        tls = trio.SSLStream(transport, self.ctx.server_tls, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            self._log(
                logging.INFO,
                "%s",
                self._extra_reason(
                    f"Disconnected: TLS handshaking: SSL_accept() failed: {cause_text(exc, 'Connection closed')}"
                ),
            )
            raise _SessionEnded from exc
        self._log_tls(tls)
        self.stream = tls
        self.conn = dataclasses.replace(self.conn, tls=True, secured=True)
        self._take_client_cert(tls)
        self.engine.tls_started(self._policy())

    def _apply_trusted_info(self, info: TrustedClientInfo) -> None:
        changes: dict[str, object] = {}
        if info.remote_ip is not None:
            changes["remote_ip"] = info.remote_ip
        if info.remote_port is not None:
            changes["remote_port"] = info.remote_port
        if info.local_ip is not None:
            changes["local_ip"] = info.local_ip
        if info.local_port is not None:
            changes["local_port"] = info.local_port
        if info.session_id:
            changes["session_id"] = info.session_id
        if info.forward_fields:
            changes["forward_fields"] = dict(info.forward_fields)
        if info.proxy_ttl is not None:
            self.proxy_ttl = info.proxy_ttl
        self.conn = dataclasses.replace(self.conn, **changes)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ auth
    async def _authenticate(self, begin: AuthBegin) -> _Proxied | None:
        """Relay the exchange, which runs in the auth process, then act on its reply."""
        self.mech = begin.mech
        self._take_client_id()
        io = _ClientSaslIO(self)
        start = SaslStart(conn=self.conn, mech=begin.mech, initial_response=begin.initial_response)
        started = time.monotonic()
        if self._auth_first_started is None:
            self._auth_first_started = trio.current_time()
        # left set when the session ends meanwhile: "disconnected while authenticating"
        self._auth_request = True
        reply = await self.ctx.auth.sasl(start, io)
        self._auth_request = False
        counters.observe(counters.Histogram.AUTH, time.monotonic() - started)
        if io.aborted:
            return None  # the '*' or the refused answer has set the facts
        # Dovecot's sasl_callback(): each answer replaces the code of the last one
        self._last_fail = None
        if is_communication_failure(reply):
            self._auth_comm_failed = True
        elif reply.status is AuthStatus.OK:
            self._auth_successes += 1
        elif reply.status is AuthStatus.TEMPFAIL:
            self._last_fail = FailCode.TEMP_FAIL
        else:
            self._last_fail = reply.fail_code
        self.user = reply.user or self.user
        return await self._handle_reply(begin, reply)

    def _take_client_id(self) -> None:
        client_id = getattr(self.engine, "client_id", None)
        if client_id:
            self.conn = dataclasses.replace(self.conn, client_id=client_id)

    async def _handle_reply(self, begin: AuthBegin, reply: AuthReply) -> _Proxied | None:
        if reply.status is AuthStatus.OK:
            self.user = reply.user or self.user
            if "proxy" not in reply.fields:
                self._log(
                    logging.ERROR,
                    "passdb reply for %s has no proxy field and proxyd keeps no mail itself",
                    self.log_user,
                )
                self._fail(ClientFailure.PROXY_SERVERBUG)
                counters.login(self.spec.name, counters.LoginResult.TEMP_FAILED)
                return None
            # no "Login" line: the proxy's "Started proxying" is the login's line (Dovecot's
            # client_destroy_success(client, NULL))
            return await self._proxy(reply)
        if reply.fail_code is FailCode.LOGIN_DISABLED and self._referral(reply):
            counters.login(self.spec.name, counters.LoginResult.REFERRAL)
            return None
        tempfail = reply.status is AuthStatus.TEMPFAIL
        counters.login(
            self.spec.name,
            counters.LoginResult.TEMP_FAILED if tempfail else counters.LoginResult.AUTH_FAILED,
        )
        if tempfail:
            self._fail(ClientFailure.TEMPFAIL)
        else:
            failure = _FAIL_CODES.get(reply.fail_code or FailCode.AUTH_FAILED, ClientFailure.AUTH_FAILED)
            self._fail(failure, reply.reason if failure is ClientFailure.LOGIN_DISABLED else None)
        return None

    def _referral(self, reply: AuthReply) -> bool:
        """``nologin`` with ``host``: refer the client to that server (True when done)."""
        referral = parse_referral(
            reply.user or self.user, reply.fields, default_port=self.spec.default_port
        )
        if referral is None or self.hooks.referral is None:
            return False
        self.engine.auth_backend_reply(self.hooks.referral(self.engine, referral, self.mech))
        return True

    def _fail(self, failure: ClientFailure, reason: str | None = None) -> None:
        self.engine.auth_failed(failure, reason)

    # ------------------------------------------------------------------ proxy
    async def _proxy(self, reply: AuthReply) -> _Proxied | None:
        try:
            target = parse_proxy_target(
                reply.user or self.user,
                reply.fields,
                default_port=self.spec.default_port,
                default_ssl_port=self.spec.default_ssl_port,
            )
        except ProxyFieldError as exc:
            self._log(logging.ERROR, "%s%s", self._proxy_prefix(), exc)
            self._fail(ClientFailure.PROXY_UNAVAILABLE)
            return None
        for warning in target.warnings:
            # Dovecot logs these while parsing the reply, before the proxy's own prefix exists
            self._log(logging.ERROR, "%s", warning)
        refusal = target_refusal(
            target, user=self.user, local_ip=self.conn.local_ip, local_port=self.conn.local_port,
            proxy_ttl=self.proxy_ttl,
        )
        if refusal is not None:
            text, failure = refusal
            if failure is ClientFailure.PROXY_SERVERBUG:
                # the TTL check is login_proxy_connect()'s: REMOTE_CONFIG, target known
                text = f"{self._proxy_prefix(target)}Aborting due to remote server: {text}"
            else:
                text = f"{self._proxy_prefix()}{text}"
            self._log(logging.ERROR, "%s", text)
            self._fail(failure)
            return None
        login = backend_login_for(target, self.conn, self.proxy_ttl, login_user=self.user)
        source_ip = self.proxy_state.next_source_ip(target.source_ip)
        self.backend_host = target.host
        self.backend_address = f"{target.ip}:{target.port}"
        self.proxy_pending = True
        try:
            result = await self._proxy_login(target, login, source_ip)
        finally:
            self.proxy_pending = False
        if isinstance(result, BackendFailed):
            self._backend_failed(target, result, source_ip)
            return None
        counters.login(self.spec.name, counters.LoginResult.OK)
        counters.observe(counters.Histogram.BACKEND_LOGIN, result.elapsed)
        self.engine.login_succeeded(result.client_reply)
        await self._flush()
        host = f" (<{sanitize(target.host)}>)" if target.host != result.ip else ""
        msecs = math.floor(result.elapsed * 1000)
        self._log(
            logging.INFO,
            "%sStarted proxying to <%s>%s%s (%d.%03d secs%s)",
            self._proxy_prefix(target), result.ip, host, self._conn_info(target, source_ip),
            msecs // 1000, msecs % 1000,
            f", {result.reconnects} reconnects" if result.reconnects else "",
        )
        return _Proxied(result, target.port, target.host, self.user)

    async def _proxy_login(
        self, target: ProxyTarget, login: BackendLogin, source_ip: str
    ) -> BackendConnected | BackendFailed:
        settings = self.ctx.settings
        return await proxy_login(
            spec=self.spec,
            target=target,
            login=login,
            client_engine=self.engine,
            tls_context=self.ctx.backend_tls,
            time_budget=target.timeout or settings.login_proxy_timeout,
            max_reconnects=settings.login_proxy_max_reconnects,
            send_to_client=self.stream.send_all,
            log=self.log,
            state=self.proxy_state,
            source_ip=source_ip,
            log_user=self.log_user,
            client_since=self.started,
        )

    def _proxy_prefix(self, target: ProxyTarget | None = None) -> str:
        """Dovecot's proxy event prefix: ``proxy(USER): ``, with the backend once it is known."""
        if target is None:
            return f"proxy({self.log_user}): "
        return f"proxy({self.log_user},{target.ip}:{target.port}): "

    def _conn_info(self, target: ProxyTarget, source_ip: str) -> str:
        """``client_proxy_append_conn_info()``: `` from SRC``, `` as user D``, `` (master M)``."""
        info = f" from {source_ip}" if source_ip else ""
        info += f" as user {sanitize(target.destuser)}" if target.destuser != self.user else ""
        info += f" (master {sanitize(target.master_user)})" if target.master_user else ""
        return info

    def _backend_failed(self, target: ProxyTarget, failure: BackendFailed, source_ip: str) -> None:
        counters.login(self.spec.name, counters.LoginResult.BACKEND_FAILED)
        prefix = self._proxy_prefix(target)
        if failure.kind in (ProxyFailure.AUTH, ProxyFailure.AUTH_TEMPFAIL):
            # login_proxy_failed(): the backend's refusal is the client's business, logged
            # only with auth_verbose (client_proxy_log_failure())
            if self.ctx.settings.auth_verbose:
                self._log(
                    logging.INFO, "%sLogin failed%s: %s",
                    prefix, self._conn_info(target, source_ip), failure.log_text,
                )
        else:
            self._log(
                logging.ERROR, "%s%s%s", prefix, _FAILURE_LOG_PREFIX[failure.kind], failure.log_text
            )
        if failure.kind in (ProxyFailure.AUTH, ProxyFailure.AUTH_TEMPFAIL):
            self._proxy_auth_failed = True
        if failure.client_reply is not None:
            self.engine.auth_backend_reply(failure.client_reply)
        elif failure.kind in (ProxyFailure.REMOTE_CONFIG, ProxyFailure.INTERNAL_CONFIG):
            self._fail(ClientFailure.PROXY_SERVERBUG)
        else:
            self._fail(ClientFailure.PROXY_UNAVAILABLE)

    async def _proxy_after_login(self, proxied: _Proxied) -> None:
        backend = proxied.backend
        self.backend_address = f"{backend.ip}:{proxied.port}"
        self.relayed = ProxiedConnection(
            client=self.stream,
            backend=backend.stream,
            client_pending=self.engine.trailing_data(),
            backend_pending=backend.trailing,
            user=proxied.user,
            protocol=self.spec.name,
            remote_ip=self.conn.remote_ip,
            backend_ip=backend.ip,
            backend_port=proxied.port,
            log_fields=self.log_fields(),
            log_format=self.ctx.settings.login_log_format,
            log=self.log,
            state=self.proxy_state,
            record=backend.record,
            connected_at=self.connected_at,
            backend_host=proxied.host,
        )
        if self.on_logged_in is not None:
            self.on_logged_in()
        relayed, handoff = self.relayed, self.ctx.handoff
        # a plaintext session of a high-security process goes to the relay process once
        # it is quiet (TLS sessions never move: their state is in this process)
        offer = functools.partial(handoff, relayed) if handoff is not None and relayed.plain_sockets() else None
        # in the session's own scope (no timeout any more; destroy() kicks the relay)
        if await relayed.run_within(self._scope, offer):
            await relayed.release()  # the relay process has it now
