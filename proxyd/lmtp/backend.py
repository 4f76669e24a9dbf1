"""One connection from the LMTP proxy to a backend: connect, TLS, and the engine's dialogue.

The protocol is ``proxyd.protocols.lmtp.client``'s; this module moves bytes
and keeps time.  Every failure becomes ``BackendError(kind, reply)`` with
Dovecot's kind words (``connect``, ``connection lost``, ``timed out``, ``bad
reply``), which the session turns into ``451 4.4.0 Proxy failed (...)``, or
with the backend's own negative reply, which the session passes on.  A failure
without a reply carries lib-smtp's two texts for it: ``error`` (what Dovecot
logs, and what ``lmtp_verbose_replies`` shows the MTA) and ``user_error``
(what it shows otherwise, e.g. ``Failed to connect to remote server``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import Callable

import trio

from proxyd.lmtp.rawlog import RawlogDir, unwrapped
from proxyd.lmtp.spool import Spool
from proxyd.login.backend import connect_tcp
from proxyd.protocols.events import NEED_DATA, _NeedData
from proxyd.protocols.lmtp.client import (
    ClientEvent,
    ClientSettings,
    CommandReply,
    DataReply,
    Failed,
    LmtpClient,
    NeedTLS,
    Ready,
    SendMessage,
)
from proxyd.protocols.lmtp.replies import SmtpReply
from proxyd.protocols.lmtp.route import Route

_READ_SIZE = 65536


#: lib-smtp's user_error for a failure of each kind that has no more precise one
_USER_ERRORS = {
    "connect": "Failed to connect to remote server",
    "connection lost": "Lost connection to remote server",
    "timed out": "Command timed out",
    "bad reply": "Got unexpected reply",
}


class BackendError(Exception):
    """The backend could not take the command; ``reply`` is its answer when it gave one."""

    def __init__(
        self, kind: str, reply: SmtpReply | None = None, *, error: str = "", user_error: str = "", log: str = ""
    ) -> None:
        if kind == "remote" and reply is not None and reply.code == 421:
            # lib-smtp's CONNECTION_CLOSED: the backend closes, whatever it was asked
            kind = "connection lost"
        super().__init__(kind)
        self.kind = kind
        self.reply = reply
        #: lib-smtp's detailed error ("" when it has none beyond the user error)
        self.error = error
        self.user_error = user_error or _USER_ERRORS.get(kind, kind)
        #: what Dovecot logs as an error about it
        self.log = log or error

    def text(self, verbose: bool) -> str:
        """The text of lib-smtp's failure reply (``verbose_user_errors``: the detailed one)."""
        return self.error if verbose and self.error else self.user_error


def _reason(exc: BaseException) -> str:
    """strerror of the OS error behind a trio or ssl exception."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or type(cause).__name__


class BackendConnection:
    """A backend that holds some of the transaction's recipients."""

    def __init__(
        self,
        route: Route,
        settings: ClientSettings,
        tls: Callable[[bool], ssl.SSLContext],
        rawlog: RawlogDir | None = None,
    ) -> None:
        self.route = route
        #: lmtp_proxy_rawlog_dir
        self._rawlog = rawlog
        self.engine = LmtpClient(settings)
        self._tls = tls
        self._stream: trio.abc.Stream | None = None
        self.started = time.monotonic()
        #: the recipients it accepted, in order: (index in the transaction, ...)
        self.accepted: list[int] = []
        #: a failure that ends this connection for the rest of the transaction
        self.failure: BackendError | None = None
        #: MAIL is queued to go out with the first RCPT (PIPELINING)
        self._mail_pending = False

    @property
    def address(self) -> str:
        return f"{self.route.host}:{self.route.port}"

    async def open(self, sender: str, mail_params: tuple[str, ...]) -> None:
        """Connect, finish the handshake and send MAIL; raises BackendError."""
        try:
            with trio.fail_after(self.route.timeout):
                try:
                    self._stream = await connect_tcp(self.route.connect_ip, self.route.port, self.route.source_ip)
                except OSError as exc:
                    # lib-smtp logs this, and has no error text beyond the user one
                    raise self._failed("connect", log=f"connect({self.address}) failed: {_reason(exc)}") from None
                if self.route.ssl and not self.route.starttls:
                    self._stream = await self._start_tls(self._stream)
                await self._start_rawlog()
                await self._flush()
                while not isinstance(event := await self._next(), Ready):
                    if isinstance(event, NeedTLS):
                        self._stream = await self._start_tls(unwrapped(self._stream))
                        await self._start_rawlog()
                        self.engine.tls_started()
                        await self._flush()
                self.engine.mail(sender, mail_params)
                if "PIPELINING" in self.engine.capabilities:
                    # MAIL goes out with the first RCPT (one packet, one round trip less)
                    self._mail_pending = True
                    return
                await self._flush()
                reply = await self._reply("MAIL")
        except trio.TooSlowError:
            if self._stream is None:
                raise self._failed("connect", error=f"Connection timed out after {int(self.route.timeout)} seconds",
                                   user_error="Connect timed out") from None
            raise self._timed_out() from None
        if not reply.success:
            raise self._failed("remote", reply)

    async def rcpt(self, path: str, params: tuple[str, ...]) -> SmtpReply:
        if self.failure is not None:
            raise self.failure
        self.engine.rcpt(path, params)
        try:
            with trio.fail_after(self.route.timeout):
                await self._flush()
                if self._mail_pending:
                    self._mail_pending = False
                    mail = await self._reply("MAIL")
                    if not mail.success:
                        await self._reply("RCPT")  # the RCPT's answer to a refused MAIL
                        raise self._failed("remote", mail)
                reply = await self._reply("RCPT")
        except trio.TooSlowError:
            raise self._timed_out() from None
        if reply.code == 421:
            raise self._failed("remote", reply)
        return reply

    async def data(self, spool: Spool, prefix: bytes, limit: float) -> list[SmtpReply | BackendError]:
        """Send ``prefix`` and the spooled message; one reply (or failure) per accepted
        recipient, in order.  ``limit`` bounds every wait for the backend, not the whole."""
        count = len(self.accepted)
        replies: list[SmtpReply | BackendError] = []
        self.engine.data(len(prefix) + spool.size, count)
        try:
            while not isinstance(event := await self._step(limit), SendMessage):
                if isinstance(event, CommandReply) and event.command == "DATA":  # DATA refused
                    return [event.reply] * count
                raise self._unexpected(event)
            try:
                async for piece in spool.chunks(prefix):
                    self.engine.message_data(piece)
                    with trio.fail_after(limit):
                        await self._flush()
            except OSError as exc:  # the temporary file, not the backend
                raise self._failed("broken payload", error=f"read(lmtp data) failed: {_reason(exc)}",
                                   user_error="Failed to read message data") from None
            self.engine.message_end()
            while len(replies) < count:
                event = await self._step(limit)
                if isinstance(event, DataReply):
                    replies.append(event.reply)
                else:
                    raise self._unexpected(event)
        except trio.TooSlowError:
            error = self._timed_out()
            replies.extend([error] * (count - len(replies)))
        except BackendError as exc:
            replies.extend([exc] * (count - len(replies)))
        return replies

    async def _step(self, limit: float) -> ClientEvent:
        with trio.fail_after(limit):
            await self._flush()
            return await self._next()

    async def close(self) -> None:
        """QUIT when the connection is still good, then close (never waits long)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if self.failure is None:
                self.engine.quit()
                with trio.move_on_after(1), contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
                    await stream.send_all(self.engine.data_to_send())
        finally:
            # closed even when the session is cancelled during the QUIT
            with trio.move_on_after(1) as scope:
                scope.shield = True
                with contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
                    await stream.aclose()
            if scope.cancelled_caught:
                await trio.aclose_forcefully(stream)

    # ------------------------------------------------------------------ plumbing
    def _failed(
        self, kind: str, reply: SmtpReply | None = None, *, error: str = "", user_error: str = "", log: str = ""
    ) -> BackendError:
        self.failure = BackendError(kind, reply, error=error, user_error=user_error, log=log)
        return self.failure

    async def _start_rawlog(self) -> None:
        if self._rawlog is not None and self._stream is not None:
            self._stream = await self._rawlog.wrap(self._stream)

    def _timed_out(self) -> BackendError:
        return self._failed("timed out", error="Command timed out, disconnecting", user_error="Command timed out")

    def _unexpected(self, event: ClientEvent) -> BackendError:
        reply = getattr(event, "reply", None)
        if isinstance(reply, SmtpReply):
            return self._failed("bad reply", error=f"Unexpected reply: {reply.log()}", user_error="Got unexpected reply")
        return self._failed("bad reply")

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out and self._stream is not None:
            try:
                await self._stream.send_all(out)
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                if isinstance(cause, (BrokenPipeError, ConnectionResetError)):
                    raise self._failed("connection lost", error="Connection lost: Remote disconnected while writing output",
                                       user_error="Lost connection to remote server: Remote closed connection unexpectedly") from None
                raise self._failed("connection lost", error=f"Connection lost: write({self.address}) failed: {_reason(exc)}",
                                   user_error="Lost connection to remote server: Write failure") from None

    async def _next(self) -> ClientEvent:
        while (event := self.engine.next_event()) is NEED_DATA:
            await self._flush()
            assert self._stream is not None
            try:
                data = await self._stream.receive_some(_READ_SIZE)
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                raise self._failed("connection lost", error=f"Connection lost: read({self.address}) failed: {_reason(exc)}",
                                   user_error="Lost connection to remote server: Read failure") from None
            self.engine.receive_data(data)
        assert not isinstance(event, _NeedData)
        if isinstance(event, Failed):
            kind = "remote" if event.kind == "connect" and event.reply else event.kind
            raise self._failed(kind, event.reply, error=event.error, user_error=event.user_error)
        return event

    async def _reply(self, command: str) -> SmtpReply:
        event = await self._next()
        if not isinstance(event, CommandReply) or event.command != command:
            raise self._unexpected(event)
        return event.reply

    async def _start_tls(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        context = self._tls(self.route.verify_cert)
        tls = trio.SSLStream(stream, context, server_hostname=self.route.host)
        try:
            await tls.do_handshake()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise self._failed("connect", error=f"SSL handshaking with {self.address} failed: {_reason(exc)}",
                               user_error=_USER_ERRORS["connect"]) from None
        return tls
