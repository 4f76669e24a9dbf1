"""What a protocol is to the rest of proxyd: one :class:`ProtocolSpec` per protocol.

Every protocol lives in its own folder ``proxyd.protocols.<name>`` (its sans-IO
engines and its client-visible bytes) and exports one ``ProtocolSpec`` from its
``plugin`` module; :mod:`proxyd.protocols.registry` lists them, and every list of
protocols, services and default listeners in proxyd derives from that.

A login service (``imap-login``, ``pop3-login``, ...) sets ``login``: the hooks
the protocol-neutral ``LoginSession`` needs (Dovecot's ``client_vfuncs``).  A
protocol that is not a login service (LMTP) leaves it None and brings its own
session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from proxyd.protocols.backend_events import BackendEvent
from proxyd.protocols.engine import State
from proxyd.protocols.events import ClientFailure, Event, LoginPolicy, _NeedData
from proxyd.setting.spec import SettingSpec


@dataclass(frozen=True, slots=True)
class Referral:
    """``host`` without ``proxy`` on a ``nologin`` reply: an IMAP LOGIN-REFERRALS answer."""

    host: str
    port: int
    destuser: str
    reason: str


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
    def close(self, text: str | None = None) -> None: ...

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
    noauth: bool = False  # proxy_noauth: no AUTH to the backend (Submission)
    login_user: str = ""  # the user the client logged in as (before destuser)

    def __repr__(self) -> str:
        return f"BackendLogin(user={self.user!r}, master_user={self.master_user!r}, mech={self.mech!r})"


@dataclass(frozen=True, slots=True)
class LoginHooks:
    """A login service's plug-in to the shared login session (Dovecot's ``client_vfuncs``)."""

    #: (policy, the effective settings) -> the client-facing engine; the protocol
    #: reads its own settings (``imap_capability``, ``managesieve_*``...) from the second
    new_server: Callable[[LoginPolicy, Any], LoginServerEngine]
    #: (login parameters, the client engine) -> backend engine
    new_backend: Callable[[BackendLogin, LoginServerEngine], BackendLoginEngine]
    #: a last line for the client before we close (``* BYE text`` / ``-ERR text``)
    goodbye: Callable[[str], bytes]
    #: (client engine, referral, client's mechanism) -> the reply to a ``nologin`` + ``host`` login
    referral: Callable[[LoginServerEngine, Referral, str], bytes] | None = None


@dataclass(frozen=True, slots=True)
class DefaultListener:
    """An ``inet_listener`` a service has without configuration (Dovecot's built-in ones)."""

    name: str
    port: int
    ssl: bool = False


@dataclass(frozen=True, slots=True)
class ServiceDefaults:
    """How a protocol's service runs when its ``service`` block says nothing (Dovecot's defaults).

    Login services keep the class defaults; the LMTP service has its own.
    """

    service_count: int = 1
    client_limit: int = 0  # 0: default_client_limit
    user: str = "$default_login_user"
    chroot: str = "login"
    #: ``unix_listener`` names under ``base_dir`` (mode 0666) the service has unconfigured
    unix_listeners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """A protocol's own top-level settings (``managesieve_*``, ``lmtp_*``): the protocol's
    part of the settings table, which :mod:`proxyd.config.schema` collects from the registry.

    The implemented ones fill a frozen dataclass of the protocol's (``record``), one field
    per spec with Dovecot's default; its code reads it with ``Settings.of(record)``.
    """

    specs: tuple[SettingSpec, ...] = ()
    #: the dataclass the specs fill (None when there are none)
    record: type[Any] | None = None
    #: the specs a ``protocol``/``local``/``remote`` block may change (read per connection,
    #: as every setting of Dovecot's login processes is)
    per_connection: frozenset[str] = frozenset()
    #: top-level settings shared with other protocols that this protocol's service also
    #: resolves per connection, so a block that can only match it may change them
    #: (Submission: ``hostname``, which the LMTP service reads once)
    shared_per_connection: frozenset[str] = frozenset()
    #: settings this protocol's service reads once per process: a ``protocol NAME { }``
    #: block (not inside ``local``/``remote``) may set them, since every connection of
    #: that service matches it (LMTP: its ``lmtp_*`` settings and ``mail_temp_dir``)
    per_process: frozenset[str] = frozenset()
    #: Dovecot names the protocol's login or service process honours that proxyd does not
    #: implement yet: an error, never ignored
    not_yet: frozenset[str] = frozenset()
    #: Dovecot names of the protocol's mail process (no business of a proxy): accepted,
    #: listed by ``proxyd -n``, never applied
    unused: frozenset[str] = frozenset()
    #: a check of the final values when the protocol is in ``protocols``: (the record) ->
    #: None, or (the setting to blame, the message)
    check: Callable[[Any], tuple[str, str] | None] | None = None


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol: its name in ``protocols``, its service and how it is served."""

    name: str  # "imap", as in ``protocols``
    service: str  # "imap-login": the service block, the process title, the log prefix
    default_port: int  # the backend port when the passdb names none
    default_ssl_port: int  # ... with ``ssl=yes``
    listeners: tuple[DefaultListener, ...]
    #: the login-service hooks; None for a protocol that is not a login service
    login: LoginHooks | None
    defaults: ServiceDefaults = ServiceDefaults()
    settings: ProtocolSettings = ProtocolSettings()
