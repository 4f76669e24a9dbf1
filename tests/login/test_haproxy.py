"""read_proxy_header() over real loopback TCP connections."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import struct

import pytest
import trio
import trustme

from proxyd.login.haproxy import HaproxyRejected, is_trusted, read_proxy_header
from proxyd.protocols.haproxy import V2_SIGNATURE

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(client side, accepted server side) of one loopback connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(server, trio.SocketStream)
    return client, server


def v2_tcp4_ssl(cn: bytes) -> bytes:
    block = bytes([10, 1, 2, 3, 10, 9, 9, 9]) + struct.pack("!HH", 5555, 993)
    sub = bytes([0x22]) + struct.pack("!H", len(cn)) + cn
    ssl_value = b"\x01" + b"\0\0\0\0" + sub
    tlvs = bytes([0x20]) + struct.pack("!H", len(ssl_value)) + ssl_value
    body = block + tlvs
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


async def test_v1_header_is_consumed_exactly_and_the_rest_stays_on_the_socket():
    client, server = await tcp_pair()
    async with client, server:
        await client.send_all(b"PROXY TCP4 198.51.100.7 203.0.113.5 56324 143\r\na1 CAPABILITY\r\n")
        with trio.fail_after(5):
            header, leftover = await read_proxy_header(server, "127.0.0.1", LOOPBACK)
            assert leftover == b""
            assert (header.remote_ip, header.remote_port) == ("198.51.100.7", 56324)
            assert (header.local_ip, header.local_port) == ("203.0.113.5", 143)
            assert await server.receive_some(100) == b"a1 CAPABILITY\r\n"


async def test_v2_header_split_over_several_segments():
    data = v2_tcp4_ssl(b"alice")
    client, server = await tcp_pair()
    async with client, server, trio.open_nursery() as nursery:

        async def trickle() -> None:
            for piece in (data[:5], data[5:17], data[17:30], data[30:] + b"tail"):
                await client.send_all(piece)
                await trio.sleep(0.02)

        nursery.start_soon(trickle)
        with trio.fail_after(5):
            header, _ = await read_proxy_header(server, "127.0.0.1", LOOPBACK)
            assert (header.remote_ip, header.local_ip) == ("10.1.2.3", "10.9.9.9")
            assert (header.ssl, header.ssl_cn) == (True, "alice")
            assert await server.receive_some(100) == b"tail"


async def test_unknown_and_local_keep_the_socket_addresses():
    for data in (b"PROXY UNKNOWN\r\n", V2_SIGNATURE + b"\x20\x00\x00\x00"):
        client, server = await tcp_pair()
        async with client, server:
            await client.send_all(data)
            cport = client.socket.getsockname()[1]
            sport = server.socket.getsockname()[1]
            with trio.fail_after(5):
                header, _ = await read_proxy_header(server, "127.0.0.1", LOOPBACK)
            assert (header.remote_ip, header.remote_port) == ("127.0.0.1", cport)
            assert (header.local_ip, header.local_port) == ("127.0.0.1", sport)


async def test_implicit_tls_after_the_header():
    """The ClientHello that follows the header is left for the TLS layer."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client, server = await tcp_pair()
    async with trio.open_nursery() as nursery:

        async def client_side() -> None:
            # header and handshake back to back, as a proxy with send-proxy and ssl does
            await client.send_all(b"PROXY TCP4 192.0.2.5 192.0.2.6 1111 993\r\n")
            tls = trio.SSLStream(client, client_ctx, server_hostname="127.0.0.1")
            await tls.send_all(b"a1 NOOP\r\n")
            assert await tls.receive_some(100) == b"* OK\r\n"
            await tls.aclose()

        nursery.start_soon(client_side)
        with trio.fail_after(10):
            header, leftover = await read_proxy_header(server, "127.0.0.1", LOOPBACK)
            assert (header.remote_ip, leftover) == ("192.0.2.5", b"")
            tls_server = trio.SSLStream(server, server_ctx, server_side=True)
            assert await tls_server.receive_some(100) == b"a1 NOOP\r\n"
            await tls_server.send_all(b"* OK\r\n")
            await tls_server.aclose()


async def test_untrusted_peer_is_refused_before_reading():
    client, server = await tcp_pair()
    async with client, server:
        await client.send_all(b"PROXY UNKNOWN\r\n")
        with pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", [ipaddress.ip_network("10.0.0.0/8")])
        assert info.value.log_line == "haproxy: Client not trusted (rip=127.0.0.1)"
        assert info.value.level == logging.WARNING
        with pytest.raises(HaproxyRejected):
            await read_proxy_header(server, "127.0.0.1", [])
        # nothing was taken off the socket
        assert await server.receive_some(100) == b"PROXY UNKNOWN\r\n"


async def test_timeout():
    client, server = await tcp_pair()
    async with client, server:
        await client.send_all(b"PROXY TCP4 1.2.3.4")
        with trio.fail_after(5), pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", LOOPBACK, timeout=0.3)
        assert info.value.log_line == "haproxy: Client timed out (rip=127.0.0.1)"
        assert info.value.level == logging.ERROR


async def test_silent_client_times_out():
    client, server = await tcp_pair()
    async with client, server:
        with trio.fail_after(5), pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", LOOPBACK, timeout=0.2)
        assert "timed out" in info.value.log_line


async def test_bad_header_is_rejected_with_dovecots_line():
    client, server = await tcp_pair()
    async with client, server:
        await client.send_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 143\r\n")
        with trio.fail_after(5), pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", LOOPBACK)
        assert info.value.log_line == (
            "haproxy(v1): Client disconnected: Proxied remote port is invalid "
            "(port=`0', rip=127.0.0.1)"
        )
        assert info.value.level == logging.ERROR


async def test_plain_imap_client_on_a_haproxy_listener_is_rejected():
    client, server = await tcp_pair()
    async with client, server:
        await client.send_all(b"a1 LOGIN alice secret\r\n")
        with trio.fail_after(5), pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", LOOPBACK)
        assert "Failed to read valid HAproxy data" in info.value.log_line
        assert "secret" not in info.value.log_line


async def test_client_leaving_mid_header():
    client, server = await tcp_pair()
    async with server:
        await client.send_all(V2_SIGNATURE + b"\x21\x11\x00\x0c\x01")
        await client.aclose()
        with trio.fail_after(5), pytest.raises(HaproxyRejected) as info:
            await read_proxy_header(server, "127.0.0.1", LOOPBACK)
        assert info.value.log_line == (
            "haproxy: Client disconnected (rip=127.0.0.1): Connection reset by peer"
        )
        assert info.value.level == logging.INFO


def test_is_trusted():
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert is_trusted("10.1.2.3", nets)
    assert is_trusted("::ffff:10.1.2.3", nets)
    assert is_trusted("2001:db8::5", nets)
    assert not is_trusted("11.0.0.1", nets)
    assert not is_trusted("::1", nets)
    assert not is_trusted("not an ip", nets)
    assert not is_trusted("10.1.2.3", [])
