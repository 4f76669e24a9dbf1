"""The ``ldap`` passdb (Dovecot's ``db-ldap.c``, ``passdb-ldap.c``), with ldap3 in threads.

Configuration, exactly as for Dovecot::

    passdb {
      driver = ldap
      args = /etc/proxyd/dovecot-ldap.conf.ext
    }

Keys of the args file (Dovecot 2.3 names and defaults):

* ``uris`` (``ldap://host:port``, ``ldaps://...``, space separated) or
  ``hosts`` (``host[:port]`` list); tried in order, a failing one is skipped
  for a while (``passdb_drivers._pool.Failover``);
* ``dn`` / ``dnpass``: the account lookups bind as (anonymous when unset);
* ``tls = yes``: StartTLS; ``tls_ca_cert_file``, ``tls_ca_cert_dir``,
  ``tls_cert_file``, ``tls_key_file``, ``tls_cipher_suite``,
  ``tls_require_cert`` (never | allow | try | demand | hard; default demand);
* ``base`` (required), ``scope`` (base | onelevel | subtree, default subtree),
  ``deref`` (never | searching | finding | always, default never);
* ``pass_filter`` (default ``(&(objectClass=posixAccount)(uid=%u))``) and
  ``pass_attrs`` (default ``uid=user,userPassword=password``): a comma list of
  ``ldapAttr=field``, ``ldapAttr=field=template`` (``%$`` is the attribute's
  value, ``%{ldap:other}`` another attribute's; a template without ``%`` is a
  prefix), ``=field=value`` (a static field, e.g. ``=proxy=y``), ``!ldapAttr``
  (fetched for templates only) or a bare ``ldapAttr`` (same field name);
* ``auth_bind = yes``: the password is checked by binding as the user's DN
  (found with ``pass_filter``; ``pass_attrs`` still give the fields, any
  ``password`` field is ignored); ``auth_bind_userdn`` (a DN template) binds
  directly without a search, and then, as in Dovecot, no attributes are read;
* ``default_pass_scheme`` (default CRYPT);
* accepted and ignored (userdb and tuning settings a proxy has no use for):
  ``user_attrs``, ``user_filter``, ``iterate_attrs``, ``iterate_filter``,
  ``debug_level``, ``ldaprc_path``, ``blocking``, ``userdb_warning_disable``,
  ``ldap_version = 3``.  ``sasl_bind = yes``, ``@field=attr`` DN lookups and
  ``%{ldap_ptr:...}`` are not supported yet (configuration errors).

Values put into ``pass_filter`` are escaped as RFC 4515 demands
(``escape_filter_chars``), values put into DNs (``base``,
``auth_bind_userdn``) as RFC 4514 demands, so a user name cannot change a
filter or a DN.

ldap3 is synchronous: every operation runs in a worker thread from this
passdb's own ``CapacityLimiter`` (5 threads; at most that many connections
per server).  Connections use the ``SAFE_SYNC`` strategy and
``get_info=NONE`` (no schema download), a 5 s connect and a 5 s receive
timeout; the Trio side gives up one second after that, abandoning the thread,
whose connection is then closed.  Binds for ``auth_bind`` use a new
connection each (a bound identity is never shared).  One entry is a
success, none an unknown user, several a temporary failure ("pass_filter
matched multiple objects"); a server that cannot be reached, an error result
or a timeout is a temporary failure; a wrong password at bind (LDAP result
49) is a password mismatch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import ldap3
import trio
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from passdb_drivers._conffile import read_args_file
from passdb_drivers._pool import ConnectError, Failover, HostPool, QueryError
from proxyd.auth.expand import ExpandError, Variables, expand, iter_variables, request_variables
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.auth.schemes import is_known_scheme
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth.ldap")

DEFAULT_PASS_FILTER: Final = "(&(objectClass=posixAccount)(uid=%u))"  # noqa: S105 - a filter
DEFAULT_PASS_ATTRS: Final = "uid=user,userPassword=password"  # noqa: S105 - attribute names
DEFAULT_PASS_SCHEME: Final = "CRYPT"  # noqa: S105 - a scheme name
#: threads (and connections per server) of one ldap passdb
THREADS: Final = 5
#: whole seconds (ldap3 packs them into a socket option); Dovecot's DB_LDAP_CONNECT_TIMEOUT_SECS is 5 as well
CONNECT_TIMEOUT: Final = 5
RECEIVE_TIMEOUT: Final = 5
#: LDAP result codes
_SUCCESS: Final = 0
_SIZE_LIMIT_EXCEEDED: Final = 4
_NO_SUCH_OBJECT: Final = 32
_INVALID_CREDENTIALS: Final = 49

_KEYS: Final = frozenset(
    {
        "hosts", "uris", "dn", "dnpass", "auth_bind", "auth_bind_userdn", "tls",
        "tls_ca_cert_file", "tls_ca_cert_dir", "tls_cert_file", "tls_key_file",
        "tls_cipher_suite", "tls_require_cert", "deref", "scope", "base", "pass_attrs",
        "pass_filter", "default_pass_scheme", "sasl_bind", "ldap_version",
    }
)  # fmt: skip
_IGNORED_KEYS: Final = frozenset(
    {
        "user_attrs", "user_filter", "iterate_attrs", "iterate_filter", "debug_level",
        "ldaprc_path", "blocking", "userdb_warning_disable", "sasl_mech", "sasl_realm",
        "sasl_authz_id",
    }
)  # fmt: skip
_SCOPES: Final = {"base": ldap3.BASE, "onelevel": ldap3.LEVEL, "subtree": ldap3.SUBTREE}
_DEREFS: Final = {
    "never": ldap3.DEREF_NEVER,
    "searching": ldap3.DEREF_SEARCH,
    "finding": ldap3.DEREF_BASE,
    "always": ldap3.DEREF_ALWAYS,
}
_REQUIRE_CERT: Final = {
    "never": ssl.CERT_NONE,
    "allow": ssl.CERT_NONE,
    "try": ssl.CERT_OPTIONAL,
    "demand": ssl.CERT_REQUIRED,
    "hard": ssl.CERT_REQUIRED,
}
_LDAP_VAR: Final = re.compile(r"^ldap:([^:]+)")


# -- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttrField:
    """One ``pass_attrs`` item: LDAP attribute ("" = static) → field ("" = fetch only)."""

    ldap_attr: str
    name: str
    #: None: the attribute's value as is; else a %-template (``%$`` = the value)
    template: str | None = None


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """What the ldap passdb needs from ``dovecot-ldap.conf.ext``."""

    path: str
    #: ``(use_ssl, host, port)`` per server, in order
    servers: tuple[tuple[bool, str, int], ...]
    dn: str
    dnpass: Secret = field(repr=False)
    base: str
    scope: str
    deref: str
    pass_filter: str
    fields: tuple[AttrField, ...]
    attributes: tuple[str, ...]
    default_pass_scheme: str
    auth_bind: bool = False
    auth_bind_userdn: str | None = None
    starttls: bool = False
    tls: Any = None  # ldap3.Tls or None
    connect_timeout: int = CONNECT_TIMEOUT
    receive_timeout: int = RECEIVE_TIMEOUT


def _bool(key: str, value: str, location: Location) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "y", "1", "true"):
        return True
    if lowered in ("no", "n", "0", "false", ""):
        return False
    raise ConfigError(location, f"{key}: Invalid boolean: {value}")


def _ldap_variables(template: str) -> list[str]:
    """The attribute names a template reads with ``%{ldap:NAME}``."""
    names: list[str] = []
    for ref in iter_variables(template):
        if ref.name.startswith(("ldap_ptr:", "@")):
            raise ValueError(f"{template}: %{{{ref.name}}} is not supported yet")
        match = _LDAP_VAR.match(ref.name)
        if match:
            names.append(match.group(1))
    return names


def parse_attrs(
    text: str, *, skip_field: str | None = None
) -> tuple[tuple[AttrField, ...], tuple[str, ...]]:
    """Dovecot's ``db_ldap_set_attrs()``: the fields and the attributes to request.

    Raises ValueError for an item proxyd cannot use.
    """
    fields: list[AttrField] = []
    attributes: list[str] = []

    def want(name: str) -> None:
        if name and name.lower() not in (a.lower() for a in attributes):
            attributes.append(name)

    for raw in text.split(","):
        item = raw.strip(" \t")
        if not item:
            continue
        ldap_attr, sep, rest = item.partition("=")
        template: str | None = None
        if not sep:
            name = ldap_attr
        else:
            name, sep2, templ = rest.partition("=")
            if sep2:
                template = templ
            elif not ldap_attr:
                template = ""
        if ldap_attr.startswith("!"):
            ldap_attr, name = ldap_attr[1:], ""
        if name.startswith("@") or "@" in ldap_attr:
            raise ValueError(f"{item}: DN sub-lookups (@field) are not supported yet")
        if template is not None and "%" not in template:
            template += "%$"  # Dovecot: a template without variables is a prefix
        if not name and not ldap_attr:
            raise ValueError(f"Invalid attrs entry: {item}")
        if template is not None:
            for other in _ldap_variables(template):
                want(other)
        want(ldap_attr)
        if name and name == skip_field:
            continue
        fields.append(AttrField(ldap_attr=ldap_attr, name=name, template=template))
    return tuple(fields), tuple(attributes)


def _servers(
    values: Mapping[str, tuple[str, Location]], end: Location
) -> list[tuple[bool, str, int]]:
    servers: list[tuple[bool, str, int]] = []
    if "uris" in values:
        text, location = values["uris"]
        for uri in text.split():
            parts = urlsplit(uri)
            if parts.scheme not in ("ldap", "ldaps"):
                raise ConfigError(location, f"uris: {uri}: only ldap:// and ldaps:// are supported")
            try:
                port = parts.port
            except ValueError:
                raise ConfigError(location, f"uris: {uri}: invalid port") from None
            use_ssl = parts.scheme == "ldaps"
            servers.append(
                (use_ssl, parts.hostname or "localhost", port or (636 if use_ssl else 389))
            )
    elif "hosts" in values:
        text, location = values["hosts"]
        for item in text.split():
            host, _, port_text = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
            if not port_text.isdigit() and port_text:
                raise ConfigError(location, f"hosts: {item}: invalid port")
            servers.append((False, host, int(port_text) if port_text else 389))
    if not servers:
        raise ConfigError(end, "LDAP: No uris or hosts set")
    return servers


class _Tls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS settings, with the handshake and the name check left to ``ssl``.

    ldap3 2.9 checks the server name itself with ``ssl.match_hostname()``, which
    is deprecated (and gone in Python 3.12); here the ``SSLContext`` checks it,
    IP addresses included.  The wrapped socket is put on the connection before
    the handshake, so a failed handshake still closes it.
    """

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(
            cafile=self.ca_certs_file, capath=self.ca_certs_path, cadata=self.ca_certs_data
        )
        if self.certificate_file:
            context.load_cert_chain(
                self.certificate_file,
                keyfile=self.private_key_file,
                password=self.private_key_password,
            )
        context.check_hostname = self.validate == ssl.CERT_REQUIRED
        context.verify_mode = self.validate
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        wrapped = context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=False,
            server_hostname=connection.server.host,
        )
        connection.socket = wrapped
        if do_handshake:
            wrapped.do_handshake()


