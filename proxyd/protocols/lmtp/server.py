"""The MTA-facing LMTP engine (RFC 2033), sans-IO: Dovecot's lib-smtp server in LMTP mode.

Theory of operation
-------------------
The driver (``proxyd.lmtp.session``) feeds the MTA's bytes with
``receive_data()`` (``b""`` is EOF), pulls events with ``next_event()`` until
``NEED_DATA`` and writes out ``data_to_send()`` after every call.  The engine
answers by itself everything that needs no passdb and no backend (LHLO, MAIL,
RSET, NOOP, VRFY, QUIT, XCLIENT, sequencing and syntax errors) and surfaces:

* ``RcptTo``: the driver looks the recipient up, talks to its backend and
  answers with ``rcpt_reply()`` before asking for the next event;
* ``MessageChunk``: a piece of the message, in order (DATA's lines with the
  dots unstuffed, or BDAT's octets as sent); the driver stores it, so the
  engine never holds more of a message than one read;
* ``MessageEnd``: the message is complete (DATA's final dot, or the octets of
  ``BDAT ... LAST``); the driver delivers it and answers with
  ``data_replies()``, one reply per accepted recipient in RCPT order (LMTP's
  rule);
* ``TransactionReset``: the transaction the driver built (backend
  connections, recipients) is gone (RSET, LHLO, XCLIENT, QUIT, EOF);
* ``XclientApplied``: a trusted peer said who the MTA really is (``proxy_data``);
* ``StartTLS``: the 220 is queued; the driver flushes it, wraps the stream and
  calls ``tls_started()``; bytes pipelined after STARTTLS are dropped, never
  executed in the clear-text session;
* ``Closed``: QUIT (already answered) or EOF; ``reason`` is Dovecot's word.

Commands are taken one at a time: while an ``RcptTo`` or ``MessageEnd`` waits
for its answer further pipelined input stays buffered, so replies go out in
command order as PIPELINING requires.

CHUNKING (RFC 3030) is lib-smtp's: every ``BDAT`` counts as a chunk, a chunk
that failed makes the next ones fail until RSET, the octets of a refused
chunk are read and thrown away when its size was readable, and ``BDAT n
LAST`` without any accepted recipient gets no reply at all (RFC 2033 4.3).
Like Dovecot's LMTP, no message size limit applies.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final, cast

from proxyd.protocols.events import NEED_DATA, _NeedData
from proxyd.protocols.lmtp import replies as r
from proxyd.protocols.lmtp.address import Address, AddressError, parse_path, xtext_decode
from proxyd.protocols.xclient import tab_unescape

#: the longest command line taken (Dovecot's SMTP_SERVER_DEFAULT_MAX_COMMAND_LINE is 4 KiB)
MAX_LINE: Final = 4096
#: the end of DATA: a line of a lone dot ([CR]LF . [CR]LF)
_END_OF_DATA: Final = re.compile(rb"\n\.\r?\n")
#: lib-smtp's uoff_t: a BDAT size, or the sum of a message's chunks, beyond it is refused
MAX_DATA_SIZE: Final = 2**64 - 1
#: Dovecot's LMTP_RCPT_FORWARD_CAPABILITY / _PARAMETER: a trusted peer's forward_* fields
RCPT_FORWARD: Final = "XRCPTFORWARD"
#: the XCLIENT attributes a trusted peer may send (Dovecot's list)
XCLIENT_ATTRIBUTES: Final = ("ADDR", "PORT", "PROTO", "HELO", "LOGIN", "SESSION", "TTL", "TIMEOUT")


class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """A recipient to route; ``params`` are its RCPT parameters as received (``ORCPT=...``),
    ``forward`` what a trusted peer sent in ``XRCPTFORWARD=`` (for the passdb lookup)."""

    address: Address
    params: tuple[str, ...]
    forward: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MessageChunk(Event):
    """The next piece of the message: line ends as sent, DATA's dots unstuffed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageEnd(Event):
    """The message is complete: deliver it and answer with ``data_replies()``."""


@dataclass(frozen=True, slots=True)
class TransactionReset(Event):
    """The mail transaction is gone."""


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    pass


@dataclass(frozen=True, slots=True)
class XclientApplied(Event):
    """A trusted peer's XCLIENT was taken: ``proxy_data`` now names the real MTA."""


@dataclass(frozen=True, slots=True)
class Closed(Event):
    reason: str


