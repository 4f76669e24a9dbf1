"""The framing of proxyd's control sockets: one JSON object per line.

The codec is sans-IO (``encode`` / ``MessageDecoder``) so it is testable without
processes; ``Channel`` is the thin trio wrapper used on both ends.  A channel
sends records of one set and reads records of another: ``Channel[Out, In]``
takes the function that turns a decoded line into an ``In`` record
(``messages.read_command``, ``messages.read_report``, ...), which raises
``ControlError`` for a line that is no such record.  Nothing here ever carries a
password except the auth socket's requests, which never go through a log.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

import trio

MAX_MESSAGE: Final = 1 << 20


async def send_in_turn(lock: trio.Lock, stream: trio.abc.SendStream, data: bytes) -> None:
    """``stream.send_all(data)`` after any send already under way on ``lock`` has ended.

    The lock is taken without the checkpoint of ``async with``: an uncontended send (nearly
    every one) costs no extra trip through the scheduler; ``send_all`` is the checkpoint.
    """
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()
    try:
        await stream.send_all(data)
    finally:
        lock.release()


class ControlError(Exception):
    """The peer sent something that is not a message."""


class Record(Protocol):
    """A message record: it knows its JSON form."""

    def wire(self) -> Mapping[str, Any]: ...


Out = TypeVar("Out", bound=Record, contravariant=True)
In = TypeVar("In", covariant=True)


def encode(message: Mapping[str, Any]) -> bytes:
    """One JSON object as one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_object(data: bytes) -> dict[str, Any]:
    """One JSON object; raises ``ControlError`` for anything else."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ControlError("invalid control message") from exc
    if not isinstance(message, dict):
        raise ControlError("control message is not an object")
    return message


class MessageDecoder:
    """Bytes in, complete JSON objects out."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    raise ControlError("control message too long")
                return messages
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            messages.append(decode_object(line))


class Channel(Generic[Out, In]):
    """Records over a stream: ``Out`` records sent, ``In`` records received."""

    def __init__(
        self, stream: trio.abc.Stream, read: Callable[[dict[str, Any]], In], received: bytes = b""
    ) -> None:
        """``received``: bytes already read off the stream's socket (see ``read_waiting``)."""
        self.stream = stream
        self._read = read
        self._decoder = MessageDecoder()
        self._pending: deque[dict[str, Any]] = deque(self._decoder.feed(received))
        self._send_lock = trio.Lock()

    def received_already(self) -> list[In]:
        """The complete records among the bytes already read: no waiting."""
        records = [self._read(message) for message in self._pending]
        self._pending.clear()
        return records

    async def send(self, message: Out) -> None:
        await send_in_turn(self._send_lock, self.stream, encode(message.wire()))

    async def receive(self) -> In | None:
        """The next record, None at EOF; raises ``ControlError`` for one that is not an ``In``."""
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._pending.extend(self._decoder.feed(bytes(data)))
        return self._read(self._pending.popleft())

    async def each(self, handle: Callable[[In], Awaitable[None]]) -> None:
        """Hand every record to ``handle`` until the peer is gone: EOF, a broken
        stream, or a line that is no ``In`` record."""
        with contextlib.suppress(ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
            while (message := await self.receive()) is not None:
                await handle(message)

    async def aclose(self) -> None:
        await self.stream.aclose()


def read_waiting(sock: socket.socket) -> bytes:
    """What is waiting in ``sock`` now, without blocking (b"" for nothing or EOF)."""
    chunks: list[bytes] = []
    while True:
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
