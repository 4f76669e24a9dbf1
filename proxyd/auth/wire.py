"""The auth socket's encoding (sans-IO): one JSON array per line, typed by ``protocol.py``.

``msgspec`` encodes the records and decodes a line straight into them, checking
every field's type as it goes (in C: a login costs the auth process one decode and
one encode of a few hundred bytes, where the dicts of ``json`` and the code that
turned them into records were a good part of its work).  SASL data travels
base64-encoded, as on Dovecot's auth-client protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from proxyd.auth.protocol import (
    Answer,
    BadCall,
    Call,
    SaslContinue,
    SentCall,
)
from proxyd.ipc.channel import ControlError

#: the longest line either side accepts (a SASL response is limited far below this)
MAX_LINE: Final = 1 << 20

def _other_type(value: object) -> object:
    """A field of another mapping type (``Mapping`` annotations allow any) goes as a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot send a {type(value).__name__} to or from the auth process")


_encoder = msgspec.json.Encoder(enc_hook=_other_type)
_call_decoder: msgspec.json.Decoder[SentCall] = msgspec.json.Decoder(SentCall)
_answer_decoder: msgspec.json.Decoder[Answer] = msgspec.json.Decoder(Answer)
_NO_CALL: Final = (msgspec.DecodeError, RecursionError)


def encode(message: SentCall | Answer) -> bytes:
    """One message as one line."""
    return _encoder.encode(message) + b"\n"


def encode_into(message: SentCall | Answer, buffer: bytearray) -> None:
    """Append one message's line to ``buffer`` (answers written together in one send)."""
    _encoder.encode_into(message, buffer, -1)
    buffer += b"\n"


def read_call(line: bytes) -> Call:
    """The call a line holds; a line with an id whose body cannot be read is a ``BadCall``
    (a continuation whose response is not base64: a ``SaslContinue`` without one).

    Raises ``ControlError`` for a line that is no call at all (no answer could reach
    its sender).
    """
    try:
        return _call_decoder.decode(line)
    except _NO_CALL as exc:
        error = type(exc).__name__
    try:
        data = msgspec.json.decode(line)
    except _NO_CALL:
        raise ControlError("invalid auth call") from None
    if (
        not isinstance(data, list)
        or len(data) < 2
        or not isinstance(data[1], int)
        or isinstance(data[1], bool)
    ):
        raise ControlError("auth call without an id")
    if data[0] == "cont":
        return SaslContinue(data[1], None)
    return BadCall(data[1], error)


def read_answer(line: bytes) -> Answer:
    """The answer a line holds; raises ``ControlError``."""
    try:
        return _answer_decoder.decode(line)
    except _NO_CALL as exc:
        raise ControlError(f"invalid auth answer: {type(exc).__name__}") from None


class LineReader:
    """Bytes in, complete lines out (without their newline); raises ``ControlError`` for a
    line longer than ``max_line``."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buffer = b""
        self._max = max_line

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = rest = lines.pop()
        if len(rest) > self._max:
            raise ControlError("auth message too long")
        return lines
