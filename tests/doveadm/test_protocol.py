"""The doveadm API's request parser and the HTTP layer under it, without processes."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.doveadm import protocol
from proxyd.doveadm.commands import COMMANDS, PROXY_KICK, PROXY_LIST, proxy_list_rows, run_call
from proxyd.httpd import Request, Response, serve_connection
from proxyd.ipc.messages import WhoRow


def test_names_match_in_every_doveadm_spelling() -> None:
    for name in ("proxyKick", "proxy kick", "proxy-kick"):
        [call] = protocol.parse_request(json.dumps([[name, {"user": "a*"}, "t"]]).encode(), COMMANDS)
        assert call.command is PROXY_KICK
        assert call.params == {"user": ["a*"]}
    [call] = protocol.parse_request(b'[["proxykick", {}, "t"]]', COMMANDS)
    assert call.command is None


def test_parameters_are_typed() -> None:
    [call] = protocol.parse_request(b'[["proxyKick", {"host": 5, "user": ["a", "b"]}, "t"]]', COMMANDS)
    assert call.params == {"host": "5", "user": ["a", "b"]}
    assert not call.invalid
    [call] = protocol.parse_request(b'[["proxyKick", {"host": {"x": 1}}, "t"]]', COMMANDS)
    assert call.invalid
    [call] = protocol.parse_request(b'[["proxyKick", {"passdbField": "x"}, "t"]]', COMMANDS)
    assert call.invalid


def test_the_listing_is_camel_case() -> None:
    assert protocol.describe(COMMANDS) == [
        {"command": "proxyList", "parameters": []},
        {"command": "proxyKick", "parameters": [{"name": "host", "type": "string"}, {"name": "user", "type": "array"}]},
        {"command": "authCacheFlush", "parameters": [{"name": "user", "type": "array"}]},
    ]


def test_list_rows_are_dovecots_columns() -> None:
    rows = proxy_list_rows([WhoRow("u", "pop3", "::1", "::1:110", 3)])
    assert rows == [{"username": "u", "service": "pop3", "src-ip": "::1", "dest-ip": "::1", "dest-port": "110"}]


class _Node:
    def __init__(self) -> None:
        self.kicks: list[tuple[list[str], str | None]] = []

    async def who(self, mask: str) -> list[WhoRow]:
        return []

    async def kick(self, masks: Any, host: str | None = None) -> int:
        self.kicks.append((list(masks), host))
        return 2

    async def flush_cache(self, users: list[str]) -> int:
        return len(users)


async def test_kick_by_host_and_users() -> None:
    node = _Node()
    [call] = protocol.parse_request(b'[["proxyKick", {"host": "10.0.0.1", "user": ["a", "b*"]}, "x"]]', COMMANDS)
    assert await run_call(node, call, "127.0.0.1") == ["doveadmResponse", [{"count": "2"}], "x"]
    assert node.kicks == [(["a", "b*"], "10.0.0.1")]
    [call] = protocol.parse_request(b'[["authCacheFlush", {"user": ["a", "b"]}, "z"]]', COMMANDS)
    assert await run_call(node, call, "127.0.0.1") == ["doveadmResponse", [{"entries": "2"}], "z"]
    [call] = protocol.parse_request(b'[["proxyList", {}, "y"]]', COMMANDS)
    assert call.command is PROXY_LIST
    assert await run_call(node, call, "127.0.0.1") == ["doveadmResponse", [], "y"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_body_is_calls_or_a_bad_request(body: bytes) -> None:
    try:
        calls = protocol.parse_request(body, COMMANDS)
    except protocol.BadRequest as exc:
        text = str(exc)
        assert text
        return
    for call in calls:
        assert isinstance(call.tag, str)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["proxyList", "proxyKick", "proxy kick", "authCacheFlush", "nope"]),
            st.dictionaries(st.sampled_from(["user", "host", "socketPath"]), json_values, max_size=3),
            st.text(max_size=5),
        ),
        max_size=4,
    )
)
async def test_well_formed_requests_answer_every_command_in_order(commands: list[Any]) -> None:
    body = json.dumps([list(c) for c in commands]).encode()
    try:
        calls = protocol.parse_request(body, COMMANDS)
    except protocol.BadRequest:
        return  # e.g. an array parameter holding a number
    answers = [await run_call(_Node(), call, "127.0.0.1") for call in calls]
    assert [answer[2] for answer in answers] == [c[2] for c in commands]
    assert all(answer[0] in ("doveadmResponse", "error") for answer in answers)


# -- the HTTP layer ------------------------------------------------------------------------


async def _exchange(raw: bytes) -> bytes:
    client, server = trio.testing.memory_stream_pair()

    async def handler(request: Request) -> Response:
        return Response(200, "OK", request.method.encode() + b" " + request.body)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, "127.0.0.1", handler)
        await client.send_all(raw)
        await client.send_eof()
        data = b""
        while chunk := await client.receive_some(65536):
            data += chunk
    return data


async def test_http_request_and_chunked_body() -> None:
    answer = await _exchange(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nPOST abc")
    assert b"Connection: close" in answer


@pytest.mark.parametrize("raw", [b"\x00\x01garbage\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"])
async def test_http_garbage_is_a_400(raw: bytes) -> None:
    assert (await _exchange(raw)).startswith(b"HTTP/1.1 400 ")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
async def test_http_any_bytes_end_in_an_answer_or_a_close(raw: bytes) -> None:
    answer = await _exchange(b"POST / HTTP/1.1\r\nHost: a\r\n" + raw)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 ")


def test_a_body_too_large_gets_its_413_while_the_client_is_still_sending() -> None:
    """The 413 goes out as soon as the declared length is known; the client, still writing
    its body (urllib does, before it reads), must be able to finish and read the answer,
    not meet a reset from a socket closed with unread data."""
    body_size = 3 << 20

    async def handler(request: Request) -> Response:
        raise AssertionError(f"a body over the limit reaches no handler: {request.path}")

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def serve(stream: trio.SocketStream) -> None:
                await serve_connection(stream, "127.0.0.1", handler)

            nursery.start_soon(trio.serve_listeners, serve, listeners)
            answer = await trio.to_thread.run_sync(_post_slowly, port, body_size)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
            nursery.cancel_scope.cancel()

    trio.run(main)


def _post_slowly(port: int, body_size: int) -> bytes:
    """Headers and the first MiB, then wait for the early answer, then the rest; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /doveadm/v1 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % body_size)
        sock.sendall(b" " * (1 << 20))
        deadline = time.monotonic() + 10
        while not sock.recv(1, socket.MSG_PEEK):
            assert time.monotonic() < deadline
        time.sleep(0.2)  # the server has answered and, before lingering, closed
        sock.sendall(b" " * (body_size - (1 << 20)))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer
