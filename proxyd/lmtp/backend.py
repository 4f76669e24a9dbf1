"""One connection from the LMTP proxy to a backend: connect, TLS, and the engine's dialogue.

The protocol is ``proxyd.protocols.lmtp.client``'s; this module moves bytes
and keeps time.  Every failure becomes ``BackendError(kind, reply)`` with
Dovecot's kind words (``connect``, ``connection lost``, ``timed out``, ``bad
reply``), which the session turns into ``451 4.4.0 Proxy failed (...)``, or
with the backend's own negative reply, which the session passes on.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable

import trio

from proxyd.lmtp.spool import Spool
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

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_READ_SIZE = 65536


class BackendError(Exception):
    """The backend could not take the command; ``reply`` is its answer when it gave one."""

    def __init__(self, kind: str, reply: SmtpReply | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.reply = reply


class BackendConnection:
    """A backend that holds some of the transaction's recipients."""

    def __init__(self, route: Route, settings: ClientSettings, tls: Callable[[bool], ssl.SSLContext]) -> None:
        self.route = route
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
                self._stream = await _connect(self.route.connect_ip, self.route.port, self.route.source_ip)
                if self.route.ssl and not self.route.starttls:
                    self._stream = await self._start_tls(self._stream)
                await self._flush()
                while not isinstance(event := await self._next(), Ready):
                    if isinstance(event, NeedTLS):
                        self._stream = await self._start_tls(self._stream)
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
            raise self._failed("timed out") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError):
            raise self._failed("connect") from None
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
                return await self._reply("RCPT")
        except trio.TooSlowError:
            raise self._failed("timed out") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError):
            raise self._failed("connection lost") from None

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
                raise self._failed("bad reply")
            async for piece in spool.chunks(prefix):
                self.engine.message_data(piece)
                with trio.fail_after(limit):
                    await self._flush()
            self.engine.message_end()
            while len(replies) < count:
                event = await self._step(limit)
                if isinstance(event, DataReply):
                    replies.append(event.reply)
                else:
                    raise self._failed("bad reply")
        except trio.TooSlowError:
            error = self._failed("timed out")
            replies.extend([error] * (count - len(replies)))
        except (OSError, trio.BrokenResourceError, ssl.SSLError):
            error = self._failed("connection lost")
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
        if self.failure is None:
            self.engine.quit()
            with trio.move_on_after(1), contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
                await stream.send_all(self.engine.data_to_send())
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
                await stream.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)

    # ------------------------------------------------------------------ plumbing
    def _failed(self, kind: str, reply: SmtpReply | None = None) -> BackendError:
        self.failure = BackendError(kind, reply)
        return self.failure

    async def _flush(self) -> None:
        out = self.engine.data_to_send()
        if out and self._stream is not None:
            await self._stream.send_all(out)

    async def _next(self) -> ClientEvent:
        while (event := self.engine.next_event()) is NEED_DATA:
            await self._flush()
            assert self._stream is not None
            self.engine.receive_data(await self._stream.receive_some(_READ_SIZE))
        assert not isinstance(event, _NeedData)
        if isinstance(event, Failed):
            raise self._failed("remote" if event.kind == "connect" and event.reply else event.kind, event.reply)
        return event

    async def _reply(self, command: str) -> SmtpReply:
        event = await self._next()
        if not isinstance(event, CommandReply) or event.command != command:
            raise self._failed("bad reply")
        return event.reply

    async def _start_tls(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        context = self._tls(self.route.verify_cert)
        tls = trio.SSLStream(stream, context, server_hostname=self.route.host)
        await tls.do_handshake()
        return tls


async def _connect(ip: str, port: int, source_ip: str) -> trio.SocketStream:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        if source_ip:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            await sock.bind((source_ip, 0))
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
