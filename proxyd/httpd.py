"""A small HTTP/1.1 server for the admin listeners (doveadm HTTP API, metrics), on h11.

h11 does the protocol (framing, chunked bodies, header validation) sans-IO;
this module only moves bytes between it and a Trio stream.  One request per
connection, then ``Connection: close`` (Dovecot's doveadm server closes too),
a bounded body and a deadline per connection, and a bounded number of
connections at once: an admin listener must never be a way to wear the master
down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import h11
import trio

log = logging.getLogger("proxyd")

MAX_BODY: Final = 1 << 20
_MAX_HEADERS: Final = 16 << 10
_DEADLINE: Final = 30.0
_RECV: Final = 65536
#: after answering before the request's body was read (413): how long, and how much of
#: what the client is still sending, is read and dropped before the close
_LINGER: Final = 5.0
_LINGER_BYTES: Final = 16 << 20


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    #: the path without the query
    path: str
    query: str
    #: header names in lower case; a repeated header keeps its last value
    headers: dict[str, str]
    body: bytes
    remote_ip: str
    http_version: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)

    @classmethod
    def text(cls, status: int, reason: str, text: str | None = None) -> Response:
        """Dovecot's ``http_server_request_fail_text()``: the text (or the reason) and CRLF."""
        return cls(
            status,
            reason,
            ((text if text is not None else reason) + "\r\n").encode(),
            (("Content-Type", "text/plain; charset=utf-8"),),
        )


Handler = Callable[[Request], Awaitable[Response]]


async def serve_connection(stream: trio.abc.Stream, remote_ip: str, handler: Handler) -> None:
    """Read one request, answer it, close.  Never raises for anything the peer does."""
    try:
        with trio.move_on_after(_DEADLINE):
            await _serve(stream, remote_ip, handler)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _serve(stream: trio.abc.Stream, remote_ip: str, handler: Handler) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADERS)
    try:
        request = await _read_request(conn, stream, remote_ip)
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await _send(conn, stream, Response.text(exc.error_status_hint, "Bad Request"))
        return
    except _TooLarge:
        await _send(conn, stream, Response.text(413, "Payload Too Large"))
        await _linger(stream)
        return
    if request is None:
        return
    await _send(conn, stream, await handler(request), head_only=request.method == "HEAD")


class _TooLarge(Exception):
    pass


async def _linger(stream: trio.abc.Stream) -> None:
    """Read and drop what the client still sends after an early answer, for a while (as
    nginx's lingering close): closed with unread data, the socket would answer the
    client's next bytes with a reset, and a client still writing its body (most do before
    they read) would see a broken connection instead of the answer already sent."""
    with trio.move_on_after(_LINGER):
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        dropped = 0
        while dropped < _LINGER_BYTES and (data := await stream.receive_some(_RECV)):
            dropped += len(data)


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream, remote_ip: str) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECV)
            conn.receive_data(bytes(data))  # b"" is EOF
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            head = event
            declared = _content_length(event)
            if declared is not None and declared > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = head.target.decode("ascii", "replace")
            path, _, query = target.partition("?")
            return Request(
                method=head.method.decode("ascii", "replace"),
                path=path,
                query=query,
                headers={name.decode().lower(): value.decode("latin-1") for name, value in head.headers},
                body=bytes(body),
                remote_ip=remote_ip,
                http_version=head.http_version.decode("ascii", "replace"),
            )


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, response: Response, *, head_only: bool = False
) -> None:
    headers = [(name.encode(), value.encode()) for name, value in response.headers]
    headers.append((b"Content-Length", str(len(response.body)).encode()))
    headers.append((b"Connection", b"close"))
    try:
        head = h11.Response(status_code=response.status, reason=response.reason.encode(), headers=headers)
        data = conn.send(head) or b""
        if response.body and not head_only:
            data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError as exc:  # e.g. a response to a HEAD request with a body
        log.error("HTTP response could not be sent: %s", exc)
        return
    await stream.send_all(data)


async def serve_listener(
    listener: trio.SocketListener,
    handler: Handler,
    *,
    max_connections: int = 16,
    wrap: Callable[[trio.SocketStream], trio.abc.Stream] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever; at ``max_connections`` new ones wait in the backlog."""
    limiter = trio.CapacityLimiter(max_connections)

    async def one(stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            remote_ip = str(peer[0]) if isinstance(peer, tuple) else ""
            served: trio.abc.Stream = wrap(stream) if wrap is not None else stream
            await serve_connection(served, remote_ip, handler)
        finally:
            limiter.release_on_behalf_of(stream)

    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream = await listener.accept()
            await limiter.acquire_on_behalf_of(stream)
            nursery.start_soon(one, stream)
