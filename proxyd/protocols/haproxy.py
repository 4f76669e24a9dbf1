"""HAProxy PROXY protocol v1/v2 header parser, sans-IO (Dovecot's ``master-service-haproxy.c``).

A listener with ``haproxy = yes`` expects every connection to start with a
PROXY header that names the real client.  Feed the parser the bytes as they
arrive; it answers ``NEED_DATA``, a ``ProxyHeader`` or a ``HaproxyError``.
``feed()`` never raises on any input: a bad header is a value, not an
exception, so a driver cannot be crashed by what a peer sends.

What is accepted follows Dovecot 2.3.21 check by check (the error texts are its
log texts; tests/login/test_haproxy_dovecot.py compares with a running Dovecot):

* **v1** ``PROXY TCP4|TCP6|UNKNOWN src dst sport dport\\r\\n``.  Fields are split on
  single spaces (two spaces make an empty field, which is an error); addresses
  are parsed like Dovecot's ``net_addr2ip()`` (dotted quads with decimal
  octets, a single 32-bit number, then glibc ``inet_aton()`` forms; IPv6 via
  ``inet_pton()``, optionally in brackets) and must match the family; ports
  are decimal 1..65535 (leading zeros allowed).  ``UNKNOWN`` ignores the rest
  of the line and keeps the socket's addresses.  The line including CRLF must
  fit in 108 bytes (``HAPROXY_V1_MAX_HEADER_SIZE``); a CR not followed by LF is
  rejected, and so is the 7-byte ``PROXY\\r\\n`` (Dovecot looks for v1 only in
  8 or more bytes).
* **v2** the 12-byte signature, version 2, the whole header at most 1500 bytes
  (Dovecot's read buffer).  ``LOCAL`` keeps the socket's addresses and skips
  everything after the 16-byte header, TLVs included.  ``PROXY`` needs the
  STREAM transport and family INET (12 address bytes) or INET6 (36).  TLVs after
  the address block: ALPN (0x01), AUTHORITY (0x02, the SNI-like local name), SSL
  (0x20: client bit ``PP2_CLIENT_SSL`` means the client used TLS, sub-TLV CN 0x22
  the client certificate's common name); other types are skipped; a truncated
  TLV rejects the connection.

Two deliberate differences from Dovecot, both on inputs no real proxy sends:
family AF_UNIX (0x31) is rejected, where Dovecot logs "Unsupported address
family" and then misreads the 216 address bytes as TLVs; and a v1 line that
starts with ``PROXY`` but whose first field is not exactly ``PROXY`` is
rejected, where Dovecot hits an assertion.  PROXY + AF_UNSPEC + STREAM (0x01)
is accepted with the socket's addresses, as Dovecot does (it logs an error
line but goes on); the usual AF_UNSPEC byte 0x00 is rejected as "Not using
TCP", also as Dovecot.

Dovecot assumes the header arrives in one TCP segment; this parser waits for
the rest instead, and the driver bounds the wait with ``haproxy_timeout``.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field
from typing import Final

from proxyd.log import sanitize

#: the v2 signature (proxy-protocol.txt §2.2)
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: signature + version/command + family + 16-bit length
V2_HEADER_SIZE: Final = 16
#: Dovecot's ``rbuf[1500]``: header plus announced length must fit
V2_MAX_HEADER_SIZE: Final = 1500
#: Dovecot's ``HAPROXY_V1_MAX_HEADER_SIZE``: the whole line including CRLF
V1_MAX_HEADER_SIZE: Final = 108
#: the most bytes any acceptable header occupies
MAX_HEADER_SIZE: Final = V2_MAX_HEADER_SIZE

_V1_MAGIC: Final = b"PROXY"
#: Dovecot recognises v1 only in a peek of at least 8 bytes
_V1_MIN_PEEK: Final = 8

_CMD_LOCAL: Final = 0x0
_CMD_PROXY: Final = 0x1
_AF_UNSPEC: Final = 0x0
_AF_INET: Final = 0x1
_AF_INET6: Final = 0x2
_AF_UNIX: Final = 0x3
_SOCK_STREAM: Final = 0x1
_IP4_BLOCK: Final = 12
_IP6_BLOCK: Final = 36

_TLV_HEADER: Final = 3
_PP2_TYPE_ALPN: Final = 0x01
_PP2_TYPE_AUTHORITY: Final = 0x02
_PP2_TYPE_SSL: Final = 0x20
_PP2_SUBTYPE_SSL_CN: Final = 0x22
_PP2_CLIENT_SSL: Final = 0x01
#: ``client`` byte + 32-bit ``verify`` before the SSL sub-TLVs
_SSL_TLV_HEADER: Final = 5


class NeedData(enum.Enum):
    """The header is not complete yet: feed more bytes."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header.

    The four address fields are always set: from the header when it carried
    addresses, otherwise (v1 ``UNKNOWN``, v2 ``LOCAL``, v2 AF_UNSPEC) the real
    socket addresses the parser was created with.  IP strings are in
    ``inet_ntop()`` form, as Dovecot prints them.
    """

    version: int
    remote_ip: str
    remote_port: int
    local_ip: str
    local_port: int
    #: v2 LOCAL command (a health check by the proxy itself)
    local_command: bool = False
    #: v2 SSL TLV had ``PP2_CLIENT_SSL``: the client spoke TLS to the proxy
    ssl: bool = False
    #: v2 SSL sub-TLV CN: the client certificate's common name
    ssl_cn: str | None = None
    #: v2 AUTHORITY TLV: the host name the client asked for (SNI)
    authority: str | None = None
    #: v2 ALPN TLV, raw
    alpn: bytes | None = None
    #: how many bytes of the stream the header occupied
    length: int = 0


@dataclass(frozen=True, slots=True)
class HaproxyError:
    """The header is invalid; the connection must be dropped.

    ``reason`` is Dovecot's log text without the parenthesised details, which
    are in ``details`` (name, value) pairs; ``log_line()`` joins them the way
    Dovecot does.
    """

    reason: str
    details: tuple[tuple[str, str], ...] = field(default=())

    def log_line(self, rip: str) -> str:
        """Dovecot's log line for this error, e.g. ``... Not using TCP (type=02, rip=10.0.0.1)``."""
        parts = [f"{name}={value}" for name, value in self.details]
        parts.append(f"rip={rip}")
        return f"{self.reason} ({', '.join(parts)})"


