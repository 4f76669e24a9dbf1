"""The backend side of the LMTP proxy, sans-IO: one connection to one backend (lib-smtp's client).

Theory of operation
-------------------
``LmtpClient`` speaks LMTP (``LHLO``) or SMTP (``EHLO``), as the passdb's
``protocol`` field says.  The handshake runs by itself once the driver feeds
the backend's greeting:

    greeting -> LHLO -> [STARTTLS -> (TLS) -> LHLO] -> [XCLIENT -> 220 -> LHLO] -> Ready

XCLIENT is sent only to a backend that offers it and that we trust (no
``proxy_not_trusted``), with the attributes it lists, in Dovecot's order
(HELO PROTO LOGIN SESSION TTL TIMEOUT PORT ADDR), so that the backend logs the
MTA's address and the proxy TTL stops a loop.  Then the driver adds the
transaction: ``mail()``, ``rcpt()`` and ``data()``; every reply comes back as
an event naming its command.  The message itself goes out in pieces
(``message_data()``, ``message_end()``) once the engine says ``SendMessage``:
at once to a backend that offers CHUNKING (one ``BDAT <size> LAST``, no
dot-stuffing), else after DATA's 354 (dot-stuffed as it goes).  Then an LMTP
backend answers once per accepted recipient; an SMTP backend once for all,
which the engine repeats for each.

Events: ``Ready``, ``NeedTLS`` (driver wraps the stream, calls
``tls_started()``), ``SendMessage``, ``CommandReply(command, reply)``,
``DataReply(index, reply)`` and ``Failed(kind, reply)`` where ``kind`` is Dovecot's detail for
"Proxy failed (<kind>, session=...)": ``connect`` (handshake refused, with the
backend's reply when it gave one), ``connection lost``, ``bad reply``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.events import NEED_DATA, _NeedData
from proxyd.protocols.lmtp.address import xtext_encode
from proxyd.protocols.lmtp.replies import ReplyError, ReplyReader, SmtpReply

#: Dovecot's SMTP_BASE_LINE_LENGTH_LIMIT: a longer XCLIENT is split over several commands
XCLIENT_LINE_LIMIT: Final = 512


@dataclass(frozen=True, slots=True)
class XclientData:
    """What XCLIENT tells the backend: the MTA's side of the connection."""

    helo: str
    addr: str
    port: int
    session: str
    ttl: int  # the TTL to send (already one less than ours)
    proto: str = "LMTP"
    login: str = ""
    timeout: int = 0


@dataclass(frozen=True, slots=True)
class ClientSettings:
    lmtp: bool  # LHLO (protocol=lmtp) or EHLO (protocol=smtp)
    my_hostname: str
    starttls: bool
    trusted: bool  # not proxy_not_trusted: XCLIENT may be sent
    xclient: XclientData


@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake is done; the transaction may start."""


@dataclass(frozen=True, slots=True)
class NeedTLS:
    """The backend said 220 to STARTTLS."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """The backend takes the message now: ``message_data()`` ... ``message_end()``."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    command: str  # "MAIL" | "RCPT" | "DATA" (a refused DATA: no message was taken)
    reply: SmtpReply


@dataclass(frozen=True, slots=True)
class DataReply:
    index: int  # the recipient, counting the accepted ones in RCPT order
    reply: SmtpReply


@dataclass(frozen=True, slots=True)
class Failed:
    kind: str  # "connect" | "connection lost" | "bad reply"
    reply: SmtpReply | None = None
    #: lib-smtp's texts when there is no reply: the error it logs, the one it tells users
    error: str = ""
    user_error: str = ""


ClientEvent = Ready | NeedTLS | SendMessage | CommandReply | DataReply | Failed


class _State(enum.Enum):
    GREETING = "greeting"
    HELLO = "LHLO"
    STARTTLS = "STARTTLS"
    TLS = "TLS handshake"
    XCLIENT = "XCLIENT"
    READY = "ready"
    FAILED = "failed"


