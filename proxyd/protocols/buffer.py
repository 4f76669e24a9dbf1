"""The input buffer every sans-IO engine reads from (Dovecot's login istream buffer)."""

from __future__ import annotations

from typing import Final

#: Dovecot's ``LOGIN_MAX_INBUF_SIZE``: the client input a login process buffers unconsumed.
MAX_INBUF_SIZE: Final = 1026


class InputBuffer:
    """Received bytes not yet consumed, capped like a Dovecot istream buffer.

    The owner moves bytes in with :meth:`fill_from` (at most up to ``max_size``
    unconsumed bytes, as a ``read()`` into a full buffer would), parsers look at
    :meth:`peek` and consume with :meth:`skip`.
    """

    __slots__ = ("_data", "max_size")

    def __init__(self, max_size: int) -> None:
        self._data = bytearray()
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self._data)

    @property
    def full(self) -> bool:
        """No room for another byte: Dovecot's ``i_stream_read()`` would return -2."""
        return len(self._data) >= self.max_size

    def peek(self) -> bytes:
        """All unconsumed bytes (a copy; at most ``max_size`` of them)."""
        return bytes(self._data)

    def skip(self, count: int) -> None:
        """Consume ``count`` bytes from the front."""
        del self._data[:count]

    def fill_from(self, source: bytearray) -> int:
        """Move as many bytes from the front of ``source`` as fit; return how many."""
        room = self.max_size - len(self._data)
        count = min(room, len(source))
        if count > 0:
            self._data += source[:count]
            del source[:count]
        return count

    def take_all(self) -> bytes:
        """Return every unconsumed byte and empty the buffer."""
        data = bytes(self._data)
        self._data.clear()
        return data

    def next_line(self) -> bytes | None:
        """Consume one buffered line and return it without its LF or CRLF (Dovecot's
        ``i_stream_next_line()``); None while no whole line is buffered."""
        index = self._data.find(b"\n")
        if index < 0:
            return None
        end = index - 1 if index and self._data[index - 1] == 0x0D else index
        line = bytes(self._data[:end])
        del self._data[: index + 1]
        return line

    def skip_line(self) -> bool:
        """Consume through the next LF if one is buffered (Dovecot's ``client_skip_line()``)."""
        index = self._data.find(b"\n")
        if index < 0:
            return False
        del self._data[: index + 1]
        return True


__all__ = ["MAX_INBUF_SIZE", "InputBuffer"]