ParseResult = ProxyHeader | NeedData | HaproxyError


class HaproxyParser:
    """Incremental PROXY header parser for one connection.

    Created with the connection's real addresses, which the header replaces
    when it carries addresses of its own.  ``feed()`` returns ``NEED_DATA``
    until the header is complete; after a ``ProxyHeader`` the bytes that
    followed it are in ``leftover`` (later ``feed()`` calls add to it); after a
    ``HaproxyError`` further input is ignored.  The result never changes once
    given.
    """

    def __init__(
        self,
        *,
        real_remote_ip: str,
        real_remote_port: int,
        real_local_ip: str,
        real_local_port: int,
    ) -> None:
        # not `_real`: mypyc would name the C struct field `__real`, a GCC keyword
        self._real_addrs = (real_remote_ip, real_remote_port, real_local_ip, real_local_port)
        self._buffer = bytearray()
        self._result: ProxyHeader | HaproxyError | None = None
        self._leftover = bytearray()

    @property
    def leftover(self) -> bytes:
        """Bytes received after the header (the start of the client's own protocol)."""
        return bytes(self._leftover)

    @property
    def result(self) -> ParseResult:
        """The latest answer of ``feed()``."""
        return NEED_DATA if self._result is None else self._result

    def feed(self, data: bytes) -> ParseResult:
        """Add ``data``; return the header, an error, or ``NEED_DATA``."""
        if self._result is not None:
            if isinstance(self._result, ProxyHeader):
                self._leftover += data
            return self._result
        self._buffer += data
        result = self._parse(bytes(self._buffer))
        if isinstance(result, NeedData):
            return result
        if isinstance(result, ProxyHeader):
            self._leftover += self._buffer[result.length :]
        self._buffer.clear()
        self._result = result
        return result

    def _parse(self, buf: bytes) -> ParseResult:
        if len(buf) < len(_V1_MAGIC) and _V1_MAGIC.startswith(buf):
            return NEED_DATA
        if buf.startswith(_V1_MAGIC):
            return self._parse_v1(buf)
        if len(buf) < len(V2_SIGNATURE) and V2_SIGNATURE.startswith(buf):
            return NEED_DATA
        if buf.startswith(V2_SIGNATURE):
            return self._parse_v2(buf)
        return HaproxyError("haproxy: Client disconnected: Failed to read valid HAproxy data")

    # --- version 1 ---------------------------------------------------------

    def _parse_v1(self, buf: bytes) -> ParseResult:
        cr = buf.find(b"\r", 0, V1_MAX_HEADER_SIZE - 1)
        if cr < 0:
            if len(buf) >= V1_MAX_HEADER_SIZE - 1:
                # Dovecot drops such a connection without a log line of its own
                return HaproxyError(
                    "haproxy(v1): Client disconnected: Header line has no CRLF within "
                    f"{V1_MAX_HEADER_SIZE} bytes"
                )
            return NEED_DATA
        if cr + 1 >= len(buf):
            return NEED_DATA
        if buf[cr + 1] != 0x0A:
            return HaproxyError(
                "haproxy(v1): Client disconnected: Header line ends in CR without LF"
            )
        size = cr + 2
        if size < _V1_MIN_PEEK:
            # "PROXY\r\n": Dovecot only takes 8 or more peeked bytes for v1
            return HaproxyError("haproxy: Client disconnected: Failed to read valid HAproxy data")
        # C string semantics: Dovecot's t_strsplit() stops at a NUL byte
        line = buf[:cr].split(b"\0", 1)[0]
        return self._v1_fields(line.split(b" "), size)

    def _v1_fields(self, fields: list[bytes], size: int) -> ParseResult:
        def missing(what: str) -> HaproxyError:
            return HaproxyError(
                f"haproxy(v1): Client disconnected: Field for proxied {what} is missing"
            )

        def invalid(what: str, name: str, value: bytes) -> HaproxyError:
            return HaproxyError(
                f"haproxy(v1): Client disconnected: Proxied {what} is invalid",
                ((name, f"`{sanitize(value, 64)}'"),),
            )

        if fields[0] != _V1_MAGIC:
            return HaproxyError("haproxy: Client disconnected: Failed to read valid HAproxy data")
        if len(fields) < 2:
            return missing("protocol")
        protocol = fields[1]
        if protocol == b"UNKNOWN":
            rip, rport, lip, lport = self._real_addrs
            return ProxyHeader(1, rip, rport, lip, lport, length=size)
        if protocol == b"TCP4":
            family = socket.AF_INET
        elif protocol == b"TCP6":
            family = socket.AF_INET6
        else:
            return HaproxyError(
                "haproxy(v1): Client disconnected: Unknown proxied protocol",
                (("protocol", f"`{sanitize(protocol, 64)}'"),),
            )
        if len(fields) < 3:
            return missing("remote address")
        remote = parse_ip(fields[2])
        if remote is None or remote[0] != family:
            return invalid("remote address", "address", fields[2])
        if len(fields) < 4:
            return missing("local address")
        local = parse_ip(fields[3])
        if local is None or local[0] != family:
            return invalid("local address", "address", fields[3])
        if len(fields) < 5:
            return missing("local port")  # sic: Dovecot says "local" for the remote port too
        remote_port = parse_port(fields[4])
        if remote_port is None:
            return invalid("remote port", "port", fields[4])
        if len(fields) < 6:
            return missing("local port")
        local_port = parse_port(fields[5])
        if local_port is None:
            return invalid("local port", "port", fields[5])
        if len(fields) > 6:
            return HaproxyError(
                "haproxy(v1): Client disconnected: Header line has spurius extra field",
                (("field", f"`{sanitize(fields[6], 64)}'"),),
            )
        return ProxyHeader(1, remote[1], remote_port, local[1], local_port, length=size)

    # --- version 2 ---------------------------------------------------------

    def _parse_v2(self, buf: bytes) -> ParseResult:
        if len(buf) < V2_HEADER_SIZE:
            return NEED_DATA
        ver_cmd, fam = buf[12], buf[13]
        hdr_len = int.from_bytes(buf[14:16], "big")
        size = V2_HEADER_SIZE + hdr_len
        if size > V2_MAX_HEADER_SIZE:
            return HaproxyError("haproxy: Client disconnected: Too long header")
        if ver_cmd & 0xF0 != 0x20:
            return HaproxyError(
                "haproxy: Client disconnected: Unsupported protocol version",
                (("version", f"{(ver_cmd & 0xF0) >> 4:02x}"),),
            )
        command = ver_cmd & 0x0F
        if command not in (_CMD_LOCAL, _CMD_PROXY):
            return HaproxyError(
                "haproxy(v2): Client disconnected: Invalid command", (("cmd", f"{command:02x}"),)
            )
        if len(buf) < size:
            return NEED_DATA
        rip, rport, lip, lport = self._real_addrs
        if command == _CMD_LOCAL:
            # the address block and any TLVs are skipped unread, as Dovecot does
            return ProxyHeader(2, rip, rport, lip, lport, local_command=True, length=size)
        if fam & 0x0F != _SOCK_STREAM:
            return HaproxyError(
                "haproxy(v2): Client disconnected: Not using TCP", (("type", f"{fam & 0x0F:02x}"),)
            )
        family = (fam & 0xF0) >> 4
        offset = V2_HEADER_SIZE
        if family == _AF_INET:
            if hdr_len < _IP4_BLOCK:
                return HaproxyError("haproxy(v2): Client disconnected: IPv4 data is incomplete")
            block = buf[offset : offset + _IP4_BLOCK]
            rip = socket.inet_ntop(socket.AF_INET, block[0:4])
            lip = socket.inet_ntop(socket.AF_INET, block[4:8])
            rport = int.from_bytes(block[8:10], "big")
            lport = int.from_bytes(block[10:12], "big")
            offset += _IP4_BLOCK
        elif family == _AF_INET6:
            if hdr_len < _IP6_BLOCK:
                return HaproxyError("haproxy(v2): Client disconnected: IPv6 data is incomplete")
            block = buf[offset : offset + _IP6_BLOCK]
            rip = socket.inet_ntop(socket.AF_INET6, block[0:16])
            lip = socket.inet_ntop(socket.AF_INET6, block[16:32])
            rport = int.from_bytes(block[32:34], "big")
            lport = int.from_bytes(block[34:36], "big")
            offset += _IP6_BLOCK
        elif family == _AF_UNIX:
            return HaproxyError(
                "haproxy(v2): Client disconnected: Unsupported address family",
                (("family", f"{family:02x}"),),
            )
        elif family != _AF_UNSPEC:
            return HaproxyError(
                "haproxy(v2): Client disconnected: Unknown address family",
                (("family", f"{family:02x}"),),
            )
        tlvs = _parse_tlvs(buf[offset:size])
        if isinstance(tlvs, str):
            return HaproxyError(
                f"haproxy(v2): Client disconnected: Invalid TLV: {tlvs}",
                (("cmd", f"{command:02x}"),),
            )
        return ProxyHeader(
            2,
            rip,
            rport,
            lip,
            lport,
            ssl=tlvs.ssl,
            ssl_cn=tlvs.ssl_cn,
            authority=tlvs.authority,
            alpn=tlvs.alpn,
            length=size,
        )