#: what the driver gets from ``next_event()``
LmtpEvent = RcptTo | MessageChunk | MessageEnd | TransactionReset | StartTLS | XclientApplied | Closed


@dataclass(slots=True)
class ProxyData:
    """What a trusted peer told us with XCLIENT (Dovecot's ``struct smtp_proxy_data``)."""

    addr: str = ""
    port: int = 0
    helo: str = ""
    login: str = ""
    session: str = ""
    proto: str = ""
    #: TTL + 1; 0 when the peer sent no TTL
    ttl_plus_1: int = 0
    timeout: int = 0


class State(enum.Enum):
    READY = "READY"  # no transaction
    MAIL = "MAIL FROM"  # a transaction is open
    RCPT_WAIT = "RCPT TO"  # an RcptTo is out, waiting for rcpt_reply()
    DATA = "DATA"  # reading the message up to its final dot
    CHUNK = "BDAT"  # reading a BDAT chunk's octets
    DATA_WAIT = "DATA reply"  # a MessageEnd is out, waiting for data_replies()
    TLS_WAIT = "STARTTLS"
    CLOSED = "CLOSED"


@dataclass(slots=True)
class _Transaction:
    sender: Address
    mail_params: tuple[str, ...]
    accepted: int = 0


class LmtpServer:
    """One MTA connection's LMTP state."""

    def __init__(
        self,
        *,
        hostname: str,
        greeting: str,
        trusted: bool,
        tls_available: bool = False,
        tls_active: bool = False,
        workarounds: frozenset[str] = frozenset(),
    ) -> None:
        self.hostname = hostname
        self.greeting = greeting
        self.trusted = trusted
        self.tls_available = tls_available
        self.tls_active = tls_active
        #: lmtp_client_workarounds: "whitespace-before-path", "mailbox-for-path"
        self.workarounds = workarounds
        self.state = State.READY
        #: Dovecot's name for where the session is (for "Disconnect from ...: (state=...)")
        self.dovecot_state = "GREETING"
        #: the LHLO domain ("" before LHLO)
        self.helo = ""
        self.proxy_data = ProxyData()
        self.transaction: _Transaction | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._events: list[LmtpEvent] = []
        self._skip_line = False
        #: DATA: how many bytes of the buffer are the LF put in front of the message
        #: (so that a dot on its first line is unstuffed like any other)
        self._strip = 0
        #: CHUNKING: BDAT commands in this transaction, whether one failed, octets announced
        self._data_chunks = 0
        self._data_failed = False
        self._data_size = 0
        #: the BDAT being read: octets still to come, its size, LAST, kept (False: thrown away)
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_keep = False
        self._out += r.format_reply(220, None, f"{hostname} {greeting}")

    # ------------------------------------------------------------------ the h11-style surface
    def receive_data(self, data: bytes | bytearray) -> None:
        if data:
            if self.state is not State.CLOSED:
                self._in += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> LmtpEvent | _NeedData:
        while not self._events:
            event: Event | None = None
            if self.state is State.DATA:
                event = self._read_message()
            elif self.state is State.CHUNK:
                event = self._read_chunk()
            elif self.state in (State.READY, State.MAIL):
                event = self._read_command()
            if event is None:
                if not self._eof or self.state is State.CLOSED or self._waiting():
                    return NEED_DATA
                event = self._close("Connection closed")
            if not isinstance(event, _Nothing):
                self._events.append(cast("LmtpEvent", event))
        return self._events.pop(0)

    def _waiting(self) -> bool:
        return self.state in (State.RCPT_WAIT, State.DATA_WAIT, State.TLS_WAIT)

    # ------------------------------------------------------------------ the driver's answers
    def rcpt_reply(self, reply: bytes, *, accepted: bool) -> None:
        """The reply to the pending ``RcptTo``; ``accepted`` counts it for DATA."""
        if self.state is not State.RCPT_WAIT or self.transaction is None:
            raise RuntimeError("no RCPT is waiting for a reply")
        self._out += reply
        if accepted:
            self.transaction.accepted += 1
        self.state = State.MAIL

    def data_replies(self, replies: list[bytes]) -> None:
        """One reply per accepted recipient, in RCPT order; ends the transaction."""
        if self.state is not State.DATA_WAIT or self.transaction is None:
            raise RuntimeError("no message is waiting for replies")
        if len(replies) != self.transaction.accepted:
            raise RuntimeError("LMTP needs exactly one DATA reply per accepted recipient")
        for reply in replies:
            self._out += reply
        self.transaction = None
        self._reset_chunking()
        self.state = State.READY

    def tls_started(self) -> None:
        if self.state is not State.TLS_WAIT:
            raise RuntimeError("no STARTTLS is pending")
        self.tls_active = True
        self.helo = ""
        self.state = State.READY

    # ------------------------------------------------------------------ parsing
    def _track_state(self) -> None:
        if self.state is State.CLOSED:
            return
        if self.transaction is not None:
            self.dovecot_state = "RCPT TO" if self.transaction.accepted else "MAIL FROM"
            if self.state in (State.DATA, State.CHUNK, State.DATA_WAIT):
                self.dovecot_state = "DATA"
        elif self.helo:
            self.dovecot_state = "READY"

    def _reply(self, reply: tuple[int, str, str]) -> None:
        self._out += r.format_reply(*reply)

    def _close(self, reason: str) -> Event:
        self._track_state()
        if self.transaction is not None:
            self._events.append(TransactionReset())
        self.transaction = None
        self._reset_chunking()
        self.state = State.CLOSED
        self._in.clear()
        self._events.append(Closed(reason))
        return _NOTHING

    def _read_command(self) -> Event | None:
        end = self._in.find(b"\n")
        if end < 0:
            if len(self._in) > MAX_LINE:
                # the rest of this line is thrown away when its end comes
                self._in.clear()
                self._skip_line = True
                self._reply(r.LINE_TOO_LONG)
                return _NOTHING
            return None
        raw = bytes(self._in[:end])
        del self._in[: end + 1]
        if self._skip_line:
            self._skip_line = False
            return _NOTHING
        if len(raw) > MAX_LINE:
            self._reply(r.LINE_TOO_LONG)
            return _NOTHING
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        verb, _, args = line.partition(" ")
        handler = _COMMANDS.get(verb.upper())
        if handler is None:
            self._reply(r.UNKNOWN_COMMAND)
            return _NOTHING
        return handler(self, args)

    def _read_message(self) -> Event | None:
        # Dovecot's istream-dot: lines may end in LF as well as CRLF; a dot that opens a
        # line is dropped, and a line of a lone dot ends the message
        data = self._in
        end = _END_OF_DATA.search(data)
        if end is not None:
            # the message ends with the line end before the dot line
            cut, consumed = end.start() + 1, end.end()
        else:
            # hand out all but what could still be the start of the end marker, and never
            # cut an LF from the dot after it (the next piece must see the pair)
            cut = len(data) - 3
            if cut <= self._strip:
                return None
            if data[cut - 1] == 0x0A:
                cut -= 1
            if cut <= self._strip:
                return None
            consumed = cut
        piece = bytes(data[:cut]).replace(b"\n.", b"\n")[self._strip :]
        del data[:consumed]
        self._strip = 0
        if piece:
            self._events.append(MessageChunk(piece))
        if end is not None:
            self.state = State.DATA_WAIT
            self._events.append(MessageEnd())
        return _NOTHING

    def _read_chunk(self) -> Event | None:
        if self._chunk_left and not self._in:
            return None
        take = min(self._chunk_left, len(self._in))
        if take:
            piece = bytes(self._in[:take])
            del self._in[:take]
            self._chunk_left -= take
            if self._chunk_keep:
                self._events.append(MessageChunk(piece))
        if self._chunk_left == 0:
            self._chunk_done()
        return _NOTHING

    def _chunk_done(self) -> None:
        """All of a BDAT's octets are read."""
        if not self._chunk_keep:
            self.state = State.READY if self.transaction is None else State.MAIL
        elif self._chunk_last:
            self.state = State.DATA_WAIT
            self._events.append(MessageEnd())
        else:
            self.state = State.MAIL
            self._reply((250, "2.0.0", f"Added {self._chunk_size} octets"))

    def _reset_chunking(self) -> None:
        self._data_chunks = 0
        self._data_failed = False
        self._data_size = 0

    def _data_refusal(self, *, size: int = 0, last: bool = True) -> tuple[int, str, str] | _Nothing | None:
        """lib-smtp's check before DATA or a BDAT chunk: the reply that refuses it, None if it
        may go on, or _NOTHING for a ``BDAT LAST`` that LMTP answers with no reply at all."""
        if self._data_chunks > 0 and self._data_failed:
            return r.PREVIOUS_CHUNK_FAILED
        if self.transaction is None:
            return r.MAIL_NEEDED_FIRST
        if self.transaction.accepted == 0:
            if size > 0 and last:
                return _NOTHING
            return r.NO_VALID_RECIPIENTS
        return None

    # ------------------------------------------------------------------ commands
    def _cmd_lhlo(self, args: str) -> Event:
        domain = args.strip()
        if not domain:
            self._out += b"501 Missing hostname\r\n"
            return _NOTHING
        self.helo = domain
        # lib-smtp lists them in alphabetical order
        caps = [self.hostname, "8BITMIME", "CHUNKING", "ENHANCEDSTATUSCODES", "PIPELINING"]
        if self.tls_available and not self.tls_active:
            caps.append("STARTTLS")
        if self.trusted:
            caps.append("XCLIENT " + " ".join(XCLIENT_ATTRIBUTES))
            caps.append(RCPT_FORWARD)
        self._out += r.format_reply(250, None, "\n".join(caps))
        return self._reset_transaction()

    def _reset_transaction(self) -> Event:
        self._reset_chunking()
        if self.transaction is None:
            return _NOTHING
        self.transaction = None
        self.state = State.READY
        return TransactionReset()

    def _cmd_mail(self, args: str) -> Event:
        if self.transaction is not None:
            self._reply(r.MAIL_ALREADY_GIVEN)
            return _NOTHING
        if args[:5].upper() != "FROM:":
            self._reply(r.INVALID_PARAMETERS)
            return _NOTHING
        rest = args[5:]
        if rest[:1] in (" ", "\t"):
            if "whitespace-before-path" not in self.workarounds:
                self._reply((501, "5.5.4", "Invalid FROM: Unexpected whitespace before path"))
                return _NOTHING
            rest = rest.lstrip(" \t")
        try:
            sender, rest = parse_path(rest, allow_null=True, brackets_optional="mailbox-for-path" in self.workarounds)
        except AddressError as exc:
            self._reply((501, "5.5.4", f"Invalid FROM: {exc}"))
            return _NOTHING
        params = self._params(rest, "FROM", _check_mail_param)
        if params is None:
            return _NOTHING
        self.transaction = _Transaction(sender, params)
        self.state = State.MAIL
        self._reply((250, "2.1.0", r.OK))
        return _NOTHING

    def _params(self, rest: str, what: str, check: Callable[[str], str | None]) -> tuple[str, ...] | None:
        if rest and not rest.startswith(" "):
            self._reply((501, "5.5.4", f"Invalid {what}: Invalid character in path"))
            return None
        params = tuple(rest[1:].split(" ")) if rest else ()
        seen: set[str] = set()
        for param in params:
            keyword = param.partition("=")[0].upper()
            error = "Parameter is empty" if not param else check(param)
            if error is None and keyword in seen:
                error = f"Duplicate {keyword}= parameter"
            if error is not None:
                if error == r.UNSUPPORTED_PARAMETERS[2]:
                    self._reply(r.UNSUPPORTED_PARAMETERS)
                else:
                    self._reply((501, "5.5.4", error))
                return None
            seen.add(keyword)
        return params

    def _cmd_rcpt(self, args: str) -> Event:
        if self.transaction is None:
            self._reply(r.MAIL_NEEDED_FIRST)
            return _NOTHING
        if args[:3].upper() != "TO:":
            self._reply(r.INVALID_PARAMETERS)
            return _NOTHING
        rest = args[3:]
        if rest[:1] in (" ", "\t"):
            if "whitespace-before-path" not in self.workarounds:
                self._reply((501, "5.5.4", "Invalid TO: Unexpected whitespace before path"))
                return _NOTHING
            rest = rest.lstrip(" \t")
        try:
            address, rest = parse_path(rest, brackets_optional="mailbox-for-path" in self.workarounds)
        except AddressError as exc:
            self._reply((501, "5.5.4", f"Invalid TO: {exc}"))
            return _NOTHING
        params = self._params(rest, "TO", _check_rcpt_param)
        if params is None:
            return _NOTHING
        forward: tuple[tuple[str, str], ...] = ()
        for param in params:
            keyword, _, value = param.partition("=")
            if keyword.upper() != RCPT_FORWARD:
                continue
            # Dovecot's cmd_rcpt_handle_forward_fields(): decoded, dropped from the
            # parameters, and taken only from a peer trusted by its real address.
            # Not `exc`: compiled by mypyc, a name keeps the type of its first `except`.
            try:
                fields_text = xtext_decode(value)
            except ValueError as bad:
                self._reply((501, "5.5.4", f"Invalid {RCPT_FORWARD}= parameter: {bad}"))
                return _NOTHING
            if not self.trusted:
                self._reply((550, "5.7.14", f"Unacceptable {RCPT_FORWARD}= parameter: You are not from trusted IP"))
                return _NOTHING
            forward = _forward_fields(fields_text)
            params = tuple(p for p in params if p.partition("=")[0].upper() != RCPT_FORWARD)
        self.state = State.RCPT_WAIT
        return RcptTo(address, params, forward)

    def _cmd_data(self, args: str) -> Event:
        if args:
            self._reply(r.INVALID_PARAMETERS)
            return _NOTHING
        refusal = self._data_refusal()
        if isinstance(refusal, tuple):
            self._reply(refusal)
            return _NOTHING
        if self._data_chunks > 0:
            # classic DATA after BDAT chunks
            self._reply(r.BAD_SEQUENCE)
            return _NOTHING
        self._out += r.DATA_GO_AHEAD.encode() + b"\r\n"
        self.state = State.DATA
        # the LF that ended the DATA line: the first line's dot is then like any other's
        self._in[0:0] = b"\n"
        self._strip = 1
        return _NOTHING

    def _cmd_bdat(self, args: str) -> Event:
        # bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF (RFC 3030)
        self._data_chunks += 1
        argv = args.split(" ")
        if not (argv[0].isascii() and argv[0].isdigit()) or int(argv[0]) > MAX_DATA_SIZE:
            # the size is unknown: what follows is read as commands (lib-smtp does the same)
            self._reply(r.INVALID_CHUNK_SIZE)
            self._data_failed = True
            return _NOTHING
        size = int(argv[0])
        last = False
        refusal: tuple[int, str, str] | _Nothing | None = None
        if len(argv) > 2:
            refusal = r.INVALID_PARAMETERS
        elif len(argv) == 2:
            if argv[1].upper() != "LAST":
                refusal = r.INVALID_END_MARKER
            last = True
        if refusal is None:
            refusal = self._data_refusal(size=size, last=last)
        if refusal is None and self._data_size + size > MAX_DATA_SIZE:
            refusal = r.SIZE_EXCEEDED
        if isinstance(refusal, tuple):
            self._reply(refusal)
            self._data_failed = True
        if refusal is None:
            self._data_size += size
        # the chunk's octets are read either way: kept, or thrown away after a refusal
        self.state = State.CHUNK
        self._chunk_left = self._chunk_size = size
        self._chunk_last = last
        self._chunk_keep = refusal is None
        return self._read_chunk() or _NOTHING

    def _cmd_rset(self, args: str) -> Event:
        if args:
            self._reply(r.INVALID_PARAMETERS)
            return _NOTHING
        self._reply((250, "2.0.0", r.OK))
        return self._reset_transaction()

    def _cmd_noop(self, args: str) -> Event:
        self._reply((250, "2.0.0", r.OK))
        return _NOTHING

    def _cmd_vrfy(self, args: str) -> Event:
        if not args.strip():
            self._reply(r.INVALID_PARAMETERS)
        else:
            self._reply(r.TRY_RCPT)
        return _NOTHING

    def _cmd_quit(self, args: str) -> Event:
        if args:
            self._reply(r.INVALID_PARAMETERS)
            return _NOTHING
        self._reply((221, "2.0.0", r.BYE))
        return self._close("Logged out")

    def _cmd_starttls(self, args: str) -> Event:
        if args:
            self._reply(r.INVALID_PARAMETERS)
        elif self.tls_active:
            self._reply(r.TLS_ACTIVE)
        elif not self.tls_available:
            self._reply(r.TLS_NOT_ENABLED)
        else:
            self._reply(r.TLS_BEGIN)
            if isinstance(event := self._reset_transaction(), TransactionReset):
                self._events.append(event)
            self.state = State.TLS_WAIT
            self._in.clear()  # nothing pipelined after STARTTLS runs in the clear
            self._events.append(StartTLS())
        return _NOTHING

    def _cmd_xclient(self, args: str) -> Event:
        if self.transaction is not None:
            self._reply(r.XCLIENT_IN_TRANSACTION)
            return _NOTHING
        if not self.trusted:
            self._reply(r.XCLIENT_NOT_TRUSTED)
            return _NOTHING
        data = ProxyData(**{f.name: getattr(self.proxy_data, f.name) for f in fields(ProxyData)})
        for param in args.split(" "):
            keyword, sep, raw = param.partition("=")
            keyword = keyword.upper()
            if not param or not keyword or not sep:
                self._reply((501, "5.5.4", "Invalid parameter: Parameter is empty" if not param
                             else "Invalid parameter: Unexpected character in parameter"))
                return _NOTHING
            try:
                value = xtext_decode(raw)
            except ValueError as exc:
                self._reply((501, "5.5.4", f"Invalid {keyword} parameter: {exc}"))
                return _NOTHING
            error = _apply_xclient(data, keyword, value)
            if error is not None:
                self._reply((501, "5.5.4", error))
                return _NOTHING
        self.proxy_data = data
        self.helo = ""
        self._out += r.format_reply(220, None, f"{self.hostname} {self.greeting}")
        return XclientApplied()


