"""The pre-login ID answer and the ID log line (Dovecot's ``imap-id.c``).

``imap_id_send`` is parsed as IMAP arguments, key/value pairs whose value ``*``
stands for the built-in one (``imap_id_reply_generate()``); ``imap_id_log``
names the client's fields that go into the ``ID sent:`` log line, ``*`` all of
them (``imap_id_log_reply_append()``), each value made safe for one log line.
"""

from __future__ import annotations

import os
from typing import Final

from proxyd import __version__
from proxyd.log import sanitize
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.imap.grammar import (
    ID_KEY_MAX_LEN,
    ImapParseError,
    ImapParser,
    quote_nstring,
    quote_quoted,
)

#: how much of a client's ID value the log line shows (``str_sanitize(value, 80)``)
ID_LOG_VALUE_MAX_LEN: Final = 80

#: the values ``*`` stands for (``imap_id_get_default()``) of the Dovecot we stand in for
_BUILT_IN: Final = {
    # the name clients already see from a Dovecot front end (Dovecot's default reply)
    "name": "Dovecot",
    # proxyd's own: a Dovecot version or Dovecot's support addresses would send users'
    # questions about this proxy to the Dovecot project (support-url/-email are NIL)
    "version": __version__,
}


def _built_in(key: str) -> str | None:
    """The built-in value of ``key`` (case-insensitive); None (``NIL``) for a key without one."""
    lowered = key.lower()
    if lowered in _BUILT_IN:
        return _BUILT_IN[lowered]
    if lowered in ("os", "os-version"):
        uname = os.uname()
        return uname.sysname if lowered == "os" else uname.release
    return None  # "revision": proxyd has no Dovecot git revision to name


def id_reply(setting: str) -> str:
    """The ``* ID`` argument for ``imap_id_send``: ``(...)`` or ``NIL`` (``imap_id_reply_generate()``)."""
    data = setting.encode("utf-8") + b"\r\n"
    buffer = InputBuffer(len(data))
    buffer.fill_from(bytearray(data))
    try:
        args = ImapParser(buffer, lambda: None, max_line_size=len(data) + 1).read_args()
    except ImapParseError:
        return "NIL"
    if not args:
        return "NIL"
    parts: list[bytes] = []
    index = 0
    while index < len(args):
        raw_key = args[index].astring()
        if raw_key is None:
            index += 2  # broken input: a list where a key belongs, skipped with its value
            continue
        key = raw_key.decode("utf-8", "replace")
        if index + 1 >= len(args):
            parts.append(quote_quoted(raw_key) + b" NIL")
            break
        raw_value = args[index + 1].astring()
        value: str | bytes | None = raw_value
        if raw_value == b"*":
            value = _built_in(key)
        parts.append(quote_quoted(raw_key) + b" " + quote_nstring(value))
        index += 2
    if not parts:
        return "NIL"
    return "(" + b" ".join(parts).decode("utf-8", "surrogateescape") + ")"


class IdLog:
    """The ``ID sent:`` log text built from a client's pairs as they are read."""

    def __init__(self, setting: str) -> None:
        self._keys: frozenset[bytes] | None = (
            None if setting == "*" else frozenset(key.lower().encode() for key in setting.split())
        )
        self._parts: list[str] = []

    def add(self, key: bytes, value: bytes | None) -> None:
        """Log ``key=value`` if ``imap_id_log`` names ``key`` (any case) or is ``*``."""
        if self._keys is not None and key.lower() not in self._keys:
            return
        shown = "NIL" if value is None else sanitize(value, ID_LOG_VALUE_MAX_LEN)
        self._parts.append(f"{sanitize(key, ID_KEY_MAX_LEN)}={shown}")

    def message(self) -> str:
        """``ID sent: k=v, k=v`` (Dovecot logs the line even when no named field came)."""
        return "ID sent: " + ", ".join(self._parts)
