"""The parsed configuration: frozen dataclasses, built once per (re)load.

Every value has Dovecot's default.  Records remember where they were defined so
later checks can still report ``FILE:LINE``.  A reload builds a new ``Settings``
and swaps it in whole; nothing here is ever mutated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from proxyd.errors import Location
from proxyd.protocols import registry
from proxyd.secret import Secret

#: Dovecot's (uoff_t)-1: the largest size, which for a service's vsz_limit means "the default"
UOFF_MAX: Final = 2**64 - 1

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class HostList:
    """A list of host names/IPs as written (``text``) and the addresses it resolved to."""

    text: str = ""
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalBackend:
    """``proxyd_local_backend = host[:port]``: where ``proxy_maybe`` users whose host is this node go."""

    host: str
    port: int  # 0: the protocol's default port


@dataclass(frozen=True, slots=True)
class InetListener:
    """``inet_listener NAME { address port ssl haproxy }`` inside a service."""

    name: str
    port: int
    #: listen addresses; empty = inherit the top-level ``listen``
    addresses: tuple[str, ...] = ()
    ssl: bool = False
    haproxy: bool = False
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class UnixListener:
    """``unix_listener NAME { path mode user group }``: a socket proxyd creates under ``base_dir``.

    ``mode = 0`` means the socket is not created; empty ``user``/``group`` leave
    the owner root (the master's).
    """

    name: str
    mode: int
    user: str = ""
    group: str = ""
    location: Location | None = None

    # what the accept loops ask of any listener: a UNIX socket is never TLS nor behind HAProxy
    @property
    def ssl(self) -> bool:
        return False

    @property
    def haproxy(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``service NAME { ... }``; only the listeners matter in single-process mode."""

    name: str
    listeners: tuple[InetListener, ...] = ()
    unix_listeners: tuple[UnixListener, ...] = ()
    location: Location | None = None
    #: Dovecot's service settings; None / 0 means "the default_* setting"
    service_count: int = 1
    client_limit: int = 0
    process_limit: int = 0
    process_min_avail: int = 0
    vsz_limit: int | None = None  # bytes
    idle_kill: float | None = None  # seconds
    user: str = "$default_login_user"
    group: str = ""
    chroot: str = "login"
    #: the service settings that appeared in the file (for ``proxyd -n``)
    explicit: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PassdbSettings:
    """One ``passdb [NAME] { ... }`` block, tried in configuration order."""

    driver: str
    args: str = ""
    name: str = ""
    #: Dovecot's result_* actions: "return-ok", "return-fail", "return", "continue", "continue-ok", "continue-fail"
    result_success: str = "return-ok"
    result_failure: str = "continue"
    result_internalfail: str = "continue"
    #: "never", "authenticated", "unauthenticated"
    skip: str = "never"
    #: extra fields added to every reply, and fields that override the driver's ("k=v k2=v2" templates)
    default_fields: str = ""
    override_fields: str = ""
    #: a master passdb: checks the master user of a ``user*master`` login
    master: bool = False
    #: Dovecot's ``pass = yes``: a successful passdb continues (result_success = continue)
    pass_: bool = False
    location: Location | None = None
    #: the directory of the file that defined this passdb, for relative ``args`` paths
    config_dir: str = "."


@dataclass(frozen=True, slots=True)
class UnusedItem:
    """A setting or section of a service a proxy does not run: accepted, listed by ``-n``, never applied."""

    location: Location
    #: what it is, in configuration words: ``mail_location``, ``service imap { }``
    what: str


@dataclass(frozen=True, slots=True)
class FilterBlock:
    """One ``local``/``remote``/``protocol`` block (nested ones carry their parents' parts).

    ``values`` maps :class:`Settings` field names to typed values; ``keys``
    maps the setting names as written to where they were set.
    """

    location: Location
    #: "" = any protocol; "!NAME" = any but NAME
    protocol: str = ""
    local: IPNetwork | None = None
    remote: IPNetwork | None = None
    #: as written (``local 10.0.0.1 {``), for ``proxyd -n``
    local_text: str = ""
    remote_text: str = ""
    values: tuple[tuple[str, object], ...] = ()
    keys: tuple[tuple[str, Location], ...] = ()

    def matches(self, protocol: str, local_ip: IPAddress | None, remote_ip: IPAddress | None) -> bool:
        """Dovecot's ``config_filter_match``."""
        if self.protocol:
            if self.protocol.startswith("!"):
                if protocol == self.protocol[1:]:
                    return False
            elif protocol != self.protocol:
                return False
        if self.local is not None and (local_ip is None or not _in_network(local_ip, self.local)):
            return False
        return self.remote is None or (remote_ip is not None and _in_network(remote_ip, self.remote))

    @property
    def precedence(self) -> tuple[int, int, int]:
        """Dovecot's order: more local bits first, then more remote bits, then a protocol."""
        return (
            self.local.prefixlen if self.local is not None else -1,
            self.remote.prefixlen if self.remote is not None else -1,
            1 if self.protocol else 0,
        )


def _in_network(address: IPAddress, network: IPNetwork) -> bool:
    if address.version != network.version:
        # an IPv4-mapped client address still matches an IPv4 network
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped in network
        return False
    return address in network


def _default_services() -> dict[str, ServiceSettings]:
    services = {
        p.service: ServiceSettings(
            name=p.service,
            listeners=tuple(InetListener(name=d.name, port=d.port, ssl=d.ssl) for d in p.listeners),
            unix_listeners=tuple(UnixListener(name, 0o666) for name in p.defaults.unix_listeners),
            service_count=p.defaults.service_count,
            client_limit=p.defaults.client_limit,
            user=p.defaults.user,
            chroot=p.defaults.chroot,
        )
        for p in registry.PROTOCOLS
    }
    return {
        **services,
        # the built-in access service for login_access_sockets = tcpwrap; its chroot names
        # the directory whose etc/hosts.allow and etc/hosts.deny are read
        "tcpwrap": ServiceSettings(
            name="tcpwrap",
            user="$default_internal_user",
            chroot="",
            unix_listeners=(UnixListener("login/tcpwrap", 0o600, "$default_login_user"),),
        ),
        # proxyd's auth process; login processes reach it at login/login (Dovecot's name)
        "auth": ServiceSettings(
            name="auth",
            user="$default_internal_user",
            chroot="",
            unix_listeners=(UnixListener("login/login", 0o666),),
        ),
        # served by the master: only an ``inet_listener http`` (the doveadm HTTP API)
        "doveadm": ServiceSettings(name="doveadm", user="", chroot=""),
        # likewise: GET /metrics
        "stats": ServiceSettings(name="stats", user="", chroot=""),
    }


def _default_protocol_settings() -> dict[str, Any]:
    return {p.name: p.settings.record() for p in registry.PROTOCOLS if p.settings.record is not None}


_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole effective configuration."""

    config_path: str = "/etc/proxyd/proxyd.conf"
    protocols: tuple[str, ...] = ("imap",)
    listen: tuple[str, ...] = ("*", "::")
    base_dir: str = "/var/run/proxyd"
    log_path: str = ""  # "" = stderr
    #: on stop, end the proxied sessions too (no: they live on until their clients leave)
    shutdown_clients: bool = True
    #: the environment the child processes keep (NAME) or get (NAME=VALUE); the rest is cleared
    import_environment: str = "TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"
    #: informational / debug lines elsewhere ("" = with the others)
    info_log_path: str = ""
    debug_log_path: str = ""
    #: strftime format (``%{usecs}`` for microseconds) before each line of a log file
    log_timestamp: str = "%b %d %H:%M:%S "
    syslog_facility: str = "mail"
    auth_verbose: bool = False
    auth_debug: bool = False

    # TLS towards clients
    ssl: str = "yes"  # "no" | "yes" | "required"
    ssl_cert: str = ""  # PEM text (``<file`` read at load time)
    ssl_key: Secret = field(default_factory=lambda: Secret(""))
    ssl_ca: str = ""
    ssl_min_protocol: str = "TLSv1.2"
    #: ask clients for a certificate, verified against ``ssl_ca``; its
    #: ``ssl_cert_username_field`` is the user name for EXTERNAL (``auth_ssl_username_from_cert``)
    ssl_verify_client_cert: bool = False
    ssl_cert_username_field: str = "commonName"
    auth_ssl_require_client_cert: bool = False
    auth_ssl_username_from_cert: bool = False
    #: DH parameters (PEM) for DHE cipher suites
    ssl_dh: str = ""
    #: a second certificate of another key type (RSA beside ECDSA, say), and its key
    ssl_alt_cert: str = ""
    ssl_alt_key: Secret = field(default_factory=lambda: Secret(""))
    #: the passphrase of an encrypted ssl_key (and ssl_alt_key)
    ssl_key_password: Secret = field(default_factory=lambda: Secret(""))
    #: OpenSSL cipher list (TLS <= 1.2), TLS 1.3 suites, key exchange groups ("" = OpenSSL's)
    ssl_cipher_list: str = (
        "ALL:!kRSA:!SRP:!kDHd:!DSS:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!MD5:!PSK:!RC4:!ADH:!LOW@STRENGTH"
    )
    ssl_cipher_suites: str = ""
    ssl_curve_list: str = ""
    ssl_prefer_server_ciphers: bool = False
    #: "compression", "no_compression", "no_ticket"
    ssl_options: tuple[str, ...] = ()
    #: log TLS handshakes and their failures in detail
    verbose_ssl: bool = False
    #: absolute paths of the ``<FILE``s the PEM values above were read from ("" = not from a file)
    ssl_cert_path: str = ""
    ssl_key_path: str = ""
    ssl_ca_path: str = ""
    ssl_dh_path: str = ""
    ssl_alt_cert_path: str = ""
    ssl_alt_key_path: str = ""

    # TLS towards backends
    ssl_client_cert: str = ""  # PEM text
    ssl_client_key: Secret = field(default_factory=lambda: Secret(""))
    ssl_client_cert_path: str = ""
    ssl_client_key_path: str = ""
    #: CAs for verifying backends (file / hashed directory); else ssl_ca, else the system store
    ssl_client_ca_file: str = ""
    ssl_client_ca_dir: str = ""
    #: check backend certificates against the CRLs that come with the CAs (none there: no check)
    ssl_require_crl: bool = True

    # login
    disable_plaintext_auth: bool = True
    auth_mechanisms: tuple[str, ...] = ("plain",)
    #: user names: allowed characters ("" = any), translation pairs, the %-format, default realm
    auth_username_chars: str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@"
    auth_username_translation: str = ""
    auth_username_format: str = "%Lu"
    auth_default_realm: str = ""
    #: DIGEST-MD5: the realms its challenge offers (none: one empty realm)
    auth_realms: tuple[str, ...] = ()
    #: at most this many blocking auth jobs (password hashing) at a time
    auth_worker_max_count: int = 30
    auth_failure_delay: float = 2.0  # seconds
    #: auth cache: bytes (0 = no cache), positive and negative entry lifetimes in seconds
    auth_cache_size: int = 0
    auth_cache_ttl: float = 3600.0
    auth_cache_negative_ttl: float = 3600.0
    login_greeting: str = "Dovecot ready."
    #: the fields at the end of login process log lines, and where the message goes
    login_log_format_elements: str = "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>"
    login_log_format: str = "%$: %s"
    login_trusted_networks: tuple[IPNetwork, ...] = ()
    login_proxy_timeout: float = 30.0  # seconds
    login_proxy_max_reconnects: int = 3
    #: spread the client disconnects of a dead backend over this many seconds (0 = off)
    login_proxy_max_disconnect_delay: float = 0.0
    #: outgoing source addresses, used round robin per login process
    login_source_ips: HostList = field(default_factory=HostList)
    #: extra addresses that are this node for proxy_maybe
    auth_proxy_self: HostList = field(default_factory=HostList)
    auth_master_user_separator: str = ""
    #: the user an ANONYMOUS login becomes (its passdb entry routes it)
    auth_anonymous_username: str = "anonymous"
    proxyd_local_backend: LocalBackend | None = None
    #: high-security mode: a plaintext session leaves its login process once proxied
    #: (for the relay process), as Dovecot's login processes end after a local login
    proxyd_plaintext_handoff: bool = True
    #: pre-login connections one client address may have in a service (0 = no limit);
    #: login_trusted_networks and haproxy_trusted_networks are not counted
    proxyd_prelogin_per_ip_limit: int = 0
    #: LHLO/greeting name ("" = the system's host name, see ``my_hostname()``)
    hostname: str = ""
    recipient_delimiter: str = "+"
    #: the lmtp process's temporary files (Dovecot's raw mail user's mail_temp_dir)
    mail_temp_dir: str = "/tmp"  # noqa: S108 - Dovecot's default
    #: each protocol's own settings (``managesieve_*``, ``lmtp_*``...): protocol name -> the
    #: record its plugin declares (``proxyd.protocols.spec.ProtocolSettings``); read with :meth:`of`
    protocol_settings: Mapping[str, Any] = field(default_factory=_default_protocol_settings)

    # process model (Dovecot's master settings)
    default_login_user: str = "dovenull"
    default_internal_user: str = "dovecot"
    default_process_limit: int = 100
    default_client_limit: int = 1000
    default_vsz_limit: int = 256 * 1024 * 1024
    default_idle_kill: float = 60.0
    haproxy_trusted_networks: tuple[IPNetwork, ...] = ()
    haproxy_timeout: float = 3.0
    #: UNIX socket names under base_dir/login asked before the greeting ("tcpwrap" is built in)
    login_access_sockets: tuple[str, ...] = ()

    # the doveadm HTTP API
    doveadm_api_key: Secret = field(default_factory=lambda: Secret(""))
    doveadm_password: Secret = field(default_factory=lambda: Secret(""))
    #: the peers' doveadm HTTP listeners, ``host:port`` (may include this node)
    proxyd_cluster_peers: tuple[str, ...] = ()

    services: dict[str, ServiceSettings] = field(default_factory=_default_services)
    passdbs: tuple[PassdbSettings, ...] = ()

    #: ``protocol``/``local``/``remote`` blocks in file order (see :mod:`proxyd.config.filters`)
    filters: tuple[FilterBlock, ...] = ()
    #: settings and sections of services a proxy does not run, in file order
    unused: tuple[UnusedItem, ...] = ()

    #: this host's canonical name (Dovecot's ``my_hostdomain()``): what an unset ``hostname``
    #: means; filled in when the configuration is loaded (not a setting of its own)
    hostdomain: str = ""

    #: settings given explicitly in the file: name -> where (for ``proxyd -n``)
    explicit: dict[str, Location] = field(default_factory=dict)

    def service(self, name: str) -> ServiceSettings:
        return self.services.get(name, ServiceSettings(name=name))

    def of(self, record: type[_R]) -> _R:
        """A protocol's own settings: ``settings.of(ManageSieveSettings)``."""
        for value in self.protocol_settings.values():
            if isinstance(value, record):
                return value
        raise KeyError(f"no protocol has settings {record.__name__}")

    def value(self, attribute: str) -> Any:
        """The value of a setting by its ``SettingSpec.attribute`` (``PROTOCOL.FIELD`` for a protocol's own)."""
        protocol, dot, name = attribute.partition(".")
        if dot:
            return getattr(self.protocol_settings[protocol], name)
        return getattr(self, attribute)

    def with_values(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` (attribute -> value, as :meth:`value` names them) applied."""
        own: dict[str, Any] = {}
        per_protocol: dict[str, dict[str, Any]] = {}
        for attribute, value in changes.items():
            protocol, dot, name = attribute.partition(".")
            if dot:
                per_protocol.setdefault(protocol, {})[name] = value
            else:
                own[attribute] = value
        if per_protocol:
            records = dict(self.protocol_settings)
            for protocol, values in per_protocol.items():
                records[protocol] = dataclasses.replace(records[protocol], **values)
            own["protocol_settings"] = records
        return dataclasses.replace(self, **own)


@dataclass(frozen=True, slots=True)
class EffectiveService:
    """A service's limits with the ``default_*`` settings applied (Dovecot's ``service.c``)."""

    name: str
    service_count: int
    client_limit: int
    process_limit: int
    process_min_avail: int
    vsz_limit: int  # bytes; 0 = unlimited
    idle_kill: float
    user: str
    group: str
    chroot: str  # absolute path, "" = none


def unix_listener(settings: Settings, service: str, name: str) -> UnixListener:
    """A service's socket with ``$default_*`` users resolved (its path is relative to ``base_dir``)."""
    for listener in settings.service(service).unix_listeners:
        if listener.name == name:
            user = listener.user
            if user == "$default_login_user":
                user = settings.default_login_user
            elif user == "$default_internal_user":
                user = settings.default_internal_user
            return UnixListener(listener.name, listener.mode, user, listener.group, listener.location)
    raise KeyError(f"service {service} has no unix_listener {name}")


def effective_service(settings: Settings, name: str) -> EffectiveService:
    """Resolve ``$default_*`` and zero values the way Dovecot's master does."""
    svc = settings.service(name)
    client_limit = svc.client_limit or settings.default_client_limit
    if svc.service_count > 0:
        # a process never has more clients than it may serve in its lifetime
        client_limit = min(client_limit, svc.service_count)
    user = svc.user
    if user == "$default_login_user":
        user = settings.default_login_user
    elif user == "$default_internal_user":
        user = settings.default_internal_user
    chroot = svc.chroot
    if chroot and not chroot.startswith("/"):
        chroot = f"{settings.base_dir.rstrip('/')}/{chroot}"
    return EffectiveService(
        name=name,
        service_count=svc.service_count,
        client_limit=client_limit,
        process_limit=svc.process_limit or settings.default_process_limit,
        process_min_avail=svc.process_min_avail,
        # Dovecot: vsz_limit (uoff_t)-1 and idle_kill 0 mean "the default_* setting"
        vsz_limit=settings.default_vsz_limit if svc.vsz_limit in (None, UOFF_MAX) else svc.vsz_limit,
        idle_kill=svc.idle_kill or settings.default_idle_kill,
        user=user,
        group=svc.group,
        chroot=chroot,
    )
