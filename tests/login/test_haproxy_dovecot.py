"""The PROXY header parser against Dovecot 2.3 itself.

A real Dovecot gets an ``inet_listener`` with ``haproxy = yes``; every sample
header is sent to it in one segment (Dovecot needs that) and to our parser.
Both must accept or reject it; for accepted headers Dovecot's log must show the
addresses our parser found, for rejected ones Dovecot's error line must be the
one we produce.  Each sample connects from its own loopback address so its log
lines can be told apart.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass

import pytest

from proxyd.protocols.haproxy import V2_SIGNATURE, HaproxyError, HaproxyParser, ProxyHeader
from tests.fixtures.dovecot import DovecotBackend, DovecotFactory
from tests.fixtures.net import free_port

pytestmark = pytest.mark.e2e

ADDRESS = "127.0.0.6"


@pytest.fixture(scope="module")
def dovecot(dovecot_factory: DovecotFactory) -> tuple[DovecotBackend, int]:
    port = free_port(ADDRESS)
    extra = f"""
haproxy_trusted_networks = 127.0.0.0/8
service imap-login {{
  inet_listener imap_haproxy {{
    address = {ADDRESS}
    port = {port}
    haproxy = yes
  }}
}}
"""
    return dovecot_factory.start("haproxy-ref", ADDRESS, extra_config=extra), port


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", n) + body


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!HH", sport, dport)
    )


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    #: False where Dovecot rejects without a log line of its own
    logged: bool = True


SAMPLES = [
    # accepted
    Sample("v1-tcp4", b"PROXY TCP4 198.51.100.1 203.0.113.1 50001 143\r\n"),
    Sample("v1-tcp6", b"PROXY TCP6 2001:db8::2 2001:db8::1 50002 143\r\n"),
    Sample("v1-tcp6-mapped", b"PROXY TCP6 ::ffff:198.51.100.3 ::1 50003 143\r\n"),
    Sample("v1-unknown", b"PROXY UNKNOWN\r\n"),
    Sample("v1-unknown-junk", b"PROXY UNKNOWN whatever 1 2 3\r\n"),
    Sample("v1-nul", b"PROXY UNKNOWN\0junk\r\n"),
    Sample("v1-decimal-zeros", b"PROXY TCP4 010.1.1.4 203.0.113.1 00080 0143\r\n"),
    Sample("v1-inet-aton", b"PROXY TCP4 10.5 0x7f.0.0.1 50005 143\r\n"),
    Sample("v2-tcp4", v2(0x21, 0x11, inet4("198.51.100.6", "203.0.113.6", 50006, 993))),
    Sample("v2-tcp6", v2(0x21, 0x21, inet6("2001:db8::7", "2001:db8::1", 50007, 993))),
    Sample("v2-local", v2(0x20, 0x00, b"")),
    Sample("v2-local-junk", v2(0x20, 0x11, b"\xff" * 12 + b"\x20\x00")),
    Sample(
        "v2-tlvs",
        v2(
            0x21,
            0x11,
            inet4("198.51.100.9", "203.0.113.9", 50009, 993)
            + tlv(0x02, b"imap.example.com")
            + tlv(0x20, b"\x01\0\0\0\0" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice"))
            + tlv(0x04, b"\0\0")
            + tlv(0xE1, b"custom"),
        ),
    ),
    Sample("v2-unspec-stream", v2(0x21, 0x01, b"")),
    # rejected
    Sample("v1-port-0", b"PROXY TCP4 198.51.100.1 203.0.113.1 0 143\r\n"),
    Sample("v1-port-big", b"PROXY TCP4 198.51.100.1 203.0.113.1 1 65536\r\n"),
    Sample("v1-no-proto", b"PROXY\r\n"),
    Sample("v1-no-proto-nul", b"PROXY\0\r\n"),
    Sample("v1-empty-proto", b"PROXY \r\n"),
    Sample("v1-no-dst", b"PROXY TCP4 198.51.100.1\r\n"),
    Sample("v1-no-sport", b"PROXY TCP4 198.51.100.1 203.0.113.1\r\n"),
    Sample("v1-no-dport", b"PROXY TCP4 198.51.100.1 203.0.113.1 1\r\n"),
    Sample("v1-extra", b"PROXY TCP4 198.51.100.1 203.0.113.1 1 2 3\r\n"),
    Sample("v1-trailing-space", b"PROXY TCP4 198.51.100.1 203.0.113.1 1 2 \r\n"),
    Sample("v1-double-space", b"PROXY  TCP4 198.51.100.1 203.0.113.1 1 2\r\n"),
    Sample("v1-udp", b"PROXY UDP4 198.51.100.1 203.0.113.1 1 2\r\n"),
    Sample("v1-family", b"PROXY TCP4 2001:db8::1 203.0.113.1 1 2\r\n"),
    Sample("v1-bad-local", b"PROXY TCP6 2001:db8::1 203.0.113.1 1 2\r\n"),
    Sample("v1-cr-alone", b"PROXY UNKNOWN\rX\n", logged=False),
    Sample("v2-version", v2(0x11, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2))),
    Sample("v2-command", v2(0x2F, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2))),
    Sample("v2-unspec", v2(0x21, 0x00, b"")),
    Sample("v2-udp", v2(0x21, 0x12, inet4("1.1.1.1", "2.2.2.2", 1, 2))),
    Sample("v2-short-ipv4", v2(0x21, 0x11, b"\0" * 11)),
    Sample("v2-short-ipv6", v2(0x21, 0x21, b"\0" * 35)),
    Sample("v2-family-5", v2(0x21, 0x51, b"\0" * 12)),
    Sample("v2-too-long", v2(0x21, 0x11, b"\0" * 1485)),
    Sample("v2-tlv-cut", v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2) + b"\x02\x00")),
    Sample(
        "v2-tlv-len",
        v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2) + tlv(4, b"") + b"\x02\x00\x09ab"),
    ),
    Sample(
        "v2-ssl-short", v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2) + tlv(0x20, b"\x01\0"))
    ),
    Sample(
        "v2-ssl-sub-cut",
        v2(
            0x21,
            0x11,
            inet4("1.1.1.1", "2.2.2.2", 1, 2) + tlv(0x20, b"\x01\0\0\0\0" + b"\x22\x00\x05ab"),
        ),
    ),
    Sample("not-proxy", b"a1 LOGIN alice secret\r\n"),
]


def exchange(source: str, port: int, data: bytes) -> bytes:
    """Send ``data`` in one segment from ``source``; return what Dovecot says first (b"" = closed)."""
    with socket.create_connection((ADDRESS, port), timeout=10, source_address=(source, 0)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(data)
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("index", range(len(SAMPLES)), ids=[s.name for s in SAMPLES])
def test_same_verdict_and_texts_as_dovecot(dovecot, index):
    backend, port = dovecot
    sample = SAMPLES[index]
    source = f"127.0.0.{40 + index}"
    ours = HaproxyParser(
        real_remote_ip=source, real_remote_port=1, real_local_ip=ADDRESS, real_local_port=port
    ).feed(sample.data)
    answer = exchange(source, port, sample.data)
    if isinstance(ours, ProxyHeader):
        assert answer.startswith(b"* OK"), answer
        # Dovecot logs the addresses it took from the header when the client leaves
        lines = backend.wait_for_log(
            rf"imap-login: Info: Disconnected:.* rip={re.escape(ours.remote_ip)}, lip={re.escape(ours.local_ip)}[,)]"
        )
        assert lines
        if sample.name == "v2-tlvs":
            assert all("secured" in line or "TLS" in line for line in lines), lines
    else:
        assert isinstance(ours, HaproxyError)
        assert answer == b"", answer
        if sample.logged:
            backend.wait_for_log(re.escape(f"imap-login: Error: {ours.log_line(source)}") + "$")