def _tls(values: Mapping[str, tuple[str, Location]]) -> Any:
    def get(key: str) -> str | None:
        found = values.get(key)
        return found[0] if found and found[0] else None

    require, location = values.get("tls_require_cert", ("demand", Location("", 0)))
    if require.lower() not in _REQUIRE_CERT:
        raise ConfigError(location, f"tls_require_cert: Unknown value: {require}")
    return _Tls(
        local_private_key_file=get("tls_key_file"),
        local_certificate_file=get("tls_cert_file"),
        validate=_REQUIRE_CERT[require.lower()],
        ca_certs_file=get("tls_ca_cert_file"),
        ca_certs_path=get("tls_ca_cert_dir"),
        ciphers=get("tls_cipher_suite"),
    )


def read_ldap_config(settings: PassdbSettings) -> LdapConfig:
    """Read ``args`` (the path of ``dovecot-ldap.conf.ext``); raises ``ConfigError``."""
    args = settings.args.strip()
    if not args:
        raise ConfigError(settings.location, "passdb ldap: args must name dovecot-ldap.conf.ext")
    path = args if os.path.isabs(args) else os.path.join(settings.config_dir, args)
    values: dict[str, tuple[str, Location]] = {}
    for item in read_args_file(path, settings.location):
        if item.key not in _KEYS and item.key not in _IGNORED_KEYS:
            raise ConfigError(item.location, f"Unknown setting: {item.key}")
        values[item.key] = (item.value, item.location)
    end = Location(path, 0)

    def get(key: str, default: str) -> tuple[str, Location]:
        return values.get(key, (default, end))

    if "sasl_bind" in values and _bool("sasl_bind", *values["sasl_bind"]):
        raise ConfigError(values["sasl_bind"][1], "setting 'sasl_bind = yes' is not supported yet")
    version, version_location = get("ldap_version", "3")
    if version.strip() != "3":
        raise ConfigError(version_location, f"ldap_version {version} is not supported (only 3)")
    base, _ = get("base", "")
    if not base:
        raise ConfigError(end, "LDAP: No base given")
    scope, scope_location = get("scope", "subtree")
    if scope.lower() not in _SCOPES:
        raise ConfigError(scope_location, f"LDAP: Unknown scope option '{scope}'")
    deref, deref_location = get("deref", "never")
    if deref.lower() not in _DEREFS:
        raise ConfigError(deref_location, f"LDAP: Unknown deref option '{deref}'")
    scheme, scheme_location = get("default_pass_scheme", DEFAULT_PASS_SCHEME)
    if not is_known_scheme(scheme):
        raise ConfigError(scheme_location, f"LDAP: Unknown default_pass_scheme: {scheme}")
    auth_bind = _bool("auth_bind", *get("auth_bind", "no"))
    attrs_text, attrs_location = get("pass_attrs", DEFAULT_PASS_ATTRS)
    filter_text, filter_location = get("pass_filter", DEFAULT_PASS_FILTER)
    try:
        fields, attributes = parse_attrs(attrs_text, skip_field="password" if auth_bind else None)
    except ValueError as exc:
        raise ConfigError(attrs_location, f"pass_attrs: {exc}") from None
    try:
        _ldap_variables(filter_text)
    except ValueError as exc:
        raise ConfigError(filter_location, f"pass_filter: {exc}") from None
    starttls = _bool("tls", *get("tls", "no"))
    servers = _servers(values, end)
    use_tls = starttls or any(use_ssl for use_ssl, _, _ in servers)
    userdn = values.get("auth_bind_userdn", ("", end))[0] or None
    return LdapConfig(
        path=path,
        servers=tuple(servers),
        dn=get("dn", "")[0],
        dnpass=Secret(get("dnpass", "")[0]),
        base=base,
        scope=scope.lower(),
        deref=deref.lower(),
        pass_filter=filter_text,
        fields=fields,
        attributes=attributes,
        default_pass_scheme=scheme,
        auth_bind=auth_bind,
        auth_bind_userdn=userdn if auth_bind else None,
        starttls=starttls,
        tls=_tls(values) if use_tls else None,
        connect_timeout=CONNECT_TIMEOUT,
        receive_timeout=RECEIVE_TIMEOUT,
    )


