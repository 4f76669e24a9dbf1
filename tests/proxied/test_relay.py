"""The post-login relay: zero-copy splice between sockets, a plain pump with any other stream."""

from __future__ import annotations

import os
import socket

import trio
import trio.testing

from proxyd.proxied.relay import relay


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    a = await trio.open_tcp_stream("127.0.0.1", port)
    b = await listeners[0].accept()
    await listeners[0].aclose()
    assert isinstance(b, trio.SocketStream)
    return a, b


async def _drain(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(1 << 20)
        assert chunk, "closed early"
        data += chunk
    return bytes(data)


async def test_splice_relay_moves_bytes_both_ways_and_counts_them() -> None:
    client_far, client_near = await _tcp_pair()
    server_near, server_far = await _tcp_pair()
    upload, download = os.urandom(3_000_000), os.urandom(5_000_000)
    async with trio.open_nursery() as nursery:
        stats_box: list[object] = []

        async def run_relay() -> None:
            stats_box.append(
                await relay(client_near, server_near, client_pending=b"PIPELINED ", server_pending=b"TRAILING ")
            )

        nursery.start_soon(run_relay)
        nursery.start_soon(client_far.send_all, upload)
        nursery.start_soon(server_far.send_all, download)
        with trio.fail_after(20):
            got_down = await _drain(client_far, len(download) + 9)
            got_up = await _drain(server_far, len(upload) + 10)
        assert got_down == b"TRAILING " + download
        assert got_up == b"PIPELINED " + upload
        await server_far.aclose()  # the backend hangs up: the whole relay ends
    stats = stats_box[0]
    assert stats.closed_by == "server"  # type: ignore[attr-defined]
    assert stats.client_to_server == len(upload) + 10  # type: ignore[attr-defined]
    assert stats.server_to_client == len(download) + 9  # type: ignore[attr-defined]
    await client_near.aclose()  # the session closes both sides after the relay
    await server_near.aclose()
    assert await client_far.receive_some(10) == b""  # the client sees the close
    await client_far.aclose()


async def test_small_messages_both_ways_and_the_eof() -> None:
    """The many small exchanges of a session (the hub's read-and-write path), in order."""
    client_far, client_near = await _tcp_pair()
    server_near, server_far = await _tcp_pair()
    async with trio.open_nursery() as nursery:
        stats_box: list[object] = []

        async def run_relay() -> None:
            stats_box.append(await relay(client_near, server_near))

        nursery.start_soon(run_relay)
        with trio.fail_after(20):
            for i in range(200):
                await client_far.send_all(b"a%d NOOP\r\n" % i)
                assert await _drain(server_far, len(b"a%d NOOP\r\n" % i)) == b"a%d NOOP\r\n" % i
                await server_far.send_all(b"a%d OK NOOP completed.\r\n" % i)
                reply = b"a%d OK NOOP completed.\r\n" % i
                assert await _drain(client_far, len(reply)) == reply
            await client_far.send_eof()
            assert await server_far.receive_some(10) == b""  # the client's EOF goes on
    stats = stats_box[0]
    assert stats.closed_by == "client"  # type: ignore[attr-defined]
    sent = sum(len(b"a%d NOOP\r\n" % i) for i in range(200))
    assert stats.client_to_server == sent  # type: ignore[attr-defined]
    for s in (client_far, client_near, server_near, server_far):
        await s.aclose()


async def test_a_slow_reader_throttles_its_writer_and_nothing_is_lost() -> None:
    """Small socket buffers on the backend side: writes fall short, the relay holds the rest
    and waits for the reader (also across the hand-over to a task per direction)."""
    client_far, client_near = await _tcp_pair()
    server_near, server_far = await _tcp_pair()
    server_near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    server_far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    upload = os.urandom(1_000_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay, client_near, server_near)

        async def send_in_pieces() -> None:
            # small pieces first (the hub's path: reads below BULK, writes that fall short),
            # then the rest at once (a bulk read: the hand-over, with what the hub holds)
            for start in range(0, 200_000, 20_000):
                await client_far.send_all(upload[start : start + 20_000])
                await trio.sleep(0.002)
            await client_far.send_all(upload[200_000:])

        nursery.start_soon(send_in_pieces)
        got = bytearray()
        with trio.fail_after(30):
            await trio.sleep(0.05)  # the reader starts late: the buffers fill, writes fall short
            while len(got) < len(upload):
                got += await server_far.receive_some(65536)
        assert bytes(got) == upload
        await server_far.aclose()
    for s in (client_far, client_near, server_near):
        await s.aclose()


async def test_pump_relay_for_non_socket_streams() -> None:
    client_far, client_near = trio.testing.memory_stream_pair()
    server_near, server_far = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay, client_near, server_near)
        await client_far.send_all(b"a NOOP\r\n")
        assert await server_far.receive_some(100) == b"a NOOP\r\n"
        await server_far.send_all(b"a OK\r\n")
        assert await client_far.receive_some(100) == b"a OK\r\n"
        await client_far.send_eof()
    # relay returned on the client's EOF
