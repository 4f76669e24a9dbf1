"""The ``XCLIENT`` of Dovecot's POP3 and Pigeonhole's ManageSieve proxies: the command, and how a trusted peer's one is read.

Format (``pop3-proxy.c`` ``proxy_send_login()``, ``managesieve-proxy.c`` ``proxy_write_xclient()``)::

    XCLIENT ADDR=<ip> PORT=<port> SESSION=<id> TTL=<ttl>[ FORWARD=<base64>]

``FORWARD`` is base64 of the ``forward_*`` passdb fields without their prefix,
each ``key=value`` tab-escaped (``str_append_tabescaped()``) and joined by TAB.
The readers (``cmd_xclient()`` in ``pop3-login/client.c`` and ``managesieve-login/client.c``) take the keys in
any case and order, ignores unknown ones, and applies every valid value even
when another one is invalid (the reply is then ``-ERR Invalid parameters``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Final

from proxyd.protocols.events import TrustedClientInfo
from proxyd.protocols.sasl import decode_base64, encode_base64
from proxyd.protocols.sessionid import MAX_SESSION_ID_LEN

_ESCAPES: Final = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES: Final = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}
_UINT_MAX: Final = 2**32 - 1


def tab_escape(text: str) -> str:
    """Dovecot's ``str_append_tabescaped()``."""
    return "".join(_ESCAPES.get(char, char) for char in text)


def tab_unescape(text: str) -> str:
    """Dovecot's ``str_tabunescape()`` (a trailing lone ``\\x01`` is dropped)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\x01":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(text):
            break
        following = text[i + 1]
        out.append(_UNESCAPES.get(following, following))
        i += 2
    return "".join(out)


def encode_forward(fields: tuple[tuple[str, str], ...]) -> str:
    """``FORWARD=`` value for ``forward_*`` fields (names without the prefix); "" for none.

    An empty value is written as the bare key, as Dovecot's auth process sends it.
    """
    parts = [tab_escape(f"{key}={value}" if value else key) for key, value in fields]
    if not parts:
        return ""
    return encode_base64("\t".join(parts).encode("utf-8")).decode("ascii")


def decode_forward(data: bytes) -> dict[str, str]:
    """The fields of a decoded ``FORWARD=`` value (a bare key gets the value "")."""
    fields: dict[str, str] = {}
    for part in data.decode("utf-8", "replace").split("\t"):
        if not part:
            continue
        key, _, value = tab_unescape(part).partition("=")
        fields[key] = value
    return fields


def xclient_command(
    *,
    remote_ip: str,
    remote_port: int,
    session_id: str,
    proxy_ttl: int,
    forward_fields: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """The ``XCLIENT`` line a proxy sends to a backend that advertised it (``proxy_ttl`` already decremented)."""
    line = f"XCLIENT ADDR={remote_ip} PORT={remote_port} SESSION={session_id} TTL={proxy_ttl}"
    forward = encode_forward(forward_fields)
    if forward:
        line += f" FORWARD={forward}"
    return line.encode("utf-8") + b"\r\n"


@dataclass(frozen=True, slots=True)
class XclientArgs:
    """What a trusted peer's ``XCLIENT`` said; ``valid`` is False if any value was rejected."""

    valid: bool = True
    remote_ip: str | None = None
    remote_port: int | None = None
    session_id: str | None = None
    proxy_ttl: int | None = None
    forward_fields: dict[str, str] | None = field(default=None)

    @property
    def changed(self) -> bool:
        """Whether anything is to be applied."""
        return any(
            value is not None
            for value in (
                self.remote_ip,
                self.remote_port,
                self.session_id,
                self.proxy_ttl,
                self.forward_fields,
            )
        )

    def trusted_info(self) -> TrustedClientInfo:
        """The event that applies what was sent (Dovecot applies each valid value as it reads it)."""
        return TrustedClientInfo(
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            proxy_ttl=self.proxy_ttl,
            session_id=self.session_id,
            forward_fields=self.forward_fields or {},
        )


def parse_ip(text: str) -> str | None:
    """Dovecot's ``net_addr2ip()``: IPv4 as ``inet_aton()`` reads it, IPv6 possibly in brackets."""
    if ":" in text:
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if "%" in text:
            return None  # inet_pton() takes no zone index
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(text)))
    except (OSError, ValueError):
        return None


def _parse_uint(text: str, limit: int) -> int | None:
    """Dovecot's ``str_to_uint*()``: ASCII digits only, no sign, no overflow."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= limit else None


def parse_xclient(args: bytes) -> XclientArgs:
    """Read the arguments of a trusted peer's ``XCLIENT`` (Dovecot's ``cmd_xclient()``)."""
    valid = True
    remote_ip: str | None = None
    remote_port: int | None = None
    session_id: str | None = None
    proxy_ttl: int | None = None
    forward: dict[str, str] | None = None
    for raw in args.split(b" "):
        token = raw.decode("utf-8", "replace")
        name, sep, value = token.partition("=")
        # strncasecmp() folds ASCII only; str.upper() would also map some non-ASCII letters to ASCII
        key = name.upper() if sep and name.isascii() else ""
        if key == "ADDR":
            ip = parse_ip(value)
            if ip is None:
                valid = False
            else:
                remote_ip = ip
        elif key == "PORT":
            port = _parse_uint(value, 65535)
            if not port:
                valid = False
            else:
                remote_port = port
        elif key == "SESSION":
            if len(raw) - len(b"SESSION=") <= MAX_SESSION_ID_LEN:
                session_id = value
        elif key == "TTL":
            ttl = _parse_uint(value, _UINT_MAX)
            if ttl is None:
                valid = False
            else:
                proxy_ttl = ttl
        elif key == "FORWARD":
            decoded = decode_base64(raw[len(b"FORWARD=") :])
            if decoded is None:
                valid = False
            else:
                forward = decode_forward(decoded)
    return XclientArgs(valid, remote_ip, remote_port, session_id, proxy_ttl, forward)