# -- escaping and results ----------------------------------------------------------------


def filter_escape(value: str) -> str:
    """A value for an LDAP filter (RFC 4515)."""
    escaped: str = escape_filter_chars(value)
    return escaped


def dn_escape(value: str) -> str:
    """A value for a DN (RFC 4514)."""
    if not value:
        return value
    escaped: str = escape_rdn(value)
    return escaped


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result: its DN and attribute values (names lowercased)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(repr=False)


def _decode(values: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(value.decode("utf-8", "surrogateescape") for value in values if value)


def entry_fields(
    entry: Entry, fields: Sequence[AttrField], variables: Variables
) -> list[tuple[str, str | None]]:
    """The passdb fields of ``entry`` (Dovecot's ``db_ldap_result_iterate``); raises ExpandError."""
    out: list[tuple[str, str | None]] = []
    for item in fields:
        if item.ldap_attr:
            values = entry.attributes.get(item.ldap_attr.lower(), ())
            if not values:
                continue  # a missing or empty attribute sets nothing
            if len(values) > 1:
                log.warning(
                    "ldap: Multiple values found for '%s', using value '%s'",
                    item.name or item.ldap_attr,
                    "<hidden>" if item.name.startswith("password") else values[0],
                )
            value = values[0]
        else:
            value = ""
        if not item.name:
            continue
        if item.template is not None:
            long_names = dict(variables.long)
            for ref in iter_variables(item.template):
                match = _LDAP_VAR.match(ref.name)
                if match:
                    # attribute names are case-insensitive; %{ldap:attr:default}
                    found = entry.attributes.get(match.group(1).lower(), ())
                    default = ref.name.split(":", 2)[2] if ref.name.count(":") >= 2 else ""
                    long_names[ref.name] = found[0] if found else default
            value = expand(
                item.template,
                Variables(
                    short={**variables.short, "$": value},
                    long=long_names,
                    passdb_fields=variables.passdb_fields,
                ),
            )
        out.append((item.name, value))
    return out


# -- connections -----------------------------------------------------------------------


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        ldap_errors.LDAPCommunicationError
        | ldap_errors.LDAPSocketOpenError
        | ldap_errors.LDAPSessionTerminatedByServerError
        | ldap_errors.LDAPBindError
        | ldap_errors.LDAPStartTLSError
        | ldap_errors.LDAPSocketReceiveError
        | ldap_errors.LDAPSocketSendError
        | OSError,
    )


