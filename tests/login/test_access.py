"""check_access(): the login side of login_access_sockets, over real UNIX sockets and TCP clients."""

from __future__ import annotations

import array
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio

from proxyd.access.server import serve_tcpwrap
from proxyd.login.access import check_access


async def tcp_pair(client_host: str = "127.0.0.1"):
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await client.bind((client_host, 0))
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    listener.close()
    return client, server


@dataclass
class FakeService:
    """An access service that records what it got and answers with ``reply``."""

    path: str
    #: bytes to send, or a coroutine function run instead (to stall, to close early)
    reply: bytes | Callable[[], Awaitable[None]]
    requests: list[tuple[bytes, str]] = field(default_factory=list)

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            await listener.bind(self.path)
            listener.listen(8)
            task_status.started()
            while True:
                conn, _ = await listener.accept()
                with conn:
                    data, ancdata, _, _ = await conn.recvmsg(1024, socket.CMSG_SPACE(4))
                    fds = [fd for _, _, raw in ancdata for fd in array.array("i", raw)]
                    peer = ""
                    for fd in fds:
                        with socket.socket(fileno=fd) as passed:
                            peer = passed.getpeername()[0]
                    self.requests.append((data, peer))
                    if isinstance(self.reply, bytes):
                        await conn.send(self.reply)
                    else:
                        await self.reply()


@pytest.fixture
def start_fake(tmp_path, nursery):
    async def start(name: str, reply: bytes | Callable[[], Awaitable[None]]) -> FakeService:
        fake = FakeService(str(tmp_path / name), reply)
        await nursery.start(fake.serve)
        return fake

    return start


async def test_all_sockets_must_allow(start_fake, caplog):
    caplog.set_level(logging.INFO)
    first = await start_fake("first", b"1\n")
    second = await start_fake("second", b"1\n")
    client, server = await tcp_pair("127.0.0.9")
    with client, server:
        assert await check_access([first.path, second.path], "imap", server.fileno())
    assert first.requests == [(b"imap\n", "127.0.0.9")]
    assert second.requests == [(b"imap\n", "127.0.0.9")]
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


async def test_a_refusal_stops_at_that_socket(start_fake, caplog):
    caplog.set_level(logging.INFO)
    first = await start_fake("first", b"0\n")
    second = await start_fake("second", b"1\n")
    client, server = await tcp_pair("127.0.0.9")
    with client, server:
        assert not await check_access([first.path, second.path], "pop3", server.fileno())
    assert first.requests == [(b"pop3\n", "127.0.0.9")]
    assert second.requests == []
    assert caplog.messages == [f"access({first.path}): Client refused (rip=127.0.0.9)"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", None),  # the service hung up
        (b"1", "Invalid input"),
        (b"1\nx", "Invalid input"),
        (b"yes", "Invalid input"),
        (b"2\n", "Invalid input"),
    ],
)
async def test_anything_but_one_newline_refuses(start_fake, caplog, reply, error):
    caplog.set_level(logging.INFO)
    fake = await start_fake("svc", reply)
    client, server = await tcp_pair()
    with client, server:
        assert not await check_access(
            ["svc"], "imap", server.fileno(), base_dir=os.path.dirname(fake.path)
        )
    expected = [] if error is None else [f"access(svc): {error}"]
    assert caplog.messages == [*expected, "access(svc): Client refused (rip=127.0.0.1)"]


async def test_no_reply_times_out(start_fake, caplog):
    caplog.set_level(logging.INFO)
    fake = await start_fake("svc", trio.sleep_forever)
    client, server = await tcp_pair()
    with client, server, trio.fail_after(5):
        assert not await check_access([fake.path], "imap", server.fileno(), timeout=0.2)
    assert caplog.messages == [
        f"access({fake.path}): Timed out while waiting for reply",
        f"access({fake.path}): Client refused (rip=127.0.0.1)",
    ]


async def test_unreachable_socket_drops_the_client_without_a_refusal_line(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    client, server = await tcp_pair()
    with client, server:
        missing = str(tmp_path / "nothing-here")
        assert not await check_access([missing], "imap", server.fileno())
    assert caplog.messages == [f"connect({missing}) failed: No such file or directory"]


async def test_client_hanging_up_during_the_lookup(start_fake, caplog):
    caplog.set_level(logging.INFO)
    fake = await start_fake("svc", trio.sleep_forever)
    client, server = await tcp_pair()
    with server:
        async with trio.open_nursery() as nursery:

            async def hang_up() -> None:
                await trio.sleep(0.1)
                client.close()

            nursery.start_soon(hang_up)
            with trio.fail_after(5):
                assert not await check_access(
                    [fake.path], "imap", server.fileno(), remote_ip="192.0.2.1"
                )
    assert caplog.messages == [
        f"access({fake.path}): Client disconnected during lookup (rip=192.0.2.1)"
    ]


async def test_client_input_during_the_lookup_is_left_alone(start_fake):
    async def slow_yes() -> None:
        await trio.sleep(0.2)

    fake = await start_fake("svc", slow_yes)
    fake_yes = await start_fake("yes", b"1\n")
    client, server = await tcp_pair()
    with client, server:
        await client.send(b"a1 CAPABILITY\r\n")
        # the slow service closes without "1\n": refused, but only after its answer
        with trio.fail_after(5):
            assert not await check_access([fake.path], "imap", server.fileno())
            assert await check_access([fake_yes.path], "imap", server.fileno())
        # nothing was read from the client
        assert await server.recv(100) == b"a1 CAPABILITY\r\n"


async def test_no_sockets_means_allowed():
    client, server = await tcp_pair()
    with client, server:
        assert await check_access([], "imap", server.fileno())


async def test_against_the_tcpwrap_service(tmp_path, nursery, caplog):
    caplog.set_level(logging.INFO)
    allow, deny = tmp_path / "hosts.allow", tmp_path / "hosts.deny"
    allow.write_text("imap: 127.0.0.21\n")
    deny.write_text("ALL: ALL\n")
    await nursery.start(serve_tcpwrap, str(tmp_path / "tcpwrap"), str(allow), str(deny))
    for host, expected in (("127.0.0.21", True), ("127.0.0.22", False)):
        client, server = await tcp_pair(host)
        with client, server:
            result = await check_access(
                ["tcpwrap"], "imap", server.fileno(), base_dir=str(tmp_path)
            )
            assert result is expected
            # the client's connection is untouched and still ours
            await client.send(b"x")
            assert await server.recv(1) == b"x"
    assert caplog.messages == ["access(tcpwrap): Client refused (rip=127.0.0.22)"]
