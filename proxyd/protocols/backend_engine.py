"""What both backend-login engines share: byte plumbing, line splitting, the failure event.

Each protocol's engine (``proxyd.protocols.imap.backend``, ``...pop3.backend``)
sets the attributes declared here in its ``__init__`` and implements
``_parse_line``, Dovecot's per-protocol ``proxy_parse_line`` vfunc.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import deque
from typing import Final

from proxyd.protocols.backend_events import BackendEvent, BackendFailed, ProxyFailure
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.events import NEED_DATA, _NeedData

#: Dovecot's ``MAX_PROXY_INPUT_SIZE``: the longest backend line before a login
MAX_PROXY_INPUT: Final = 4096


class Phase(enum.Enum):
    RUNNING = "running"
    TLS_PENDING = "tls_pending"
    DONE = "done"


class BackendEngineBase(ABC):
    """The shared half of ``ImapBackendLogin`` and ``Pop3BackendLogin``."""

    _phase: Phase
    _buf: InputBuffer
    _pending: bytearray
    _eof: bool
    _out: bytearray
    _events: deque[BackendEvent]

    @abstractmethod
    def _parse_line(self, line: bytes) -> None:
        """Act on one backend line (without its line break)."""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the backend; ``b""`` means EOF."""
        if data:
            self._pending += data
        else:
            self._eof = True

    def next_event(self) -> BackendEvent | _NeedData:
        """The next event, or ``NEED_DATA``."""
        while not self._events and self._phase is Phase.RUNNING:
            if self._buf.full:
                self._fail(ProxyFailure.PROTOCOL, "Too long input line")
            elif self._pending:
                self._buf.fill_from(self._pending)
                self._parse_lines()
            elif self._eof:
                self._fail(ProxyFailure.CONNECT, "Disconnected by server: Connection closed")
            else:
                break
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the backend."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def _fail(self, kind: ProxyFailure, log_text: str, client_reply: bytes | None = None) -> None:
        self._phase = Phase.DONE
        self._events.append(BackendFailed(kind, log_text, client_reply))

    def _parse_lines(self) -> None:
        while self._phase is Phase.RUNNING:
            data = self._buf.peek()
            end = data.find(b"\n")
            if end < 0:
                return
            self._buf.skip(end + 1)
            line = data[:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            self._parse_line(line)