@dataclass(slots=True)
class _Conn:
    """A search connection (bound as ``dn``), used by one thread at a time."""

    connection: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    aborted: bool = False


class LdapConnector:
    """One LDAP server; see ``passdb_drivers._pool.Connector``."""

    def __init__(
        self, config: LdapConfig, server: tuple[bool, str, int], limiter: trio.CapacityLimiter
    ) -> None:
        use_ssl, host, port = server
        self.label = f"{'ldaps' if use_ssl else 'ldap'}://{host}:{port}"
        self._config = config
        self._limiter = limiter
        self._address = (host, port, use_ssl)

    def _new_connection(self, user: str | None, password: str | None) -> Any:
        host, port, use_ssl = self._address
        # a Server of its own each time: ldap3 remembers failed addresses in it
        # and would refuse them for minutes after the server is back
        server = ldap3.Server(
            host,
            port=port,
            use_ssl=use_ssl,
            tls=self._config.tls,
            get_info=ldap3.NONE,
            connect_timeout=self._config.connect_timeout,
        )
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            client_strategy=ldap3.SAFE_SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=self._config.receive_timeout,
            read_only=True,
            auto_referrals=False,
            auto_escape=False,
            raise_exceptions=False,
        )

    def _open(self, connection: Any) -> None:
        connection.open()
        if self._config.starttls and not self._address[2]:
            connection.start_tls()

    def _connect_sync(self) -> _Conn:
        config = self._config
        connection = self._new_connection(config.dn or None, config.dnpass.reveal() or None)
        try:
            self._open(connection)
            _, result, _, _ = connection.bind()
        except Exception as exc:
            _unbind(connection)
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None
        if result["result"] != _SUCCESS:
            _unbind(connection)
            raise ConnectError(
                f"{self.label}: bind as '{config.dn}' failed: {result['description']}"
            )
        return _Conn(connection)

    async def connect(self) -> _Conn:
        return await trio.to_thread.run_sync(
            self._connect_sync, limiter=self._limiter, abandon_on_cancel=True
        )

    def _search_sync(self, conn: _Conn, base: str, search_filter: str) -> list[Entry]:
        config = self._config
        with conn.lock:
            if conn.aborted:
                raise ConnectError(f"{self.label}: connection was closed")
            conn.running = True
        try:
            _, result, response, _ = conn.connection.search(
                base,
                search_filter,
                search_scope=_SCOPES[config.scope],
                dereference_aliases=_DEREFS[config.deref],
                attributes=list(config.attributes) or [ldap3.NO_ATTRIBUTES],
            )
        except Exception as exc:
            if _is_connection_error(exc):
                raise ConnectError(f"{self.label}: {_describe(exc)}") from None
            raise QueryError(f"{self.label}: {_describe(exc)}") from None
        finally:
            with conn.lock:
                conn.running = False
                if conn.aborted:
                    _unbind(conn.connection)
        code = result["result"]
        entries = [
            Entry(
                dn=item["dn"],
                attributes={
                    name.lower(): _decode(values) for name, values in item["raw_attributes"].items()
                },
            )
            for item in response or ()
            if item.get("type") == "searchResEntry"
        ]
        if code == _NO_SUCH_OBJECT:
            return []
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED) or (
            code == _SIZE_LIMIT_EXCEEDED and not entries
        ):
            raise QueryError(
                f"{self.label}: ldap_search(base={base}, filter={search_filter}) failed: "
                f"{result['description']} ({code})"
            )
        return entries

    async def search(self, conn: _Conn, base: str, search_filter: str) -> list[Entry]:
        """Run the search on ``conn``; raises ``ConnectError`` or ``QueryError``."""
        return await trio.to_thread.run_sync(
            self._search_sync,
            conn,
            base,
            search_filter,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    def _bind_sync(self, dn: str, password: str) -> int:
        connection = self._new_connection(dn, password)
        try:
            self._open(connection)
            _, result, _, _ = connection.bind()
        except Exception as exc:
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None
        finally:
            _unbind(connection)
        code: int = result["result"]
        if code not in (_SUCCESS, _INVALID_CREDENTIALS):
            raise QueryError(
                f"{self.label}: ldap_bind({dn}) failed: {result['description']} ({code})"
            )
        return code

    async def bind(self, _conn: _Conn, dn: str, password: str) -> bool:
        """True if ``dn`` / ``password`` bind (on a connection of their own)."""
        code = await trio.to_thread.run_sync(
            self._bind_sync, dn, password, limiter=self._limiter, abandon_on_cancel=True
        )
        return code == _SUCCESS

    async def close(self, conn: _Conn) -> None:
        await trio.to_thread.run_sync(self.abort, conn, limiter=self._limiter)

    def abort(self, conn: _Conn) -> None:
        with conn.lock:
            conn.aborted = True
            if conn.running:
                return  # the thread unbinds when its search returns
        _unbind(conn.connection)


def _unbind(connection: Any) -> None:
    """Unbind and make sure the socket is closed, even when the connection is broken."""
    with contextlib.suppress(Exception):
        connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


# -- the passdb ------------------------------------------------------------------------


class LdapPassdb:
    """An ldap passdb that returns the stored password (``auth_bind = no``)."""

    def __init__(self, config: LdapConfig, failover: Failover[LdapConnector]) -> None:
        self.default_pass_scheme: str = config.default_pass_scheme
        #: the auth cache key comes from these variables
        self.cache_key: str = config.auth_bind_userdn or (config.base + config.pass_filter)
        self._config = config
        self._failover = failover

    async def _search(self, variables: Variables) -> Entry | None:
        config = self._config
        try:
            search_filter = expand(config.pass_filter, variables, filter_escape)
            base = expand(config.base, variables, dn_escape)
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand pass_filter or base: {exc}") from None

        async def search(pool: HostPool[LdapConnector]) -> list[Entry]:
            connector = pool.connector
            return await pool.run(lambda conn: connector.search(conn, base, search_filter))

        try:
            entries = await self._failover.run(search)
        except (ConnectError, QueryError) as exc:
            raise PassdbTempFail(f"ldap: {exc}") from None
        if not entries:
            return None
        if len(entries) > 1:
            raise PassdbTempFail(
                f"pass_filter matched multiple objects, aborting: {', '.join(e.dn for e in entries[:3])}"
            )
        return entries[0]

    def _fields(self, entry: Entry, variables: Variables) -> tuple[tuple[str, str | None], ...]:
        try:
            return tuple(entry_fields(entry, self._config.fields, variables))
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand pass_attrs: {exc}") from None

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Search ``pass_filter`` and return the entry's ``pass_attrs`` fields."""
        variables = request_variables(request)
        entry = await self._search(variables)
        if entry is None:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        return PassdbReply(PassdbResult.OK, self._fields(entry, variables))


class LdapBindPassdb(LdapPassdb):
    """``auth_bind = yes``: the password is checked by binding as the user."""

    async def _bind(self, dn: str, password: str) -> bool:
        async def bind(pool: HostPool[LdapConnector]) -> bool:
            connector = pool.connector
            return await pool.run(lambda conn: connector.bind(conn, dn, password))

        try:
            return await self._failover.run(bind)
        except (ConnectError, QueryError) as exc:
            raise PassdbTempFail(f"ldap: {exc}") from None

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Without a password: the entry's fields (none with ``auth_bind_userdn``)."""
        if self._config.auth_bind_userdn is not None:
            return PassdbReply(PassdbResult.OK)
        return await super().lookup(request)

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        """Bind as the user's DN with ``password``."""
        if not password.reveal():
            # an empty password would be an anonymous bind, which always succeeds
            log.info("ldap(%s): Login attempt with empty password", request.user)
            return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
        variables = request_variables(request)
        userdn = self._config.auth_bind_userdn
        if userdn is not None:
            try:
                dn = expand(userdn, variables, dn_escape)
            except ExpandError as exc:
                raise PassdbTempFail(f"Failed to expand auth_bind_userdn: {exc}") from None
            fields: tuple[tuple[str, str | None], ...] = ()
        else:
            entry = await self._search(variables)
            if entry is None:
                return PassdbReply(PassdbResult.USER_UNKNOWN)
            dn = entry.dn
            fields = self._fields(entry, variables)
        if not await self._bind(dn, password.reveal()):
            return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
        return PassdbReply(PassdbResult.OK, fields)


@contextlib.asynccontextmanager
async def _opened(config: LdapConfig) -> AsyncIterator[Passdb]:
    limiter = trio.CapacityLimiter(THREADS)
    pools: list[HostPool[LdapConnector]] = [
        HostPool(
            LdapConnector(config, server, limiter),
            maxconns=THREADS,
            connect_timeout=config.connect_timeout + 1,
            query_timeout=config.receive_timeout + 1,
        )
        for server in config.servers
    ]
    failover = Failover(pools)
    try:
        yield LdapBindPassdb(config, failover) if config.auth_bind else LdapPassdb(config, failover)
    finally:
        await failover.aclose()


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The ldap passdb for ``settings.args`` (the LDAP file); raises ``ConfigError``.

    Reads and checks the file now; connects only when used.
    """
    return _opened(read_ldap_config(settings))
