"""PROXY protocol parser: byte-exact v1/v2 samples, Dovecot's checks and texts, fuzzing.

v2 headers are built by hand from haproxy's doc/proxy-protocol.txt §2.2 (signature,
ver_cmd, fam, big-endian length, address block, TLVs), not by the code under test.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.log import sanitize
from proxyd.protocols.haproxy import (
    MAX_HEADER_SIZE,
    NEED_DATA,
    V2_SIGNATURE,
    HaproxyError,
    HaproxyParser,
    NeedData,
    ProxyHeader,
    parse_ip,
    parse_port,
)

REAL = {
    "real_remote_ip": "192.0.2.99",
    "real_remote_port": 40000,
    "real_local_ip": "192.0.2.1",
    "real_local_port": 143,
}


def parser() -> HaproxyParser:
    return HaproxyParser(**REAL)  # type: ignore[arg-type]


def parse(data: bytes) -> ProxyHeader | NeedData | HaproxyError:
    return parser().feed(data)


def header(data: bytes) -> ProxyHeader:
    result = parse(data)
    assert isinstance(result, ProxyHeader), result
    return result


def error(data: bytes) -> HaproxyError:
    result = parse(data)
    assert isinstance(result, HaproxyError), result
    return result


# --- hand-built v2 headers ----------------------------------------------------


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def ssl_tlv(client: int, *subs: bytes, verify: int = 0) -> bytes:
    return tlv(0x20, bytes([client]) + struct.pack("!I", verify) + b"".join(subs))


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", n) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(0x21, 0x11, block + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return v2(0x21, 0x21, block + tlvs)


# --- v1 ---------------------------------------------------------------------------


def test_v1_tcp4_replaces_addresses():
    h = header(b"PROXY TCP4 198.51.100.7 203.0.113.5 56324 143\r\n")
    assert h == ProxyHeader(
        version=1,
        remote_ip="198.51.100.7",
        remote_port=56324,
        local_ip="203.0.113.5",
        local_port=143,
        length=len(b"PROXY TCP4 198.51.100.7 203.0.113.5 56324 143\r\n"),
    )


def test_v1_tcp6_and_bracketed_form():
    h = header(b"PROXY TCP6 2001:db8::1 [2001:db8::2] 1 65535\r\n")
    assert (h.remote_ip, h.local_ip, h.remote_port, h.local_port) == (
        "2001:db8::1",
        "2001:db8::2",
        1,
        65535,
    )
    # an IPv4-mapped IPv6 address is TCP6 and printed the way inet_ntop() does
    assert header(b"PROXY TCP6 ::ffff:10.1.2.3 ::1 5 6\r\n").remote_ip == "::ffff:10.1.2.3"


def test_v1_unknown_keeps_real_addresses_and_ignores_the_rest():
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:: garbage 99999 x y z\r\n"):
        h = header(line)
        assert (h.remote_ip, h.remote_port, h.local_ip, h.local_port) == (
            "192.0.2.99",
            40000,
            "192.0.2.1",
            143,
        )
        assert h.length == len(line)
        assert not h.local_command


def test_v1_worst_case_107_bytes_fits_and_longer_does_not():
    six = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY UNKNOWN {six} {six} 65535 65535\r\n".encode()
    assert len(line) == 107
    assert header(line).length == 107
    assert header(line[:-2] + b"5\r\n").length == 108
    e = error(line[:-2] + b"55\r\n")  # 109 bytes: CRLF no longer inside the first 108
    assert "no CRLF within 108 bytes" in e.reason
    # no CR at all: decided as soon as 107 bytes are in
    assert isinstance(parse(b"PROXY " + b"x" * 100), NeedData)
    assert isinstance(parse(b"PROXY " + b"x" * 101), HaproxyError)


def test_v1_needs_crlf_not_a_bare_cr_or_lf():
    assert isinstance(parse(b"PROXY UNKNOWN\r"), NeedData)
    assert isinstance(parse(b"PROXY UNKNOWN\n"), NeedData)  # LF alone is not an end
    assert "CR without LF" in error(b"PROXY UNKNOWN\rX\n").reason


@pytest.mark.parametrize(
    ("line", "reason", "details"),
    [
        # Dovecot takes v1 only from 8 bytes on
        (b"PROXY\r\n", "haproxy: Client disconnected: Failed to read valid HAproxy data", ()),
        (
            b"PROXY\0\r\n",
            "haproxy(v1): Client disconnected: Field for proxied protocol is missing",
            (),
        ),
        (
            b"PROXY \r\n",
            "haproxy(v1): Client disconnected: Unknown proxied protocol",
            (("protocol", "`'"),),
        ),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Unknown proxied protocol",
            (("protocol", "`UDP4'"),),
        ),
        (
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Unknown proxied protocol",
            (("protocol", "`tcp4'"),),
        ),
        (
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Unknown proxied protocol",
            (("protocol", "`'"),),
        ),
        (
            b"PROXY TCP4\r\n",
            "haproxy(v1): Client disconnected: Field for proxied remote address is missing",
            (),
        ),
        (
            b"PROXY TCP4 1.2.3.4\r\n",
            "haproxy(v1): Client disconnected: Field for proxied local address is missing",
            (),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
            "haproxy(v1): Client disconnected: Field for proxied local port is missing",
            (),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "haproxy(v1): Client disconnected: Field for proxied local port is missing",
            (),
        ),
        (
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Proxied remote address is invalid",
            (("address", "`::1'"),),
        ),
        (
            b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Proxied local address is invalid",
            (("address", "`5.6.7.8'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            "haproxy(v1): Client disconnected: Proxied remote address is invalid",
            (("address", "`1.2.3.256'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0 2\r\n",
            "haproxy(v1): Client disconnected: Proxied remote port is invalid",
            (("port", "`0'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            "haproxy(v1): Client disconnected: Proxied local port is invalid",
            (("port", "`65536'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            "haproxy(v1): Client disconnected: Proxied remote port is invalid",
            (("port", "`+1'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "haproxy(v1): Client disconnected: Header line has spurius extra field",
            (("field", "`'"),),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "haproxy(v1): Client disconnected: Header line has spurius extra field",
            (("field", "`3'"),),
        ),
        (
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "haproxy: Client disconnected: Failed to read valid HAproxy data",
            (),
        ),
    ],
)
def test_v1_rejections_with_dovecots_texts(line, reason, details):
    e = error(line)
    assert (e.reason, e.details) == (reason, details)


def test_v1_addresses_follow_dovecots_net_addr2ip():
    # decimal octets with leading zeros (Dovecot's fast path), not octal
    assert header(b"PROXY TCP4 010.1.1.1 1.1.1.1 1 2\r\n").remote_ip == "10.1.1.1"
    # a single 32-bit number, and glibc inet_aton() short and hex forms
    assert header(b"PROXY TCP4 167772161 1.1.1.1 1 2\r\n").remote_ip == "10.0.0.1"
    assert header(b"PROXY TCP4 127.1 0x7f.0.0.2 1 2\r\n").remote_ip == "127.0.0.1"
    assert header(b"PROXY TCP4 127.1 0x7f.0.0.2 1 2\r\n").local_ip == "127.0.0.2"
    # leading zeros in ports are fine (str_to_uintmax)
    assert header(b"PROXY TCP4 1.1.1.1 1.1.1.1 00080 0143\r\n").remote_port == 80


def test_v1_nul_ends_the_line_like_a_c_string():
    assert header(b"PROXY UNKNOWN\0junk\r\n").length == len(b"PROXY UNKNOWN\0junk\r\n")
    e = error(b"PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n")
    assert e.reason.endswith("Field for proxied local address is missing")


def test_field_parsers():
    assert parse_port(b"1") == 1
    assert parse_port(b"65535") == 65535
    for bad in (b"", b"0", b"65536", b"-1", b" 1", b"1 ", b"\xd9\xa1"):
        assert parse_port(bad) is None
    assert parse_ip(b"") is None
    assert parse_ip(b"1.2.3.4.5") is None
    assert parse_ip(b"[::1") is None
    assert parse_ip(b"\xff") is None
    assert sanitize(b"a\x01b\xffc", 64) == "a?b?c"
    assert sanitize(b"x" * 64, 64) == "x" * 64
    assert sanitize(b"x" * 65, 64) == "x" * 61 + "..."


# --- v2 ---------------------------------------------------------------------------


def test_v2_tcp4_byte_exact():
    data = bytes.fromhex(
        "0d0a0d0a000d0a515549540a"  # signature
        "21"  # version 2, PROXY
        "11"  # AF_INET, STREAM
        "000c"  # 12 address bytes
        "c6336407"  # 198.51.100.7
        "cb007105"  # 203.0.113.5
        "dc04"  # 56324
        "008f"  # 143
    )
    assert data == v2_tcp4("198.51.100.7", "203.0.113.5", 56324, 143)
    assert header(data) == ProxyHeader(2, "198.51.100.7", 56324, "203.0.113.5", 143, length=28)


def test_v2_tcp6():
    h = header(v2_tcp6("2001:db8::7", "2001:db8::1", 1, 993))
    assert (h.version, h.remote_ip, h.remote_port, h.local_ip, h.local_port, h.length) == (
        2,
        "2001:db8::7",
        1,
        "2001:db8::1",
        993,
        16 + 36,
    )


def test_v2_local_keeps_real_addresses_and_skips_everything():
    # an address block and even an SSL TLV after LOCAL are not looked at (Dovecot: i = size)
    body = b"\xff" * 12 + ssl_tlv(0x01, tlv(0x22, b"cn"))
    h = header(v2(0x20, 0x11, body))
    assert h.local_command
    assert (h.remote_ip, h.remote_port, h.local_ip, h.local_port) == (
        "192.0.2.99",
        40000,
        "192.0.2.1",
        143,
    )
    assert (h.ssl, h.ssl_cn) == (False, None)
    assert h.length == 16 + len(body)
    # the usual health-check form: LOCAL, UNSPEC, no body; a truncated "TLV" is not read either
    assert header(v2(0x20, 0x00, b"")).length == 16
    assert header(v2(0x20, 0x00, b"\x20\x00")).length == 18


def test_v2_tlvs_alpn_authority_ssl_cn():
    tlvs = (
        tlv(0x01, b"imap")
        + tlv(0x02, b"mail.example.com")
        + tlv(0x04, b"\0\0\0")  # NOOP
        + ssl_tlv(
            0x01 | 0x02,
            tlv(0x21, b"TLSv1.3"),
            tlv(0x23, b"TLS_AES_128_GCM_SHA256"),
            tlv(0x22, b"alice@example.com"),
        )
        + tlv(0xE0, b"custom")
    )
    h = header(v2_tcp4("10.0.0.1", "10.0.0.2", 1000, 993, tlvs))
    assert h.alpn == b"imap"
    assert h.authority == "mail.example.com"
    assert h.ssl is True
    assert h.ssl_cn == "alice@example.com"


def test_v2_ssl_tlv_without_client_bit_is_not_tls():
    h = header(v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2, ssl_tlv(0x02, tlv(0x22, b"cn"))))
    assert (h.ssl, h.ssl_cn) == (False, "cn")


def test_v2_strings_end_at_nul_and_later_tlvs_win():
    tlvs = tlv(0x02, b"first") + tlv(0x02, b"host\0tail") + ssl_tlv(0x01) + ssl_tlv(0x00)
    h = header(v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2, tlvs))
    assert h.authority == "host"
    assert h.ssl is False


def test_v2_unspec_stream_is_accepted_with_real_addresses_as_dovecot_does():
    h = header(v2(0x21, 0x01, ssl_tlv(0x01)))
    assert (h.remote_ip, h.local_ip, h.ssl) == ("192.0.2.99", "192.0.2.1", True)


@pytest.mark.parametrize(
    ("data", "reason", "details"),
    [
        (
            v2(0x11, 0x11, b"\0" * 12),
            "haproxy: Client disconnected: Unsupported protocol version",
            (("version", "01"),),
        ),
        (
            v2(0x22, 0x11, b"\0" * 12),
            "haproxy(v2): Client disconnected: Invalid command",
            (("cmd", "02"),),
        ),
        (
            v2(0x21, 0x00, b""),
            "haproxy(v2): Client disconnected: Not using TCP",
            (("type", "00"),),
        ),
        (
            v2(0x21, 0x12, b"\0" * 12),
            "haproxy(v2): Client disconnected: Not using TCP",
            (("type", "02"),),
        ),
        (
            v2(0x21, 0x11, b"\0" * 11),
            "haproxy(v2): Client disconnected: IPv4 data is incomplete",
            (),
        ),
        (
            v2(0x21, 0x21, b"\0" * 35),
            "haproxy(v2): Client disconnected: IPv6 data is incomplete",
            (),
        ),
        (
            v2(0x21, 0x31, b"\0" * 216),
            "haproxy(v2): Client disconnected: Unsupported address family",
            (("family", "03"),),
        ),
        (
            v2(0x21, 0x41, b"\0" * 12),
            "haproxy(v2): Client disconnected: Unknown address family",
            (("family", "04"),),
        ),
        (
            v2(0x21, 0x11, b"\0" * 1485),
            "haproxy: Client disconnected: Too long header",
            (),
        ),
    ],
)
def test_v2_rejections_with_dovecots_texts(data, reason, details):
    e = error(data)
    assert (e.reason, e.details) == (reason, details)


def test_v2_max_size_is_1500_bytes():
    ok = v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2, tlv(0x04, b"\0" * (1500 - 16 - 12 - 3)))
    assert len(ok) == 1500 == MAX_HEADER_SIZE
    assert header(ok).length == 1500
    # the length field alone decides: rejected before the rest arrives
    assert isinstance(parse(v2(0x21, 0x11, b"", length=1485)), HaproxyError)


@pytest.mark.parametrize(
    ("tlvs", "message"),
    [
        (b"\x01", "Invalid TLV: get_tlv(0) failed: Truncated data"),
        (b"\x01\x00", "Invalid TLV: get_tlv(0) failed: Truncated data"),
        (b"\x01\x00\x02a", "Invalid TLV: get_tlv(0) failed: Truncated data"),
        (tlv(0x01, b"h2") + b"\x02\x00\x05abc", "Invalid TLV: get_tlv(5) failed: Truncated data"),
        (tlv(0x20, b"\x01\0\0\0"), "Invalid TLV: get_ssl_tlv(0) failed: Truncated data"),
        (
            tlv(0x04, b"") + ssl_tlv(0x01, tlv(0x21, b"TLSv1.3"), b"\x22\x00"),
            "Invalid TLV: get_tlv(10) failed: Truncated data",
        ),
    ],
)
def test_v2_truncated_tlvs_are_rejected(tlvs, message):
    e = error(v2_tcp4("10.0.0.1", "10.0.0.2", 1, 2, tlvs))
    assert e.reason == f"haproxy(v2): Client disconnected: {message}"
    assert e.details == (("cmd", "01"),)
    assert e.log_line("10.9.9.9") == (
        f"haproxy(v2): Client disconnected: {message} (cmd=01, rip=10.9.9.9)"
    )


def test_not_a_proxy_header():
    for data in (b"a001 LOGIN x y\r\n", b"\x16\x03\x01\x02\x00", b"\r\n\r\n\x01"):
        e = error(data)
        assert e.log_line("1.2.3.4") == (
            "haproxy: Client disconnected: Failed to read valid HAproxy data (rip=1.2.3.4)"
        )


# --- incremental feeding and leftover -------------------------------------------------

SAMPLES = [
    b"PROXY TCP4 198.51.100.7 203.0.113.5 56324 143\r\n",
    b"PROXY UNKNOWN\r\n",
    v2_tcp4(
        "198.51.100.7", "203.0.113.5", 56324, 143, tlv(0x02, b"a") + ssl_tlv(1, tlv(0x22, b"c"))
    ),
    v2_tcp6("::1", "::2", 3, 4),
    v2(0x20, 0x00, b""),
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_split_point_gives_need_data_then_the_same_header(sample):
    whole = header(sample)
    for cut in range(len(sample)):
        p = parser()
        first = p.feed(sample[:cut])
        assert first is NEED_DATA
        assert p.result is NEED_DATA
        assert p.feed(sample[cut:]) == whole
        assert p.leftover == b""


@pytest.mark.parametrize("sample", SAMPLES)
def test_byte_by_byte(sample):
    p = parser()
    results = [p.feed(sample[i : i + 1]) for i in range(len(sample))]
    assert all(r is NEED_DATA for r in results[:-1])
    assert results[-1] == header(sample)


@pytest.mark.parametrize("sample", SAMPLES)
def test_leftover_is_what_follows_the_header(sample):
    p = parser()
    h = p.feed(sample + b"a001 CAPABILITY\r\n")
    assert isinstance(h, ProxyHeader)
    assert h.length == len(sample)
    assert p.leftover == b"a001 CAPABILITY\r\n"
    # later input is appended; the result stays
    assert p.feed(b"a002 LOGOUT\r\n") == h
    assert p.leftover == b"a001 CAPABILITY\r\na002 LOGOUT\r\n"


def test_leftover_that_looks_like_another_header_is_not_parsed():
    p = parser()
    first = p.feed(b"PROXY UNKNOWN\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert isinstance(first, ProxyHeader)
    assert first.remote_ip == "192.0.2.99"
    assert p.leftover == b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"


def test_an_error_is_final():
    p = parser()
    e = p.feed(b"GET / HTTP/1.0\r\n")
    assert isinstance(e, HaproxyError)
    assert p.feed(b"PROXY UNKNOWN\r\n") is e
    assert p.result is e
    assert p.leftover == b""


def test_empty_feed_needs_data():
    assert parse(b"") is NEED_DATA
    assert parse(b"PRO") is NEED_DATA
    assert parse(V2_SIGNATURE[:7]) is NEED_DATA
    assert parse(V2_SIGNATURE + b"\x21\x11\x00") is NEED_DATA


# --- fuzzing --------------------------------------------------------------------------

_prefixes = st.sampled_from(
    [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE, *SAMPLES]
)


@given(
    prefix=_prefixes, tail=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6)
)
def test_fuzz_any_bytes_any_chunking(prefix, tail, cuts):
    data = prefix + tail
    one_shot = parse(data)
    assert isinstance(one_shot, ProxyHeader | NeedData | HaproxyError)
    p = parser()
    positions = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    result = NEED_DATA
    for start, end in itertools.pairwise(positions):
        result = p.feed(data[start:end])
    assert result == one_shot
    if isinstance(one_shot, ProxyHeader):
        assert 0 < one_shot.length <= MAX_HEADER_SIZE
        assert p.leftover == data[one_shot.length :]
        assert 0 < one_shot.remote_port <= 65535 or one_shot.remote_port == REAL["real_remote_port"]
        ipaddress.ip_address(one_shot.remote_ip)
        ipaddress.ip_address(one_shot.local_ip)
    elif isinstance(one_shot, HaproxyError):
        assert one_shot.reason.startswith(("haproxy:", "haproxy(v1):", "haproxy(v2):"))
        one_shot.log_line("1.2.3.4").encode("utf-8")


_tlv_bytes = st.builds(
    lambda kind, value: tlv(kind, value), st.integers(0, 255), st.binary(max_size=40)
)


@given(
    src=st.ip_addresses(v=4),
    dst=st.ip_addresses(v=4),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    tlvs=st.lists(_tlv_bytes, max_size=5),
    cn=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=30),
    client=st.integers(0, 255),
)
def test_fuzz_valid_v2_round_trip(src, dst, sport, dport, tlvs, cn, client):
    raw = b"".join(t for t in tlvs if t[0] not in (0x01, 0x02, 0x20))
    raw += ssl_tlv(client, tlv(0x22, cn.encode()))
    h = header(v2_tcp4(str(src), str(dst), sport, dport, raw))
    assert (h.remote_ip, h.local_ip, h.remote_port, h.local_port) == (
        str(src),
        str(dst),
        sport,
        dport,
    )
    assert h.ssl is bool(client & 1)
    assert h.ssl_cn == cn


@given(
    src=st.ip_addresses(v=6),
    dst=st.ip_addresses(v=6),
    sport=st.integers(1, 65535),
    dport=st.integers(1, 65535),
)
def test_fuzz_valid_v1_tcp6_round_trip(src, dst, sport, dport):
    h = header(f"PROXY TCP6 {src} {dst} {sport} {dport}\r\n".encode())
    assert ipaddress.ip_address(h.remote_ip) == src
    assert ipaddress.ip_address(h.local_ip) == dst
    assert (h.remote_port, h.local_port) == (sport, dport)
