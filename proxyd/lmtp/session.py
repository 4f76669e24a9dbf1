"""One MTA connection to the LMTP proxy (Dovecot's ``src/lmtp/lmtp-proxy.c``, in Trio).

Theory of operation
-------------------
The engine (``proxyd.protocols.lmtp.server``) answers the MTA; this driver
acts on its three questions:

* **RCPT**: the recipient (without ``+detail``) is looked up in the passdb
  through the auth process, without a password (Dovecot's
  ``auth_master_pass_lookup()``); the passdb's fields say where it goes
  (``proxyd.protocols.lmtp.route``).  Recipients whose routes are equal share
  one backend connection, opened at the first of them: connect, LHLO/EHLO,
  STARTTLS, XCLIENT, MAIL.  The RCPT goes to that backend at once and the MTA
  gets the backend's answer, so a recipient is accepted here only when its
  backend accepted it.
* **DATA** or **BDAT**: the message is kept in a ``Spool`` (memory up to
  128 KiB, then an unlinked file in ``mail_temp_dir``) as it arrives; at its
  end it goes to every backend that accepted a recipient, at the same time,
  read from the spool by each; the MTA gets one reply per accepted recipient, in RCPT
  order, each the backend's verdict for that recipient: ``250 2.0.0 <rcpt>
  <session> Saved`` only after the backend said 250 for it.  No message is
  acknowledged for a recipient whose backend did not take it.
* **reset** (RSET, LHLO, XCLIENT, QUIT, EOF, and after DATA): the backend
  connections of the transaction are closed.

Session ids are Dovecot's: the connection's id names its first transaction,
``:T<n>`` the later ones, ``:R<n>`` the n-th RCPT of a transaction after the
first, ``:P<n>`` the n-th backend connection (sent to it in XCLIENT SESSION).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol, assert_never

import trio

from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, ConnectionInfo
from proxyd.lmtp import process_log
from proxyd.lmtp.backend import BackendConnection, BackendError
from proxyd.lmtp.rawlog import RawlogDir, RawlogStream, unwrapped
from proxyd.lmtp.spool import Spool, TempDir
from proxyd.log import MAX_REMOTE_LINE_LEN, sanitize
from proxyd.protocols.events import _NeedData
from proxyd.protocols.lmtp.address import (
    Address,
    AddressError,
    original_recipient,
    parse_mailbox,
    split_detail,
    xtext_encode,
)
from proxyd.protocols.lmtp.client import ClientSettings, XclientData
from proxyd.protocols.lmtp.replies import (
    TEMP_LOOKUP_FAILURE,
    SmtpReply,
    format_reply,
    forwarded_reply,
    recipient_reply,
)
from proxyd.protocols.lmtp.route import (
    Route,
    RouteError,
    is_ourself,
    parse_route,
    rcpt_forward_param,
)
from proxyd.protocols.lmtp.server import (
    Closed,
    LmtpServer,
    MessageChunk,
    MessageEnd,
    RcptTo,
    StartTLS,
    TransactionReset,
    XclientApplied,
)
from proxyd.protocols.lmtp.trace import received_header

#: the failure kinds Dovecot names in "Proxy failed (<kind>, session=...)"
_FAILURE_DETAILS: Final = frozenset({"connect", "connection lost", "bad reply", "timed out"})
#: Dovecot's LMTP_PROXY_DEFAULT_TTL
DEFAULT_TTL: Final = 5
#: Dovecot's CLIENT_IDLE_TIMEOUT_MSECS for LMTP clients
IDLE_TIMEOUT: Final = 300.0
_READ_SIZE: Final = 65536



class AuthLookup(Protocol):
    async def lookup(self, request: AuthRequest) -> AuthReply: ...


@dataclass(frozen=True, slots=True)
class LmtpContext:
    """What every LMTP session of a process shares; replaced whole on reload."""

    hostname: str
    greeting: str
    recipient_delimiter: str
    #: lmtp_add_received_header
    add_received_header: bool
    auth: AuthLookup
    server_tls: ssl.SSLContext | None
    backend_tls: Callable[[bool], ssl.SSLContext]
    #: lmtp_hdr_delivery_address: "none", "final" or "original"
    hdr_delivery_address: str = "final"
    #: lmtp_client_workarounds
    workarounds: frozenset[str] = frozenset()
    #: mail_temp_dir, opened before the privilege drop (None: messages stay in memory)
    temp_dir: TempDir | None = None
    #: lmtp_verbose_replies: a failed backend's detailed error goes to the MTA
    verbose_replies: bool = False
    #: lmtp_rawlog_dir (MTA connections) and lmtp_proxy_rawlog_dir (backend connections)
    rawlog_dir: RawlogDir | None = None
    proxy_rawlog_dir: RawlogDir | None = None


def new_session_id() -> str:
    """A 22-character id like lib-smtp's (base64 of a 128-bit GUID, without padding)."""
    raw = time.time_ns().to_bytes(8, "little") + os.getpid().to_bytes(4, "little") + os.urandom(4)
    return base64.b64encode(raw).decode("ascii").rstrip("=")


