"""The tcpwrap service over a real UNIX socket, judging real loopback TCP connections."""

from __future__ import annotations

import array
import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from proxyd.access import server as tcpwrap
from proxyd.access.server import serve_tcpwrap


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.allow = root / "hosts.allow"
        self.deny = root / "hosts.deny"
        self.socket_path = str(root / "tcpwrap")

    def rules(self, allow: str | None, deny: str | None) -> None:
        for path, text in ((self.allow, allow), (self.deny, deny)):
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text)

    async def ask(self, request: bytes = b"imap\n", fd: int | None = None) -> bytes:
        """Send ``request`` (with ``fd`` attached) and return everything the service answers."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            await sock.connect(self.socket_path)
            ancdata = []
            if fd is not None:
                ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
            await sock.sendmsg([request], ancdata)
            reply = b""
            with trio.fail_after(5):
                while chunk := await sock.recv(100):
                    reply += chunk
            return reply


@pytest.fixture
async def rig(tmp_path, nursery):
    r = Rig(tmp_path)
    await nursery.start(serve_tcpwrap, r.socket_path, str(r.allow), str(r.deny))
    return r


async def tcp_pair(host: str = "127.0.0.1", client_host: str | None = None):
    """(client socket, accepted server socket, listener port) of one loopback connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = trio.socket.socket(family, socket.SOCK_STREAM)
    await listener.bind((host, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = trio.socket.socket(family, socket.SOCK_STREAM)
    if client_host is not None:
        await client.bind((client_host, 0))
    await client.connect((host, port))
    server, _ = await listener.accept()
    listener.close()
    return client, server, port


async def test_allowed_and_refused(rig):
    client, server, _ = await tcp_pair()
    with client, server:
        rig.rules("imap: 127.0.0.1\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
        assert await rig.ask(b"pop3\n", server.fileno()) == b"0\n"
        rig.rules(None, "imap: 127.0.0.0/8\n")  # re-read for every lookup
        assert await rig.ask(b"imap\n", server.fileno()) == b"0\n"
        assert await rig.ask(b"pop3\n", server.fileno()) == b"1\n"
        rig.rules(None, None)
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"


async def test_client_address_comes_from_the_passed_socket(rig):
    client, server, _ = await tcp_pair(client_host="127.0.0.7")
    with client, server:
        rig.rules("imap: 127.0.0.7\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
    other, server2, _ = await tcp_pair(client_host="127.0.0.8")
    with other, server2:
        assert await rig.ask(b"imap\n", server2.fileno()) == b"0\n"


async def test_server_address_and_port_patterns(rig):
    client, server, port = await tcp_pair()
    with client, server:
        rig.rules(f"{port}: ALL\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
        rig.rules(f"{port + 1}: ALL\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"0\n"
        rig.rules("imap@127.0.0.1: ALL\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
        rig.rules("imap@127.0.0.2: ALL\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"0\n"


async def test_ipv6_client(rig):
    try:
        client, server, _ = await tcp_pair("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with client, server:
        rig.rules("imap: [::1]\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
        rig.rules("imap: [::2]/128\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", server.fileno()) == b"0\n"


async def test_the_received_socket_is_closed_by_the_service(rig):
    client, server, _ = await tcp_pair()
    with client:
        rig.rules(None, None)
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
        server.close()  # our copy; the client sees EOF only if the service closed its copy too
        with trio.fail_after(5):
            assert await client.recv(10) == b""


async def test_invalid_requests_get_no_answer(rig, caplog):
    client, server, _ = await tcp_pair()
    with client, server:
        rig.rules(None, None)
        assert await rig.ask(b"imap", server.fileno()) == b""  # no newline
        assert await rig.ask(b"\n", server.fileno()) == b""  # empty daemon name
        assert await rig.ask(b"i" * 1023 + b"\n", server.fileno()) == b""  # does not fit
        assert await rig.ask(b"i" * 1022 + b"\n", server.fileno()) == b"1\n"
    assert caplog.messages.count("Invalid input from client") == 3


async def test_request_without_a_socket_judges_an_unknown_address(rig):
    rig.rules("imap: 127.0.0.1\n", "ALL EXCEPT pop3: ALL\n")
    assert await rig.ask(b"imap\n") == b"0\n"
    assert await rig.ask(b"pop3\n") == b"1\n"
    rig.rules("imap: UNKNOWN\n", "ALL: ALL\n")
    assert await rig.ask(b"imap\n") == b"1\n"


async def test_a_passed_pipe_is_not_a_client_socket(rig):
    read_end, write_end = os.pipe()
    try:
        rig.rules("imap: 127.0.0.1\n", "ALL: ALL\n")
        assert await rig.ask(b"imap\n", read_end) == b"0\n"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_silent_client_is_dropped(rig, monkeypatch):
    monkeypatch.setattr(tcpwrap, "INPUT_TIMEOUT", 0.2)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.connect(rig.socket_path)
        with trio.fail_after(5):
            assert await sock.recv(10) == b""


async def test_lookups_run_side_by_side(rig):
    pairs = [await tcp_pair(client_host=f"127.0.0.{10 + i}") for i in range(8)]
    rig.rules("imap: 127.0.0.10 127.0.0.12 127.0.0.14 127.0.0.16\n", "ALL: ALL\n")
    answers: dict[int, bytes] = {}

    async def one(i: int, fd: int) -> None:
        answers[i] = await rig.ask(b"imap\n", fd)

    async with trio.open_nursery() as nursery:
        for i, (_, server, _) in enumerate(pairs):
            nursery.start_soon(one, i, server.fileno())
    assert answers == {i: b"1\n" if i % 2 == 0 else b"0\n" for i in range(8)}
    for client, server, _ in pairs:
        client.close()
        server.close()


async def test_socket_file_lifecycle(tmp_path):
    path = tmp_path / "tcpwrap"
    # a stale socket from an earlier run is replaced
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_tcpwrap, str(path), "/nonexistent/a", "/nonexistent/d")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        nursery.cancel_scope.cancel()
    assert not path.exists()  # removed when the service stops
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_tcpwrap(str(path), mode=0o666, task_status=task_status)
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        nursery.cancel_scope.cancel()
    # anything that is not a socket is left alone
    path.write_text("not a socket")
    with pytest.raises(OSError):
        await serve_tcpwrap(str(path))
    assert path.read_text() == "not a socket"


async def test_an_internal_error_costs_one_lookup_not_the_service(rig, monkeypatch, caplog):
    calls = []
    real_decide = tcpwrap.decide

    def flaky_decide(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return real_decide(*args)

    monkeypatch.setattr(tcpwrap, "decide", flaky_decide)
    client, server, _ = await tcp_pair()
    with client, server:
        rig.rules(None, None)
        assert await rig.ask(b"imap\n", server.fileno()) == b""  # no answer: the asker refuses
        assert await rig.ask(b"imap\n", server.fileno()) == b"1\n"
    assert "Internal error in tcpwrap lookup" in caplog.messages