class _Nothing(Event):
    """A command fully answered by the engine."""


_NOTHING: Final = _Nothing()


def _check_mail_param(param: str) -> str | None:
    keyword, _, value = param.partition("=")
    if keyword.upper() == "BODY":
        if value.upper() not in ("7BIT", "8BITMIME"):
            return "Unsupported mail BODY type"
        return None
    return r.UNSUPPORTED_PARAMETERS[2]


def _forward_fields(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs, TAB-separated and tab-escaped (Dovecot's forward fields)."""
    pairs = []
    for item in text.split("\t"):
        key, sep, value = tab_unescape(item).partition("=")
        if key and sep:
            pairs.append((key, value))
    return tuple(pairs)


def _check_rcpt_param(param: str) -> str | None:
    keyword, _, value = param.partition("=")
    if keyword.upper() == RCPT_FORWARD:
        return None  # checked by _cmd_rcpt, which knows whether the peer is trusted
    if keyword.upper() == "ORCPT":
        addr_type, sep, addr = value.partition(";")
        if not sep or addr_type.lower() != "rfc822":
            return "Invalid addr-type for ORCPT= parameter"
        try:
            xtext_decode(addr)
        except ValueError:
            return "Invalid ORCPT= parameter: Invalid character in xtext"
        return None
    return r.UNSUPPORTED_PARAMETERS[2]


def _apply_xclient(data: ProxyData, keyword: str, value: str) -> str | None:
    unavailable = value.upper() == "[UNAVAILABLE]"
    if keyword == "ADDR":
        if unavailable:
            return None
        text = value[5:] if value.upper().startswith("IPV6:") else value
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return "Invalid ADDR parameter"
        if value.upper().startswith("IPV6:") and addr.version != 6:
            return "Invalid ADDR parameter"
        data.addr = str(addr)
    elif keyword == "PORT":
        if unavailable:
            return None
        if not value.isdigit() or not 0 < int(value) < 65536:
            return "Invalid PORT parameter"
        data.port = int(value)
    elif keyword == "PROTO":
        if value.upper() not in ("SMTP", "ESMTP", "LMTP"):
            return "Invalid PROTO parameter"
        data.proto = value.upper()
    elif keyword in ("TTL", "TIMEOUT"):
        if not value.isdigit() or int(value) >= 2**32 - 1:
            return f"Invalid {keyword} parameter"
        if keyword == "TTL":
            data.ttl_plus_1 = int(value) + 1
        else:
            data.timeout = int(value)
    elif not unavailable and keyword in ("HELO", "LOGIN", "SESSION"):
        setattr(data, keyword.lower(), value)
    return None


_COMMANDS: Final = {
    "LHLO": LmtpServer._cmd_lhlo,
    "MAIL": LmtpServer._cmd_mail,
    "RCPT": LmtpServer._cmd_rcpt,
    "DATA": LmtpServer._cmd_data,
    "BDAT": LmtpServer._cmd_bdat,
    "RSET": LmtpServer._cmd_rset,
    "NOOP": LmtpServer._cmd_noop,
    "VRFY": LmtpServer._cmd_vrfy,
    "QUIT": LmtpServer._cmd_quit,
    "STARTTLS": LmtpServer._cmd_starttls,
    "XCLIENT": LmtpServer._cmd_xclient,
}