@dataclass(slots=True)
class _Recipient:
    address: Address  # as the MTA sent it
    original: Address  # its ORCPT, else the same
    backend_address: Address  # after destuser
    session_id: str
    backend: BackendConnection


@dataclass(slots=True)
class _Transaction:
    id: str
    rcpt_seq: int = 0
    backends: dict[tuple[object, ...], BackendConnection] = field(default_factory=dict)
    recipients: list[_Recipient] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class LmtpSession:
    """Serves one MTA connection."""

    def __init__(
        self,
        ctx: LmtpContext,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        conn_seq: int = 1,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.info = info
        self.session_id = new_session_id()
        self.engine = LmtpServer(
            hostname=ctx.hostname,
            greeting=ctx.greeting,
            trusted=info.trusted,
            tls_available=ctx.server_tls is not None and not info.tls,
            tls_active=info.tls,
            workarounds=ctx.workarounds,
        )
        self._transactions = 0
        self._trans: _Transaction | None = None
        #: the message being received (from its first octet until the transaction ends)
        self._spool: Spool | None = None
        self.connected_at = time.time()
        #: lib-smtp's per-process connection counter, for the recipients' log prefix
        self.conn_seq = conn_seq

    @property
    def _remote(self) -> str:
        return self.info.remote_ip or "local"

    def _rcpt_prefix(self, address: Address, session_id: str) -> str:
        """Dovecot's log prefix of a recipient's event: ``lmtp-server: conn IP:PORT [N]: rcpt ADDR: <SESSION>: ``."""
        conn = f"{self.info.remote_ip}:{self.info.remote_port}" if self.info.remote_ip else "local"
        return f"lmtp-server: conn {conn} [{self.conn_seq}]: rcpt {sanitize(address.encode())}: <{session_id}>: "

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        process_log().info("Connect from %s", self._remote)
        reason = "Connection closed"
        try:
            reason = await self._serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
            reason = "Connection closed"
        except trio.TooSlowError:
            reason = "Disconnected for inactivity"
        finally:
            with trio.CancelScope(shield=True):
                await self._reset()
                await trio.aclose_forcefully(self.stream)
            process_log().info("Disconnect from %s: %s (state=%s)", self._remote, reason, self.engine.dovecot_state)

    async def _serve(self) -> str:
        engine = self.engine
        if self.ctx.rawlog_dir is not None:
            self.stream = await self.ctx.rawlog_dir.wrap(self.stream)
        while True:
            event = engine.next_event()
            await self._flush()
            match event:
                case _NeedData():
                    with trio.fail_after(IDLE_TIMEOUT):
                        data = await self.stream.receive_some(_READ_SIZE)
                    engine.receive_data(data)
                case RcptTo():
                    reply, accepted = await self._rcpt(event)
                    engine.rcpt_reply(reply, accepted=accepted)
                case MessageChunk():
                    await self._message_spool().write(event.data)
                case MessageEnd():
                    spool = self._message_spool()
                    await spool.finish()
                    engine.data_replies(await self._data(spool))
                    await self._reset()
                case TransactionReset():
                    await self._reset()
                case XclientApplied():
                    # the MTA behind a trusted proxy: what the passdb sees and what goes on in XCLIENT
                    proxy = engine.proxy_data
                    self.info = dataclasses.replace(
                        self.info,
                        remote_ip=proxy.addr or self.info.remote_ip,
                        remote_port=proxy.port or self.info.remote_port,
                    )
                case StartTLS():
                    assert self.ctx.server_tls is not None
                    tls = trio.SSLStream(unwrapped(self.stream), self.ctx.server_tls, server_side=True)
                    self.stream = tls
                    await tls.do_handshake()
                    if self.ctx.rawlog_dir is not None:
                        # a new rawlog, of the protocol inside TLS
                        self.stream = await self.ctx.rawlog_dir.wrap(tls)
                    self.info = dataclasses.replace(self.info, tls=True, secured=True)
                    engine.tls_started()
                case Closed():
                    return event.reason
                case _:
                    assert_never(event)

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out:
            await self.stream.send_all(out)

    def _transaction(self) -> _Transaction:
        if self._trans is None:
            self._transactions += 1
            suffix = "" if self._transactions == 1 else f":T{self._transactions}"
            self._trans = _Transaction(self.session_id + suffix)
        return self._trans

    def _message_spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.ctx.temp_dir)
        return self._spool

    async def _reset(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        trans, self._trans = self._trans, None
        if trans is None:
            return
        async with trio.open_nursery() as nursery:
            for backend in trans.backends.values():
                nursery.start_soon(backend.close)

    # ------------------------------------------------------------------ RCPT
    async def _rcpt(self, event: RcptTo) -> tuple[bytes, bool]:
        trans = self._transaction()
        trans.rcpt_seq += 1
        rcpt_session = trans.id if trans.rcpt_seq == 1 else f"{trans.id}:R{trans.rcpt_seq}"
        address = event.address
        username, detail, delim = split_detail(address, self.ctx.recipient_delimiter)
        conn = dataclasses.replace(self.info, session_id=rcpt_session)
        if event.forward:
            # a trusted peer's XRCPTFORWARD: the passdb sees them as forward_* fields
            conn = dataclasses.replace(conn, forward_fields=dict(event.forward))
        reply = await self.ctx.auth.lookup(AuthRequest(conn=conn, mech="", user=username, password=None))
        if reply.status is AuthStatus.TEMPFAIL:
            return recipient_reply(address, 451, "4.3.0", TEMP_LOOKUP_FAILURE), False
        if reply.status is not AuthStatus.OK:
            return recipient_reply(address, 550, "5.1.1", f"User doesn't exist: {username}"), False
        prefix = self._rcpt_prefix(address, rcpt_session)
        try:
            route, new_user = parse_route(reply.fields, self.info.local_port)
        except RouteError as exc:
            process_log().error("%sproxy: %s", prefix, sanitize(str(exc)))
            return recipient_reply(address, 451, "4.3.0", "Temporary internal error"), False
        if route is None:
            # Dovecot delivers such a user locally; proxyd keeps no mail
            process_log().error("%s%s: passdb gave no proxy field and proxyd delivers no mail locally",
                      prefix, sanitize(username))
            return recipient_reply(address, 451, "4.3.0", "Temporary internal error"), False
        backend_address = address
        if new_user is not None and new_user != username:
            try:
                user = parse_mailbox(new_user)
            except AddressError:
                process_log().error("%s%s: Username `%s' returned by passdb lookup is not a valid SMTP address",
                          prefix, sanitize(username), sanitize(new_user))
                return recipient_reply(address, 550, "5.3.5", "Internal user lookup failure"), False
            backend_address = user if not detail else user.with_localpart(f"{user.localpart}{delim}{detail}")
        elif is_ourself(route, self.info.local_ip, self.info.local_port):
            process_log().error("%sProxying to <%s> loops to itself", prefix, sanitize(username))
            return recipient_reply(address, 554, "5.4.6", "Proxying loops to itself"), False
        if self.engine.proxy_data.ttl_plus_1 == 1:
            process_log().error("%sProxying to <%s> appears to be looping (TTL=0)", prefix, sanitize(username))
            return recipient_reply(address, 554, "5.4.6", "Proxying appears to be looping (TTL=0)"), False
        try:
            backend = await self._backend(trans, route)
            params = event.params
            if backend_address != address and not any(p.upper().startswith("ORCPT=") for p in params):
                params = (*params, f"ORCPT=rfc822;{xtext_encode(address.encode())}")
            # the passdb's forward_* fields, to a backend that takes them (Dovecot's XRCPTFORWARD)
            forward = {k[8:]: v for k, v in reply.fields.items() if k.lower().startswith("forward_")}
            if forward and "XRCPTFORWARD" in backend.engine.capabilities:
                params = (*params, rcpt_forward_param(forward))
            answer = await backend.rcpt(backend_address.path(), params)
        except BackendError as exc:
            return self._backend_failure(address, rcpt_session, exc), False
        if answer.success:
            backend.accepted.append(len(trans.recipients))
            trans.recipients.append(
                _Recipient(address, original_recipient(address, event.params), backend_address, rcpt_session, backend)
            )
        return forwarded_reply(address, answer, rcpt=True,
                               default_enhanced="2.1.0" if answer.success else f"{answer.code // 100}.0.0"), answer.success

    def _received(self, trans: _Transaction) -> bytes:
        tls = None
        stream = self.stream.inner if isinstance(self.stream, RawlogStream) else self.stream
        if isinstance(stream, trio.SSLStream):
            cipher = stream.cipher()
            if cipher is not None:
                tls = f"{cipher[1]} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits)"
        assert self.engine.transaction is not None
        return received_header(
            helo=self.engine.helo or self.engine.proxy_data.helo,
            remote_ip=self.info.remote_ip,
            tls=tls,
            hostname=self.ctx.hostname,
            transaction_id=trans.id,
            sender=self.engine.transaction.sender,
            recipients=self._trace_recipients(trans),
            timestamp=time.time(),
        )

    def _trace_recipients(self, trans: _Transaction) -> list[Address]:
        """Who the Received: header names (only one recipient is ever named there)."""
        mode = self.ctx.hdr_delivery_address
        if mode == "none":
            return []
        if mode == "original":
            return [rcpt.original for rcpt in trans.recipients]
        return [rcpt.address for rcpt in trans.recipients]

    def _backend_failure(self, address: Address, rcpt_session: str, exc: BackendError) -> bytes:
        if exc.kind == "remote" and exc.reply is not None:
            reply = exc.reply
            return forwarded_reply(address, reply, rcpt=True, default_enhanced=f"{reply.code // 100}.0.0")
        if exc.log:
            process_log().error("%slmtp-client: %s", self._rcpt_prefix(address, rcpt_session), sanitize(exc.log))
        return self._proxy_failed(exc, rcpt_session)

    def _proxy_failed(self, exc: BackendError, session_id: str) -> bytes:
        """Dovecot's ``lmtp_proxy_handle_connection_error()``: what the backend's trouble was
        (with ``lmtp_verbose_replies``: lib-smtp's detailed error, or the backend's 421)."""
        if self.ctx.verbose_replies:
            text = exc.reply.log() if exc.reply is not None else exc.text(verbose=True)
            return format_reply(451, "4.4.0", f"Proxy failed: {sanitize(text)} (session={session_id})")
        detail = f"{exc.kind}, " if exc.kind in _FAILURE_DETAILS else ""
        return format_reply(451, "4.4.0", f"Proxy failed ({detail}session={session_id})")

    async def _backend(self, trans: _Transaction, route: Route) -> BackendConnection:
        key = route.key()
        backend = trans.backends.get(key)
        if backend is not None:
            if backend.failure is not None:
                raise backend.failure
            return backend
        data = self.engine.proxy_data
        ttl_plus_1 = DEFAULT_TTL + 1 if data.ttl_plus_1 == 0 else data.ttl_plus_1 - 1
        settings = ClientSettings(
            lmtp=route.lmtp,
            my_hostname=self.ctx.hostname,
            starttls=route.starttls,
            trusted=not route.not_trusted,
            xclient=XclientData(
                helo=data.helo or self.engine.helo,
                addr=self.info.remote_ip,
                port=self.info.remote_port,
                session=f"{trans.id}:P{len(trans.backends) + 1}",
                ttl=ttl_plus_1 - 1,
                login=data.login,
                timeout=data.timeout,
            ),
        )
        backend = BackendConnection(route, settings, self.ctx.backend_tls, self.ctx.proxy_rawlog_dir)
        trans.backends[key] = backend
        assert self.engine.transaction is not None
        sender = self.engine.transaction.sender.path()
        await backend.open(sender, self.engine.transaction.mail_params)
        return backend

    # ------------------------------------------------------------------ DATA
    async def _data(self, spool: Spool) -> list[bytes]:
        trans = self._transaction()
        prefix = self._received(trans) if self.ctx.add_received_header else b""
        results: dict[int, SmtpReply | BackendError] = {}
        timeout = max((b.route.timeout for b in trans.backends.values()), default=125.0)

        async def deliver(backend: BackendConnection) -> None:
            replies = await backend.data(spool, prefix, timeout)
            results.update(zip(backend.accepted, replies, strict=True))

        async with trio.open_nursery() as nursery:
            for backend in trans.backends.values():
                if backend.accepted and backend.failure is None:
                    nursery.start_soon(deliver, backend)
        total = len(trans.recipients)
        out: list[bytes] = []
        for index, rcpt in enumerate(trans.recipients):
            result = results.get(index) or rcpt.backend.failure or BackendError("connection lost")
            out.append(self._data_reply(rcpt, result, index, total, trans))
        return out

    def _data_reply(
        self, rcpt: _Recipient, result: SmtpReply | BackendError, index: int, total: int, trans: _Transaction
    ) -> bytes:
        backend = rcpt.backend
        elapsed = int((time.monotonic() - backend.started) * 1000)
        where = f"<{rcpt.backend_address.encode()}> at {backend.address}"
        count = f"({index + 1}/{total} at {elapsed} ms)"
        prefix = self._rcpt_prefix(rcpt.address, rcpt.session_id)
        if isinstance(result, SmtpReply) and result.code == 421:
            # lib-smtp's CONNECTION_CLOSED: the backend is going away, not refusing the message
            result = BackendError("remote", result)
        if isinstance(result, BackendError):
            if result.kind == "remote" and result.reply is not None:
                result = result.reply
            else:
                text = result.reply.log() if result.reply is not None else result.text(self.ctx.verbose_replies)
                process_log().error("%sFailed to send message to %s: %s %s", prefix, where, sanitize(text), count)
                return self._proxy_failed(result, rcpt.session_id)
        if result.success:
            process_log().info("%sSent message to %s: %s %s", prefix, where, sanitize(result.log(), MAX_REMOTE_LINE_LEN), count)
            own = SmtpReply(result.code, result.enhanced or "2.0.0", (f"{rcpt.session_id} Saved",))
            return forwarded_reply(rcpt.address, own, rcpt=False, default_enhanced="2.0.0")
        # the backend refused: it logs why; for the proxy this is only an info event
        process_log().info("%sFailed to send message to %s: %s %s", prefix, where, sanitize(result.log(), MAX_REMOTE_LINE_LEN), count)
        return forwarded_reply(rcpt.address, result, rcpt=False, default_enhanced=f"{result.code // 100}.0.0")