class LmtpClient:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._reader = ReplyReader(enhanced=False)
        self._out = bytearray()
        self._state = _State.GREETING
        self._events: deque[ClientEvent] = deque()
        #: replies expected for transaction commands, in order: (command, count)
        self._expect: deque[tuple[str, int]] = deque()
        self.capabilities: dict[str, str] = {}
        self._xclient_sent = False
        self._xclient_pending = 0
        self._tls_done = False
        #: the message goes out as a BDAT chunk (else dot-stuffed after DATA)
        self._chunking = False
        self._stuffer = DotStuffer()
        self._data_index = 0
        self._eof = False

    @property
    def state_name(self) -> str:
        return self._state.value

    @property
    def hello_verb(self) -> str:
        return "LHLO" if self.settings.lmtp else "EHLO"

    # ------------------------------------------------------------------ I/O surface
    def receive_data(self, data: bytes | bytearray) -> None:
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> ClientEvent | _NeedData:
        while not self._events:
            if self._state in (_State.FAILED, _State.TLS):
                return NEED_DATA
            try:
                reply = self._reader.next_reply()
            except ReplyError as exc:
                self._fail("bad reply", error=f"Invalid command reply: {exc}")
                continue
            if reply is None:
                if self._eof:
                    self._fail("connection lost", error="Connection lost: Remote disconnected",
                               user_error="Lost connection to remote server: Remote closed connection unexpectedly")
                    continue
                return NEED_DATA
            self._handle(reply)
        return self._events.popleft()

    def tls_started(self) -> None:
        if self._state is not _State.TLS:
            raise RuntimeError("no STARTTLS is pending")
        self._tls_done = True
        self._reader.clear()
        self._hello()

    # ------------------------------------------------------------------ the transaction
    def mail(self, sender: str, params: tuple[str, ...] = ()) -> None:
        self._command(f"MAIL FROM:{sender}", params, "MAIL", 1)

    def rcpt(self, path: str, params: tuple[str, ...] = ()) -> None:
        self._command(f"RCPT TO:{path}", params, "RCPT", 1)

    def data(self, size: int, recipients: int) -> None:
        """Start a message of ``size`` octets for the ``recipients`` accepted recipients;
        its octets follow with ``message_data()`` after ``SendMessage``."""
        if self._state is not _State.READY:
            raise RuntimeError("DATA before the backend is ready")
        self._data_index = 0
        self._chunking = "CHUNKING" in self.capabilities
        if self._chunking:
            self._out += f"BDAT {size} LAST\r\n".encode()
            self._expect.append(("DATA-END", recipients))
            self._events.append(SendMessage())
        else:
            self._stuffer = DotStuffer()
            self._out += b"DATA\r\n"
            self._expect.append(("DATA", recipients))

    def message_data(self, data: bytes) -> None:
        self._out += data if self._chunking else self._stuffer.feed(data)

    def message_end(self) -> None:
        if not self._chunking:
            self._out += self._stuffer.end()

    def quit(self) -> None:
        self._out += b"QUIT\r\n"

    def _command(self, line: str, params: tuple[str, ...], command: str, count: int) -> None:
        if self._state is not _State.READY:
            raise RuntimeError(f"{command} before the backend is ready")
        self._out += (" ".join((line, *params)) + "\r\n").encode("utf-8")
        self._expect.append((command, count))

    # ------------------------------------------------------------------ replies
    def _fail(self, kind: str, reply: SmtpReply | None = None, *, error: str = "", user_error: str = "") -> None:
        self._state = _State.FAILED
        self._events.append(Failed(kind, reply, error, user_error or error))

    def _hello(self) -> None:
        self._state = _State.HELLO
        self._out += f"{self.hello_verb} {self.settings.my_hostname}\r\n".encode()

    def _handle(self, reply: SmtpReply) -> None:
        state = self._state
        if state is _State.GREETING:
            if reply.code != 220:
                self._fail("connect", reply)
                return
            self._hello()
        elif state is _State.HELLO:
            self._handle_hello(reply)
        elif state is _State.STARTTLS:
            if reply.code != 220:
                self._fail("connect", reply)
                return
            self._state = _State.TLS
            self._events.append(NeedTLS())
        elif state is _State.XCLIENT:
            self._xclient_pending -= 1
            if not reply.success and reply.code != 220:
                self._fail("connect", reply)
                return
            if self._xclient_pending == 0:
                # the backend greets again after XCLIENT: a fresh LHLO
                self._hello()
        elif state is _State.READY:
            self._handle_transaction(reply)

    def _handle_hello(self, reply: SmtpReply) -> None:
        if reply.code != 250:
            self._fail("connect", reply)
            return
        self.capabilities = {}
        for line in reply.lines[1:]:
            keyword, _, args = line.partition(" ")
            self.capabilities[keyword.upper()] = args
        self._reader.enhanced = "ENHANCEDSTATUSCODES" in self.capabilities
        if self.settings.starttls and not self._tls_done:
            if "STARTTLS" not in self.capabilities:
                self._fail("connect", error="Requested STARTTLS, but server doesn't support it",
                           user_error="STARTTLS not supported")
                return
            self._state = _State.STARTTLS
            self._out += b"STARTTLS\r\n"
            return
        if self.settings.trusted and not self._xclient_sent and "XCLIENT" in self.capabilities:
            commands = self._xclient_commands(self.capabilities["XCLIENT"].upper().split())
            self._xclient_sent = True
            if commands:
                self._state = _State.XCLIENT
                self._xclient_pending = len(commands)
                for command in commands:
                    self._out += command.encode("utf-8") + b"\r\n"
                return
        self._state = _State.READY
        self._events.append(Ready())

    def _xclient_commands(self, offered: list[str]) -> list[str]:
        x = self.settings.xclient
        wanted = [
            ("HELO", x.helo),
            ("PROTO", x.proto),
            ("LOGIN", x.login),
            ("SESSION", x.session),
            ("TTL", str(x.ttl)),
            ("TIMEOUT", str(x.timeout) if x.timeout else ""),
            ("PORT", str(x.port) if x.port else ""),
            ("ADDR", x.addr),
        ]
        commands: list[str] = []
        line = "XCLIENT"
        for name, value in wanted:
            if not value or name not in offered:
                continue
            attribute = f" {name}={xtext_encode(value)}"
            if line != "XCLIENT" and len(line) + len(attribute) > XCLIENT_LINE_LIMIT:
                commands.append(line)
                line = "XCLIENT"
            line += attribute
        if line != "XCLIENT":
            commands.append(line)
        return commands

    def _handle_transaction(self, reply: SmtpReply) -> None:
        if not self._expect:
            self._fail("bad reply", error=f"Unexpected reply: {reply.log()}", user_error="Got unexpected reply")
            return
        command, count = self._expect[0]
        if command == "DATA":
            self._expect.popleft()
            if reply.code == 354:
                self._expect.appendleft(("DATA-END", count))
                self._events.append(SendMessage())
            else:
                self._events.append(CommandReply("DATA", reply))
            return
        if command == "DATA-END":
            if self.settings.lmtp:
                self._events.append(DataReply(self._data_index, reply))
                self._data_index += 1
                if self._data_index >= count:
                    self._expect.popleft()
            else:  # SMTP: one reply for every recipient
                self._expect.popleft()
                for index in range(count):
                    self._events.append(DataReply(index, reply))
            return
        self._expect.popleft()
        self._events.append(CommandReply(command, reply))


class DotStuffer:
    """RFC 5321 4.5.2 for a message given in pieces, as Dovecot's ostream-dot writes it: a
    dot that opens a line (after LF or CRLF) is doubled, and the message ends with
    CRLF.CRLF (a CRLF is added when its last line has no line end)."""

    def __init__(self) -> None:
        #: the last octet sent; the start of the message counts as the start of a line
        self._last = b"\n"

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        # the last octet cannot be a whole LF-dot, so what is doubled is in ``data``
        out = (self._last + data).replace(b"\n.", b"\n..")[1:]
        self._last = data[-1:]
        return out

    def end(self) -> bytes:
        return b".\r\n" if self._last == b"\n" else b"\r\n.\r\n"
