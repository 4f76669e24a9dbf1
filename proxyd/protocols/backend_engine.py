"""What every backend-login engine shares: byte plumbing, line splitting, TLS, SASL, the outcome events.

Each protocol's engine (``proxyd.protocols.<name>.backend``) calls
``super().__init__()`` and implements ``_parse_line``, Dovecot's per-protocol
``proxy_parse_line`` vfunc, and ``_tls_ready``, what follows a finished
STARTTLS handshake.  The helpers below write no protocol bytes and no client
texts of their own: those stay in each protocol's folder.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Protocol, Self

from proxyd.log import MAX_REMOTE_LINE_LEN, sanitize
from proxyd.protocols.backend_events import (
    BackendEvent,
    BackendFailed,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.events import NEED_DATA, _NeedData
from proxyd.protocols.sasl import CLIENT_MECHANISMS, SaslClient, SaslClientError, decode_base64
from proxyd.protocols.spec import BackendLogin
from proxyd.protocols.xclient import xclient_command

#: Dovecot's ``MAX_PROXY_INPUT_SIZE``: the longest backend line before a login
MAX_PROXY_INPUT: Final = 4096


class Phase(enum.Enum):
    RUNNING = "running"
    TLS_PENDING = "tls_pending"
    DONE = "done"


class Credentials(Protocol):
    """The part of a protocol's backend parameters the shared SASL step reads."""

    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def master_user(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BackendParams:
    """How to log in to one backend (from the passdb reply and the client session).

    The XCLIENT values (``remote_ip`` ... ``forward_fields``) are sent only when
    the backend offers XCLIENT and ``not_trusted`` (``proxy_not_trusted``) is
    False; ``proxy_ttl`` is the TTL to send, already decremented.
    """

    user: str
    password: str = field(repr=False)
    master_user: str = ""
    mech: str = ""
    starttls: bool = False
    not_trusted: bool = False
    remote_ip: str = ""
    remote_port: int = 0
    session_id: str = ""
    proxy_ttl: int = 4
    forward_fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_login(cls, login: BackendLogin) -> Self:
        return cls(
            user=login.user,
            password=login.password,
            master_user=login.master_user,
            mech=login.mech,
            starttls=login.starttls,
            not_trusted=login.not_trusted,
            remote_ip=login.remote_ip,
            remote_port=login.remote_port,
            session_id=login.session_id,
            proxy_ttl=login.proxy_ttl,
            forward_fields=login.forward_fields,
        )

    def xclient(self) -> bytes:
        """The ``XCLIENT ADDR= PORT= SESSION= TTL=[ FORWARD=]`` line (POP3, ManageSieve)."""
        return xclient_command(
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            session_id=self.session_id,
            proxy_ttl=self.proxy_ttl,
            forward_fields=self.forward_fields,
        )


def shown(line: bytes) -> str:
    """A backend line as it may appear in a log text (escaped, cut short)."""
    return sanitize(line, MAX_REMOTE_LINE_LEN)


class BackendEngineBase(ABC):
    """The shared half of every ``<Protocol>BackendLogin``."""

    def __init__(self) -> None:
        self._buf = InputBuffer(MAX_PROXY_INPUT)
        self._pending = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[BackendEvent] = deque()
        self._phase = Phase.RUNNING
        self._sasl: SaslClient | None = None

    @abstractmethod
    def _parse_line(self, line: bytes) -> None:
        """Act on one backend line (without its line break)."""

    @abstractmethod
    def _tls_ready(self) -> None:
        """Go on after the STARTTLS handshake (the plaintext input is gone by then)."""

    # -- public API ------------------------------------------------------

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

    def tls_started(self) -> None:
        """The STARTTLS handshake is done; go on with the login."""
        if self._phase is not Phase.TLS_PENDING:
            raise RuntimeError("tls_started() without BackendNeedsTLS")
        self._phase = Phase.RUNNING
        # Whatever followed the backend's OK in plaintext was handed to TLS.
        self._buf.take_all()
        self._pending.clear()
        self._tls_ready()

    def trailing_data(self) -> bytes:
        """Return and forget unconsumed backend bytes (after the login: relay them to the client)."""
        data = self._buf.take_all() + bytes(self._pending)
        self._pending.clear()
        return data

    # -- for the protocol engines -----------------------------------------

    def _fail(self, kind: ProxyFailure, log_text: str, client_reply: bytes | None = None) -> None:
        self._phase = Phase.DONE
        self._events.append(BackendFailed(kind, log_text, client_reply))

    def _needs_tls(self) -> None:
        """The backend took STARTTLS: stop until the driver's handshake is done."""
        self._phase = Phase.TLS_PENDING
        self._events.append(BackendNeedsTLS())

    def _logged_in(self, client_reply: bytes) -> None:
        self._phase = Phase.DONE
        self._events.append(BackendLoggedIn(client_reply))

    def _mechanism(self, mech: str, default: str) -> str:
        """``proxy_mech`` (or ``default``) upper-cased; an unknown one fails the login."""
        chosen = mech.upper() or default
        if chosen and chosen not in CLIENT_MECHANISMS:
            self._fail(ProxyFailure.INTERNAL, f"Unsupported SASL mechanism {mech}")
        return chosen

    def _start_sasl(self, mech: str, params: Credentials) -> SaslClient:
        """Start the SASL client, as the master user when there is one."""
        self._sasl = SaslClient.create(
            mech,
            authzid=params.user,
            authcid=params.master_user or params.user,
            password=params.password,
        )
        return self._sasl

    def _sasl_response(
        self, encoded: bytes | None, bad_base64: str, bad_data: str = "Invalid authentication data"
    ) -> bytes | None:
        """The answer to a base64 challenge (None: not base64); None after failing the login."""
        assert self._sasl is not None
        challenge = None if encoded is None else decode_base64(encoded)
        if challenge is None:
            self._fail(ProxyFailure.PROTOCOL, bad_base64)
            return None
        try:
            self._sasl.input(challenge)
            return self._sasl.output()
        except SaslClientError as error:
            self._fail(ProxyFailure.PROTOCOL, f"{bad_data}: {error}")
            return None

    def _parse_lines(self) -> None:
        while self._phase is Phase.RUNNING and (line := self._buf.next_line()) is not None:
            self._parse_line(line)
