"""SMTP ``XCLIENT`` as Dovecot's lib-smtp has it: read from a trusted proxy, written to a backend.

Reading (``smtp_server_cmd_xclient()``): the parameters are split at single
spaces; each must be an ``esmtp-param`` (``keyword[=value]``, the value any
printable ASCII but ``=``), its value is xtext-decoded, and the keyword is
case-insensitive.  ``ADDR`` (``[UNAVAILABLE]`` or an IP, ``IPV6:`` allowed),
``PORT`` (1-65535), ``PROTO`` (SMTP, ESMTP or LMTP), ``TTL`` and ``TIMEOUT``
(unsigned numbers) make the whole command fail when invalid, and nothing is
applied then; an invalid ``HELO`` is just left out; ``LOGIN`` and
``SESSION`` are taken as they are; of the other keywords only the
``xclient_extensions`` submission-login names (``FORWARD``) are kept.

Writing (``proxy_send_xclient()`` in ``submission-proxy.c``): each attribute
the backend listed is appended as `` NAME=xtext(value)``; once the command
passes 512 bytes, what came before the last attribute is sent as a command of
its own and the attribute starts the next one, so a backend sees several
``XCLIENT`` commands, each with its own reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.xclient import parse_ip

#: lib-smtp's ``SMTP_BASE_LINE_LENGTH_LIMIT``: an XCLIENT line longer than this is split
LINE_LIMIT: Final = 512
#: what submission-login offers a trusted client (lib-smtp's base fields and its
#: ``xclient_extensions``), in ``smtp_server_reply_ehlo_add_xclient()``'s order
OFFERED: Final = ("ADDR", "PORT", "PROTO", "HELO", "LOGIN", "SESSION", "TTL", "TIMEOUT", "FORWARD")
#: the extension keywords submission-login keeps (``xclient_extensions``)
_EXTENSIONS: Final = frozenset({"FORWARD"})
UNAVAILABLE: Final = "[UNAVAILABLE]"
_UINT_MAX: Final = 2**32 - 1
_KEYWORD: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*")
#: ``smtp_parser_parse_domain()`` (lenient: ``-`` and ``_`` anywhere) or an address literal
_DOMAIN: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[\x21-\x5a\x5e-\x7e]*\]")
_HEX: Final = b"0123456789ABCDEF"


def xtext_encode(text: str) -> str:
    """RFC 3461 xtext (``smtp_xtext_encode()``)."""
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in b"+=" else f"+{b:02X}" for b in text.encode()
    )


def xtext_decode(value: bytes) -> str:
    """``smtp_xtext_parse()``; raises ValueError with Dovecot's error text."""
    out = bytearray()
    i = 0
    while i < len(value):
        byte = value[i]
        if byte != 0x2B:  # '+'
            out.append(byte)
            i += 1
            continue
        pair = value[i + 1 : i + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise ValueError("Invalid hexchar after '+' in xtext")
        out.append(int(pair, 16))
        i += 3
    if 0 in out:
        raise ValueError("Encountered NUL character in xtext")
    return out.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class XclientData:
    """What a trusted client's XCLIENT set (Dovecot's ``struct smtp_proxy_data``); None: not given."""

    remote_ip: str | None = None
    remote_port: int | None = None
    helo: str | None = None
    login: str | None = None
    proto: str | None = None
    session_id: str | None = None
    ttl: int | None = None
    #: the ``FORWARD=`` value as sent (base64, decoded by submission-login itself)
    forward: str | None = None


class XclientError(ValueError):
    """The 501 text for an XCLIENT that is refused as a whole."""


def is_helo_domain(text: str, *, literal: bool) -> bool:
    """``smtp_helo_domain_parse()``: a domain (lenient) or, for EHLO, an address literal."""
    match = _DOMAIN.fullmatch(text)
    return match is not None and (literal or not text.startswith("["))


def _uint(text: str, limit: int) -> int | None:
    if not text or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= limit else None


def parse_xclient(params: bytes) -> XclientData:
    """The parameters of a trusted client's XCLIENT; raises :class:`XclientError`."""
    fields: dict[str, object] = {}
    words = params.split(b" ") if params else []
    for word in words:
        if not word:
            raise XclientError("Invalid parameter: Parameter is empty")
        keyword_match = _KEYWORD.match(word)
        if keyword_match is None:
            raise XclientError("Invalid parameter: Unexpected character in parameter keyword")
        rest = word[keyword_match.end() :]
        if rest and rest[:1] != b"=":
            raise XclientError("Invalid parameter: Unexpected character in parameter keyword")
        raw = rest[1:]
        if any(not (0x21 <= b <= 0x7E) or b == 0x3D for b in raw):
            raise XclientError("Invalid parameter: Unexpected character in parameter value")
        keyword = keyword_match.group().decode("ascii").upper()
        try:
            value = xtext_decode(raw)
        except ValueError as error:
            raise XclientError(f"Invalid {keyword} parameter: {error}") from None
        unavailable = value.upper() == UNAVAILABLE
        if keyword == "ADDR":
            if unavailable:
                continue
            ipv6 = value[:5].upper() == "IPV6:"
            ip = parse_ip(value[5:] if ipv6 else value)
            if ip is None or (ipv6 and ":" not in ip):
                raise XclientError("Invalid ADDR parameter")
            fields["remote_ip"] = ip
        elif keyword == "HELO":
            if not unavailable and is_helo_domain(value, literal=True):
                fields["helo"] = value
        elif keyword == "LOGIN":
            if not unavailable:
                fields["login"] = value
        elif keyword == "PORT":
            if unavailable:
                continue
            port = _uint(value, 65535)
            if not port:
                raise XclientError("Invalid PORT parameter")
            fields["remote_port"] = port
        elif keyword == "PROTO":
            proto = value.upper()
            if proto not in ("SMTP", "ESMTP", "LMTP"):
                raise XclientError("Invalid PROTO parameter")
            fields["proto"] = proto
        elif keyword == "SESSION":
            if not unavailable:
                fields["session_id"] = value
        elif keyword == "TIMEOUT":
            if _uint(value, _UINT_MAX) is None:
                raise XclientError("Invalid TIMEOUT parameter")
        elif keyword == "TTL":
            ttl = _uint(value, _UINT_MAX)
            if ttl is None:
                raise XclientError("Invalid TTL parameter")
            if ttl < _UINT_MAX:  # Dovecot keeps TTL+1, which wraps to 0 ("not given") here
                fields["ttl"] = ttl
        elif keyword in _EXTENSIONS:
            fields["forward"] = value
    return XclientData(**fields)  # type: ignore[arg-type]


def xclient_commands(attributes: list[tuple[str, str]]) -> list[bytes]:
    """The XCLIENT command lines for ``(NAME, value)`` pairs, split as Dovecot splits them.

    An attribute is appended to the command being built; when that makes the
    command longer than 512 bytes, the command as it was before the attribute
    is sent and the attribute starts the next one (a single attribute that
    is too long on its own goes out alone).  Dovecot then ends with a bare
    ``XCLIENT`` if the last attribute was sent that way; proxyd sends no
    command without attributes.
    """
    lines: list[bytes] = []
    current = "XCLIENT"
    for name, value in attributes:
        part = f" {name}={xtext_encode(value)}"
        if current != "XCLIENT" and len(current) + len(part) > LINE_LIMIT:
            lines.append(current.encode() + b"\r\n")
            current = "XCLIENT"
        current += part
    if current != "XCLIENT":
        lines.append(current.encode() + b"\r\n")
    return lines
