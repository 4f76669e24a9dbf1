"""SMTP paths and parameters as Dovecot's lib-smtp reads them (``smtp-address.c``, ``smtp-params.c``).

A path is ``<local-part@domain>``; in LMTP the domain may be missing
(``rcpt_domain_optional``) and ``MAIL FROM:<>`` is the null sender.  The
errors are Dovecot's texts, which the server engine puts after ``Invalid
FROM:`` / ``Invalid TO:``.  Only the ``xtext`` of parameters (RFC 3461) is
decoded here; which parameters a command accepts is the engine's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: RFC 5321 atext, the characters of a dot-string atom
_ATEXT: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_DOMAIN_RE: Final = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\Z")
_LITERAL_RE: Final = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")


class AddressError(ValueError):
    """A path that does not parse; ``str()`` is Dovecot's text."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: ``localpart`` (unquoted) and ``domain`` (None when absent)."""

    localpart: str
    domain: str | None = None

    @property
    def is_null(self) -> bool:
        return not self.localpart and self.domain is None

    def encode(self) -> str:
        """The address as it goes between ``<`` and ``>`` (quoting the local part when needed)."""
        local = self.localpart
        if local and not _is_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return local if self.domain is None else f"{local}@{self.domain}"

    def path(self) -> str:
        return f"<{self.encode()}>"

    def with_localpart(self, localpart: str) -> Address:
        return Address(localpart, self.domain)


def _is_dot_string(text: str) -> bool:
    return all(part and all(c in _ATEXT for c in part) for part in text.split("."))


def parse_path(text: str, *, allow_null: bool = False, brackets_optional: bool = False) -> tuple[Address, str]:
    """Parse ``<...>`` at the start of ``text``; return the address and what follows it.

    ``brackets_optional`` takes a bare mailbox too (the ``mailbox-for-path`` workaround).
    Raises ``AddressError`` with Dovecot's wording.
    """
    if brackets_optional and text and not text.startswith("<"):
        mailbox, sep, rest = text.partition(" ")
        return parse_mailbox(mailbox), sep + rest
    if not text.startswith("<"):
        raise AddressError("Missing '<' at beginning of path")
    end = _find_path_end(text)
    if end < 0:
        raise AddressError("Missing '>' at end of path")
    inner = text[1:end]
    rest = text[end + 1 :]
    if inner == "":
        if not allow_null:
            raise AddressError("Null path not allowed")
        return Address(""), rest
    if inner.startswith("@"):  # an obsolete source route: @a,@b:user@domain
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("Missing ':' at end of source route")
        inner = inner[colon + 1 :]
    return parse_mailbox(inner), rest


def _find_path_end(text: str) -> int:
    quoted = escaped = False
    for i in range(1, len(text)):
        char = text[i]
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return i
        elif char in " \t" and not quoted:
            return -1
    return -1


def parse_mailbox(text: str) -> Address:
    """``local-part[@domain]`` without the brackets."""
    if text.startswith('"'):
        local, i = _quoted_string(text)
    else:
        i = 0
        while i < len(text) and (text[i] in _ATEXT or text[i] == "."):
            i += 1
        local = text[:i]
        if not local or not _is_dot_string(local):
            raise AddressError("Invalid character in localpart")
    rest = text[i:]
    if not rest:
        return Address(local)
    if not rest.startswith("@"):
        raise AddressError("Invalid character in localpart")
    domain = rest[1:]
    if not domain:
        raise AddressError("Missing domain after '@'")
    if not (_DOMAIN_RE.match(domain) or _LITERAL_RE.match(domain)):
        raise AddressError("Invalid domain")
    return Address(local, domain)


def _quoted_string(text: str) -> tuple[str, int]:
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        if not (" " <= char <= "~"):
            break
        out.append(char)
        i += 1
    raise AddressError("Invalid character in localpart")


def split_detail(address: Address, delimiters: str) -> tuple[str, str, str]:
    """(user name, detail, delimiter) as Dovecot's ``smtp_address_detail_parse()``.

    The user name is the address without the ``+detail`` part (``recipient_delimiter``).
    """
    local = address.localpart
    delim = ""
    detail = ""
    if delimiters:
        positions = [p for p in (local.find(d) for d in delimiters) if p >= 0]
        if positions:
            pos = min(positions)
            delim, detail, local = local[pos], local[pos + 1 :], local[:pos]
    user = local if address.domain is None else f"{local}@{address.domain}"
    return user, detail, delim


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext (``+XX`` hex escapes); ValueError on a bad one."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "+":
            hexpart = text[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in hexpart):
                raise ValueError("Invalid character in xtext")
            out.append(chr(int(hexpart, 16)))
            i += 3
            continue
        if not ("!" <= char <= "~") or char == "=":
            raise ValueError("Invalid character in xtext")
        out.append(char)
        i += 1
    return "".join(out)


def xtext_encode(text: str) -> str:
    """RFC 3461 xtext: ``+``, ``=``, controls, space and non-ASCII as ``+XX``."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if byte < 0x21 or byte > 0x7E or char in "+=":
            out.append(f"+{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def original_recipient(address: Address, params: tuple[str, ...]) -> Address:
    """The ``ORCPT=rfc822;...`` address of a recipient, or the address itself
    (Dovecot's ``smtp_server_recipient_get_original()``)."""
    for param in params:
        keyword, _, value = param.partition("=")
        if keyword.upper() != "ORCPT":
            continue
        _type, _, encoded = value.partition(";")
        try:
            return parse_mailbox(xtext_decode(encoded))
        except ValueError:  # AddressError too
            return address
    return address
