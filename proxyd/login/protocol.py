"""What the shared login machinery needs from a protocol (Dovecot's ``client_vfuncs``).

``LoginSession`` is protocol-neutral.  Each protocol plugs in one ``ProtocolSpec``:
how to build its client-facing engine and its backend-login engine, its default
ports, and how it says goodbye.  The engines themselves live in
``proxyd.protocols.<name>`` and are sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxyd.protocols.backend_events import BackendEvent
from proxyd.protocols.engine import State
from proxyd.protocols.events import ClientFailure, Event, LoginPolicy, _NeedData

if TYPE_CHECKING:
    from proxyd.login.proxyfields import Referral


class LoginServerEngine(Protocol):
    """The client-facing pre-login engine (see ``proxyd.protocols.events``)."""

    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Event | _NeedData: ...
    def data_to_send(self) -> bytes: ...
    def sasl_challenge(self, challenge: bytes) -> None: ...
    def auth_failed(self, failure: ClientFailure, reason: str | None = None) -> None: ...
    def auth_backend_reply(self, reply: bytes) -> None: ...
    def login_succeeded(self, reply: bytes) -> None: ...
    def tls_started(self, policy: LoginPolicy) -> None: ...
    def trailing_data(self) -> bytes: ...

    @property
    def state(self) -> State: ...

    @property
    def auth_attempts(self) -> int: ...


class BackendLoginEngine(Protocol):
    """The engine that logs in to the backend on the client's behalf."""

    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> BackendEvent | _NeedData: ...
    def data_to_send(self) -> bytes: ...
    def tls_started(self) -> None: ...
    def trailing_data(self) -> bytes: ...

    @property
    def state_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BackendLogin:
    """Everything a backend engine needs, protocol-neutral; built by the session."""

    user: str  # destuser
    password: str
    master_user: str
    mech: str
    starttls: bool
    tls_active: bool
    nopipelining: bool
    not_trusted: bool  # proxy_not_trusted: send no ID / XCLIENT
    session_id: str
    remote_ip: str
    remote_port: int
    local_ip: str
    local_port: int
    proxy_ttl: int  # the TTL to send on (already decremented)
    forward_fields: tuple[tuple[str, str], ...]
    client_id: str | None  # retained client ID (imap_id_retain)

    def __repr__(self) -> str:
        return f"BackendLogin(user={self.user!r}, master_user={self.master_user!r}, mech={self.mech!r})"


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol's plug-in to the shared login session."""

    name: str  # "imap"
    service: str  # "imap-login"
    default_port: int
    default_ssl_port: int
    new_server: Callable[[LoginPolicy], LoginServerEngine]
    #: (login parameters, the client engine) -> backend engine
    new_backend: Callable[[BackendLogin, LoginServerEngine], BackendLoginEngine]
    #: a last line for the client before we close (``* BYE text`` / ``-ERR text``)
    goodbye: Callable[[str], bytes]
    #: (client engine, referral, client's mechanism) -> the reply to a ``nologin`` + ``host`` login
    referral: Callable[[LoginServerEngine, Referral, str], bytes] | None = None
