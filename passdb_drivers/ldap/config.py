"""The ldap passdb's args file (``dovecot-ldap.conf.ext``) and its TLS settings."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import ldap3

from passdb_drivers._conffile import read_args_file
from proxyd.auth.expand import iter_variables
from proxyd.auth.schemes import is_known_scheme
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from proxyd.secret import Secret

DEFAULT_PASS_FILTER: Final = "(&(objectClass=posixAccount)(uid=%u))"  # noqa: S105 - a filter
DEFAULT_PASS_ATTRS: Final = "uid=user,userPassword=password"  # noqa: S105 - attribute names
DEFAULT_PASS_SCHEME: Final = "CRYPT"  # noqa: S105 - a scheme name
#: whole seconds (ldap3 packs them into a socket option); Dovecot's DB_LDAP_CONNECT_TIMEOUT_SECS is 5 as well
CONNECT_TIMEOUT: Final = 5
RECEIVE_TIMEOUT: Final = 5

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
SCOPES: Final = {"base": ldap3.BASE, "onelevel": ldap3.LEVEL, "subtree": ldap3.SUBTREE}
DEREFS: Final = {
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
LDAP_VAR: Final = re.compile(r"^ldap:([^:]+)")


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


def ldap_variables(template: str) -> list[str]:
    """The attribute names a template reads with ``%{ldap:NAME}``."""
    names: list[str] = []
    for ref in iter_variables(template):
        if ref.name.startswith(("ldap_ptr:", "@")):
            raise ValueError(f"{template}: %{{{ref.name}}} is not supported yet")
        match = LDAP_VAR.match(ref.name)
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
            for other in ldap_variables(template):
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
    if scope.lower() not in SCOPES:
        raise ConfigError(scope_location, f"LDAP: Unknown scope option '{scope}'")
    deref, deref_location = get("deref", "never")
    if deref.lower() not in DEREFS:
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
        ldap_variables(filter_text)
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
