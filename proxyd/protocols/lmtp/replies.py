"""SMTP/LMTP replies: reading a backend's, writing our own (Dovecot's lib-smtp texts).

A reply is ``CODE[-| ]TEXT`` lines; the enhanced status code (RFC 3463,
``x.y.z``) opens the first line's text when the peer offers
ENHANCEDSTATUSCODES.  ``ReplyReader`` takes bytes and yields whole replies;
it is what both the backend engine and the tests use.  Our own replies carry
Dovecot's words, collected here so that no other module spells them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.lmtp.address import Address

#: Dovecot's LMTP_MAX_REPLY_SIZE: a backend reply longer than this is a protocol error
MAX_REPLY_SIZE: Final = 4096
_ENHANCED_RE: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |\Z)")

# -- Dovecot's texts (lib-smtp smtp-server-cmd-*.c, src/lmtp/) ---------------------------
OK: Final = "OK"
BYE: Final = "Bye"
UNKNOWN_COMMAND: Final = (500, "5.5.1", "Unknown command")
LINE_TOO_LONG: Final = (500, "5.5.2", "Line too long")
INVALID_PARAMETERS: Final = (501, "5.5.4", "Invalid parameters")
UNSUPPORTED_PARAMETERS: Final = (555, "5.5.4", "Unsupported parameters")
MAIL_ALREADY_GIVEN: Final = (503, "5.5.0", "MAIL already given")
MAIL_NEEDED_FIRST: Final = (503, "5.5.0", "MAIL needed first")
NO_VALID_RECIPIENTS: Final = (503, "5.5.0", "No valid recipients")
TRY_RCPT: Final = (252, "2.3.3", "Try RCPT instead")
SIZE_EXCEEDED: Final = (552, "5.2.3", "Message size exceeds administrative limit")
BAD_SEQUENCE: Final = (503, "5.5.0", "Bad sequence of commands")
PREVIOUS_CHUNK_FAILED: Final = (503, "5.5.0", "Previous data chunk failed, issue RSET first")
INVALID_CHUNK_SIZE: Final = (501, "5.5.4", "Invalid chunk size parameter")
INVALID_END_MARKER: Final = (501, "5.5.4", "Invalid end marker parameter")
XCLIENT_IN_TRANSACTION: Final = (503, "5.5.0", "XCLIENT not permitted during a mail transaction")
XCLIENT_NOT_TRUSTED: Final = (550, "5.7.14", "You are not from trusted IP")
TLS_BEGIN: Final = (220, "2.0.0", "Begin TLS negotiation now.")
TLS_ACTIVE: Final = (502, "5.5.1", "TLS is already active.")
TLS_NOT_ENABLED: Final = (502, "5.5.1", "TLS support is not enabled.")
TEMP_LOOKUP_FAILURE: Final = "Temporary user lookup failure"
DATA_GO_AHEAD: Final = "354 OK"


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One reply: the status code, the enhanced code ("" when none) and the text lines."""

    code: int
    enhanced: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def log(self) -> str:
        """Dovecot's ``smtp_reply_log()``: code, enhanced code and the lines joined."""
        head = f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)
        return f"{head} {self.text}" if self.text else head


class ReplyError(ValueError):
    """A reply that is not SMTP (bad code, mixed codes, too long)."""


class ReplyReader:
    """Collects bytes from a peer and cuts them into replies."""

    def __init__(self, *, enhanced: bool = True, max_size: int = MAX_REPLY_SIZE) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code = 0
        self._size = 0
        self.max_size = max_size
        #: read an enhanced code at the start of the text (the peer offered ENHANCEDSTATUSCODES)
        self.enhanced = enhanced

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def pending(self) -> bytes:
        """Unparsed bytes (what follows the last whole reply, e.g. after a STARTTLS 220)."""
        return bytes(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()

    def next_reply(self) -> SmtpReply | None:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) + self._size > self.max_size:
                    raise ReplyError("Reply is too long")
                return None
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            self._size += len(raw)
            if self._size > self.max_size:
                raise ReplyError("Reply is too long")
            line = raw.decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[0] not in "2345":
                raise ReplyError(f"Invalid status code in reply: {line[:40]!r}")
            code = int(line[:3])
            if self._lines and code != self._code:
                raise ReplyError("Inconsistent status codes in reply")
            sep = line[3:4]
            if sep not in ("", " ", "-"):
                raise ReplyError(f"Invalid reply line: {line[:40]!r}")
            self._code = code
            self._lines.append(line[4:])
            if sep == "-":
                continue
            lines, self._lines, self._size = self._lines, [], 0
            enhanced = ""
            match = _ENHANCED_RE.match(lines[0]) if self.enhanced else None
            if match is not None and int(match.group(1)) == code // 100:
                enhanced = lines[0][: match.end()].strip()
                lines[0] = lines[0][match.end() :]
            return SmtpReply(code, enhanced, tuple(lines))


def format_reply(code: int, enhanced: str | None, text: str) -> bytes:
    """One reply line (a multi-line text is split over ``CODE-`` lines)."""
    lines = text.split("\n") if text else [""]
    out = []
    for i, line in enumerate(lines):
        sep = " " if i == len(lines) - 1 else "-"
        body = f"{enhanced} {line}" if enhanced else line
        out.append(f"{code}{sep}{body}" if body else f"{code}{sep}".rstrip())
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def recipient_reply(address: Address, code: int, enhanced: str, text: str) -> bytes:
    """A reply about one recipient: failures name it first, as ``smtp_server_recipient_reply()``."""
    if 200 <= code < 300:
        return format_reply(code, enhanced, text)
    return format_reply(code, enhanced, f"<{address.encode()}> {text}")


def forwarded_reply(address: Address, reply: SmtpReply, *, rcpt: bool, default_enhanced: str) -> bytes:
    """A backend's reply passed on for one recipient (``smtp_server_recipient_reply_forward()``).

    The path the backend named (it may be the rewritten ``destuser`` address) is
    replaced by the MTA's; a failure, or any reply after DATA, that names no path
    gets the MTA's path put in front.  A missing enhanced code becomes
    ``default_enhanced`` (``x.0.0``, or ``2.1.0`` for an accepted RCPT).
    """
    enhanced = reply.enhanced or default_enhanced
    lines = list(reply.lines) or [""]
    first = lines[0]
    if first.startswith("<") and (end := first.find(">")) > 0:
        lines[0] = f"<{address.encode()}>{first[end + 1:]}"
    elif not rcpt or not reply.success:
        lines[0] = f"<{address.encode()}> {first}" if first else f"<{address.encode()}>"
    return format_reply(reply.code, enhanced, "\n".join(lines))