@dataclass(slots=True)
class _Tlvs:
    ssl: bool = False
    ssl_cn: str | None = None
    authority: str | None = None
    alpn: bytes | None = None


def _next_tlv(data: bytes, pos: int) -> tuple[int, bytes] | None:
    """The TLV at ``pos`` as (type, value), or None if it does not fit."""
    if len(data) - pos < _TLV_HEADER:
        return None
    length = int.from_bytes(data[pos + 1 : pos + 3], "big")
    if pos + _TLV_HEADER + length > len(data):
        return None
    return data[pos], data[pos + _TLV_HEADER : pos + _TLV_HEADER + length]


def _c_string(value: bytes) -> str:
    # Dovecot keeps these with p_strndup(): the value ends at the first NUL
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _parse_tlvs(data: bytes) -> _Tlvs | str:
    """The TLVs Dovecot reads, or the error text for a truncated one.  Later TLVs win."""
    out = _Tlvs()
    pos = 0
    while pos < len(data):
        tlv = _next_tlv(data, pos)
        if tlv is None:
            return f"get_tlv({pos}) failed: Truncated data"
        kind, value = tlv
        if kind == _PP2_TYPE_ALPN:
            out.alpn = value
        elif kind == _PP2_TYPE_AUTHORITY:
            out.authority = _c_string(value)
        elif kind == _PP2_TYPE_SSL:
            if len(value) < _SSL_TLV_HEADER:
                return f"get_ssl_tlv({pos}) failed: Truncated data"
            out.ssl = bool(value[0] & _PP2_CLIENT_SSL)
            subs = value[_SSL_TLV_HEADER:]
            sub_pos = 0
            while sub_pos < len(subs):
                sub = _next_tlv(subs, sub_pos)
                if sub is None:
                    return f"get_tlv({sub_pos}) failed: Truncated data"
                if sub[0] == _PP2_SUBTYPE_SSL_CN:
                    out.ssl_cn = _c_string(sub[1])
                sub_pos += _TLV_HEADER + len(sub[1])
        pos += _TLV_HEADER + len(value)
    return out


