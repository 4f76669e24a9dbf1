"""Messages between the master and its children: newline-delimited JSON.

The codec is sans-IO (``encode`` / ``MessageDecoder``) so it is testable without
processes; ``ControlChannel`` is the thin trio wrapper used on both sides.
Messages are small dicts; nothing here ever carries a password except the auth
wire requests, which never go through a log.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import trio

MAX_MESSAGE: Final = 1 << 20


class ControlError(Exception):
    """The peer sent something that is not a message."""


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class MessageDecoder:
    """Bytes in, complete messages out."""

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
            try:
                message = json.loads(line)
            except ValueError as exc:
                raise ControlError("invalid control message") from exc
            if not isinstance(message, dict):
                raise ControlError("control message is not an object")
            messages.append(message)


class ControlChannel:
    """A message channel over a stream; ``receive()`` returns None at EOF."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = MessageDecoder()
        self._pending: deque[dict[str, Any]] = deque()
        self._send_lock = trio.Lock()

    async def send(self, message: Mapping[str, Any]) -> None:
        async with self._send_lock:
            await self.stream.send_all(encode(message))

    async def receive(self) -> dict[str, Any] | None:
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self._pending.extend(self._decoder.feed(bytes(data)))
        return self._pending.popleft()

    async def aclose(self) -> None:
        await self.stream.aclose()