# --- field parsers shared with the tests ------------------------------------


def _parse_uint(text: bytes, pos: int) -> tuple[int, int] | None:
    """Dovecot's ``str_parse_uint()``: leading decimal digits as (value, end), None if none or > UINT_MAX."""
    end = pos
    while end < len(text) and 0x30 <= text[end] <= 0x39:
        end += 1
    if end == pos:
        return None
    value = int(text[pos:end])
    return None if value > 0xFFFF_FFFF else (value, end)


def _inet4_fast(text: bytes) -> bytes | None:
    """Dovecot's ``net_addr2ip_inet4_fast()``: ``N`` or ``a.b.c.d`` with decimal parts."""
    first = _parse_uint(text, 0)
    if first is None:
        return None
    num, pos = first
    if pos == len(text):
        return num.to_bytes(4, "big")
    octets = bytearray()
    while True:
        if num >= 256:
            return None
        octets.append(num)
        if len(octets) == 4:
            break
        if pos >= len(text) or text[pos] != 0x2E:
            return None
        part = _parse_uint(text, pos + 1)
        if part is None:
            return None
        num, pos = part
    return bytes(octets) if pos == len(text) else None


def parse_ip(text: bytes) -> tuple[socket.AddressFamily, str] | None:
    """Dovecot's ``net_addr2ip()``: (family, ``inet_ntop()`` text) or None if invalid."""
    if b"\0" in text:
        return None
    fast = _inet4_fast(text)
    if fast is not None:
        return socket.AF_INET, socket.inet_ntop(socket.AF_INET, fast)
    try:
        ascii_text = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        if ":" in ascii_text:
            if ascii_text.startswith("[") and ascii_text.endswith("]"):
                ascii_text = ascii_text[1:-1]
            packed = socket.inet_pton(socket.AF_INET6, ascii_text)
            return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6, packed)
        # the real glibc inet_aton(): "127.1", "0x7f.1", octal parts, ...
        packed = socket.inet_aton(ascii_text)
    except (OSError, ValueError):
        return None
    return socket.AF_INET, socket.inet_ntop(socket.AF_INET, packed)


def parse_port(text: bytes) -> int | None:
    """Dovecot's ``net_str2port()``: decimal digits only, 1..65535."""
    if not text or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= 0xFFFF else None

