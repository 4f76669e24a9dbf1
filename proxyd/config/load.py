"""Build the frozen :class:`Settings` from a configuration file.

``load_settings(path)`` parses the file (:mod:`proxyd.config.parser`), checks
every name against :mod:`proxyd.config.schema`, converts the values, applies
Dovecot's merge rules and cross-checks, and returns a new ``Settings``.  Every
problem is a :class:`~proxyd.errors.ConfigError` with ``FILE:LINE``.

Merge rules, as in Dovecot:

* A later ``key = value`` replaces an earlier one.
* ``service NAME { }`` blocks with the same name are one service;
  ``inet_listener NAME { }`` blocks with the same name are one listener, and
  a listener named like a built-in one (``imap`` port 143, ``imaps`` port 993
  with ``ssl = yes``, ``pop3`` port 110, ``pop3s`` port 995 with ``ssl = yes``)
  changes only the fields it sets.  ``port = 0`` keeps the
  listener in the table; whoever binds listeners skips it.
* ``passdb [NAME] { }`` blocks are kept in file order; two with the same
  name are an error.
* ``auth_debug = yes`` implies ``auth_verbose = yes`` (Dovecot's
  ``login_settings_check``).

Cross-checks: ``ssl = yes|required`` (``yes`` is the default) needs both
``ssl_cert`` and ``ssl_key``; a passdb or userdb needs a ``driver``.

``Settings.explicit`` maps every applied setting to where it was last set:
top-level names as is, nested ones as Dovecot-style paths
(``service/imap-login``, ``service/imap-login/inet_listener/imap/port``,
``passdb/0``, ``passdb/0/driver`` with the passdb's position).  Allow-listed
mail-store settings and userdb blocks, which are ignored, are not in it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from collections.abc import Iterator
from typing import Any, Final

from proxyd.config import filters, hosts, schema
from proxyd.config.parser import (
    ParseOptions,
    RawSection,
    RawSetting,
    RawTree,
    parse_file,
    parse_text,
)
from proxyd.config.settings import (
    FilterBlock,
    InetListener,
    IPNetwork,
    PassdbSettings,
    ServiceSettings,
    Settings,
    UnixListener,
    UnusedItem,
)
from proxyd.errors import ConfigError, Location
from proxyd.protocols import registry
from proxyd.secret import Secret
from proxyd.setting.values import InvalidValue

log = logging.getLogger("proxyd.config")

#: how the main configuration file is parsed
CONFIG_OPTIONS: Final = ParseOptions(
    variable_defaults=schema.variable_defaults(),
    section_names=schema.SECTION_NAMES,
)

_LISTENER_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(InetListener))
_PASSDB_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(PassdbSettings))


def load_settings(path: str) -> Settings:
    """Read, check and convert the configuration file ``path`` (and what it includes)."""
    return settings_from_tree(parse_file(path, CONFIG_OPTIONS))


def load_settings_text(text: str, filename: str) -> Settings:
    """Like :func:`load_settings` for ``text`` given directly, named ``filename``.

    Relative ``!include`` and ``<FILE`` paths start in ``filename``'s directory.
    """
    return settings_from_tree(parse_text(text, filename, CONFIG_OPTIONS))


def settings_from_tree(tree: RawTree) -> Settings:
    """Check and convert a parsed configuration into :class:`Settings`."""
    return _Loader(tree).build()


def _parse(spec: schema.SettingSpec, item: RawSetting) -> Any:
    try:
        return spec.parse(item.value)
    except InvalidValue as error:
        raise ConfigError(item.location, str(error)) from None


def _subnet(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _unix_listener_settings(section: RawSection) -> Iterator[tuple[RawSetting, Any]]:
    """The settings of a ``service { unix_listener { } }`` block, each checked and parsed."""
    for item in section.items:
        if isinstance(item, RawSection):
            raise ConfigError(
                item.location, f"Unknown section: service {{ unix_listener {{ {item.name}"
            )
        spec = schema.UNIX_LISTENER.get(item.key)
        if spec is None:
            raise ConfigError(item.location, _unknown("service { unix_listener { ", item.key))
        yield item, _parse(spec, item)


def _unknown(path: str, key: str) -> str:
    """Dovecot's wording: ``Unknown setting: service { inet_listener { foo``."""
    return f"Unknown setting: {path}{key}"


class _Loader:
    def __init__(self, tree: RawTree) -> None:
        self.tree = tree
        self.values: dict[str, Any] = {}
        self.explicit: dict[str, Location] = {}
        self.listeners: dict[str, dict[str, InetListener]] = {
            name: {listener.name: listener for listener in service.listeners}
            for name, service in Settings().services.items()
        }
        self.unix_listeners: dict[str, dict[str, UnixListener]] = {
            name: {listener.name: listener for listener in service.unix_listeners}
            for name, service in Settings().services.items()
        }
        self.service_locations: dict[str, Location] = {}
        self.service_values: dict[str, dict[str, Any]] = {}
        self.passdbs: list[PassdbSettings] = []
        self.unnamed_sections = 0
        self.filters: list[FilterBlock] = []
        self.unused: list[UnusedItem] = []

    def build(self) -> Settings:
        for item in self.tree.items:
            if isinstance(item, RawSetting):
                self._top_setting(item)
            else:
                self._top_section(item)
        if self.values.get("auth_debug"):
            self.values["auth_verbose"] = True
        self._check_protocols()
        self._check_ssl()
        self._check_http_ssl()
        self._check_filters()
        defaults = Settings().services
        services = {
            name: dataclasses.replace(
                defaults.get(name) or ServiceSettings(name=name),
                listeners=tuple(listeners.values()),
                unix_listeners=tuple(self.unix_listeners.get(name, {}).values()),
                location=self.service_locations.get(name),
                explicit=tuple(self.service_values.get(name, {})),
                **self.service_values.get(name, {}),
            )
            for name, listeners in self.listeners.items()
        }
        return Settings(
            config_path=self.tree.path,
            services=services,
            passdbs=tuple(self.passdbs),
            filters=tuple(self.filters),
            unused=tuple(self.unused),
            hostdomain=hosts.my_hostdomain(),
            explicit=self.explicit,
        ).with_values(self.values)

    # --- top level ------------------------------------------------------------

    def _top_setting(self, item: RawSetting) -> None:
        key = item.key
        spec = schema.TOP.get(key)
        if spec is not None:
            value = _parse(spec, item)
            if spec.pem:
                self.values[f"{key}_path"] = self._check_pem(spec, item)
            self.values[spec.attribute] = Secret(value) if spec.secret else value
            self.explicit[key] = item.location
        elif key in schema.UNUSED_TOP:
            self.unused.append(UnusedItem(item.location, key))
        elif key in schema.ROADMAP_TOP or key in schema.DOVECOT_TOP:
            raise ConfigError(item.location, schema.not_supported(key))
        else:
            raise ConfigError(item.location, _unknown("", key))

    @staticmethod
    def _check_pem(spec: schema.SettingSpec, item: RawSetting) -> str:
        """Dovecot wants ``ssl_cert = <FILE``; returns the file's absolute path ("" if none)."""
        what = "private key" if spec.secret else "certificate"
        if item.source_file is None:
            if item.value == "":
                return ""
            if "-----BEGIN" not in item.value:
                shown = "FILE" if spec.secret else item.value
                raise ConfigError(
                    item.location,
                    f"{spec.name}: There is no valid PEM {what}. "
                    f"(You probably forgot '<' from {spec.name}=<{shown})",
                )
            return ""
        if "-----BEGIN" not in item.value:
            raise ConfigError(
                item.location, f"{spec.name}: There is no valid PEM {what} in {item.source_file}"
            )
        return os.path.abspath(item.source_file)

    def _top_section(self, section: RawSection) -> None:
        name = section.name
        if name == "service":
            self._service(section)
        elif name == "passdb":
            self._passdb(section)
        elif name == "userdb":
            self._userdb(section)
            self._unused_section(section)
        elif name in schema.UNUSED_SECTIONS:
            self._unused_section(section)
        elif name in ("protocol", "local", "remote"):
            self._filter(section, FilterBlock(location=section.location))
        elif name in schema.DOVECOT_SECTIONS:
            raise ConfigError(section.location, f"section '{name}' is not supported yet")
        else:
            raise ConfigError(section.location, f"Unknown section: {name}")

    def _unused_section(self, section: RawSection, parent: str = "") -> None:
        label = f" {section.label}" if section.label else ""
        what = f"{section.name}{label} {{ }}"
        if parent:
            what = f"{parent} {{ {what} }}"
        self.unused.append(UnusedItem(section.location, what))

    def _check_protocols(self) -> None:
        protocols = self.values.get("protocols", ())
        try:
            schema.check_protocols(protocols)
        except InvalidValue as error:
            raise ConfigError(self.explicit.get("protocols"), str(error)) from None
        # each protocol's own rules (LMTP: lmtp_proxy = yes), on its settings as they stand
        records = Settings().with_values(self.values).protocol_settings
        for name in protocols:
            check = registry.BY_NAME[name].settings.check
            problem = check(records[name]) if check is not None else None
            if problem is not None:
                setting, message = problem
                raise ConfigError(self.explicit.get(setting) or self.explicit.get("protocols"), message)

    def _check_filters(self) -> None:
        """Login processes get a TLS context ready for each combination of TLS blocks."""
        tls_blocks = [
            block
            for block in self.filters
            if any(attribute in filters.TLS_FIELDS for attribute, _ in block.values)
        ]
        if len(tls_blocks) > filters.MAX_TLS_BLOCKS:
            raise ConfigError(
                tls_blocks[filters.MAX_TLS_BLOCKS].location,
                f"more than {filters.MAX_TLS_BLOCKS} protocol/local/remote blocks set ssl settings",
            )

    def _check_ssl(self) -> None:
        ssl = self.values.get("ssl", "yes")
        if ssl == "no":
            return
        if bool(self.values.get("ssl_alt_cert")) != bool(self.values.get("ssl_alt_key", Secret(""))):
            where = self.explicit.get("ssl_alt_cert") or self.explicit.get("ssl_alt_key")
            raise ConfigError(where, "ssl_alt_cert and ssl_alt_key go together")
        for key in ("ssl_cert", "ssl_key"):
            value = self.values.get(key)
            if value:
                continue
            message = f"ssl enabled, but {key} not set"
            where = self.explicit.get("ssl")
            if where is None:
                # ssl = yes is the default: there is no line to point at
                raise ConfigError(None, f"{self.tree.path}: {message} (ssl = yes is the default)")
            raise ConfigError(where, message)

    def _check_http_ssl(self) -> None:
        """The master's HTTP listeners use ssl_cert/ssl_key: not there with ssl = no."""
        if self.values.get("ssl", "yes") != "no":
            return
        for service in schema.MASTER_HTTP_SERVICES:
            for listener in self.listeners.get(service, {}).values():
                if listener.ssl:
                    raise ConfigError(listener.location, "ssl = yes on this listener, but ssl = no")

    # --- service { inet_listener { } } -----------------------------------------

    def _service(self, section: RawSection) -> None:
        name = section.label
        if name == "":
            raise ConfigError(section.location, "service is missing name")
        if name == schema.AUTH_SERVICE:
            self._auth_service(section)
            return
        if name not in schema.IMPLEMENTED_SERVICES:
            if name in schema.DOVECOT_SERVICES:
                # a service a proxy does not run: its whole block is listed, not applied
                self._unused_section(section)
                return
            raise ConfigError(section.location, f"Unknown service: {name}")
        self.service_locations.setdefault(name, section.location)
        self.explicit.setdefault(f"service/{name}", section.location)
        for item in section.items:
            if isinstance(item, RawSection):
                if item.name == "inet_listener" and name == "tcpwrap":
                    raise ConfigError(item.location, "service tcpwrap has no inet_listener")
                if name == "tcpwrap" and item.name in ("unix_listener", "fifo_listener"):
                    self._unix_listener(name, item)
                    continue
                if name in schema.MASTER_HTTP_SERVICES and not (
                    item.name == "inet_listener" and item.label == "http"
                ):
                    # the doveadm server's own sockets (its TCP protocol, doveadm-server):
                    # proxyd runs no doveadm server, only the HTTP API in its master
                    self._unused_section(item, f"service {name}")
                elif item.name == "inet_listener":
                    self._listener(name, item)
                elif item.name == "unix_listener" and name in schema.FREE_UNIX_LISTENERS:
                    self._free_unix_listener(name, item)
                elif item.name in schema.DOVECOT_SERVICE_SECTIONS:
                    raise ConfigError(item.location, f"section '{item.name}' is not supported yet")
                else:
                    raise ConfigError(item.location, f"Unknown section: service {{ {item.name}")
            elif name in schema.MASTER_HTTP_SERVICES:
                # process settings of Dovecot's doveadm server; the master serves the API
                self.unused.append(UnusedItem(item.location, f"service {name} {{ {item.key} }}"))
            elif item.key in schema.SERVICE:
                spec = schema.SERVICE[item.key]
                self.service_values.setdefault(name, {})[spec.attribute] = _parse(spec, item)
                self.explicit[f"service/{name}/{item.key}"] = item.location
            elif item.key in schema.ROADMAP_SERVICE or item.key in schema.DOVECOT_SERVICE:
                raise ConfigError(item.location, schema.not_supported(item.key))
            else:
                raise ConfigError(item.location, _unknown("service { ", item.key))

    def _auth_service(self, section: RawSection) -> None:
        """proxyd's auth process: its user, group and login/login socket; the sockets of
        Dovecot's auth service that proxyd does not create (auth-userdb, auth-master,
        auth-client, ...) are listed as unused."""
        name = schema.AUTH_SERVICE
        self.service_locations.setdefault(name, section.location)
        self.explicit.setdefault(f"service/{name}", section.location)
        for item in section.items:
            if isinstance(item, RawSection):
                if item.name == "unix_listener" and item.label == schema.OWN_UNIX_LISTENERS[name]:
                    self._unix_listener(name, item)
                elif item.name in ("unix_listener", "fifo_listener"):
                    self._unused_section(item, parent="service auth")
                else:
                    raise ConfigError(item.location, f"Unknown section: service {{ {item.name}")
            elif item.key in ("user", "group"):
                spec = schema.SERVICE[item.key]
                self.service_values.setdefault(name, {})[spec.attribute] = _parse(spec, item)
                self.explicit[f"service/{name}/{item.key}"] = item.location
            elif item.key in schema.SERVICE or item.key in schema.DOVECOT_SERVICE:
                raise ConfigError(item.location, schema.not_supported(f"service auth {{ {item.key}"))
            else:
                raise ConfigError(item.location, _unknown("service { ", item.key))

    def _unix_listener(self, service: str, section: RawSection) -> None:
        """The socket a service proxyd runs creates: its mode and owner (``mode = 0``: none)."""
        own = schema.OWN_UNIX_LISTENERS[service]
        if section.name != "unix_listener" or section.label != own:
            raise ConfigError(
                section.location,
                f"service {service}: proxyd creates only unix_listener {own}, "
                f"not {section.name} {section.label}",
            )
        current = self.unix_listeners[service][own]
        changes: dict[str, Any] = {}
        for item, value in _unix_listener_settings(section):
            if item.key == "path":
                if value.removeprefix(self.values.get("base_dir", "") + "/") != own:
                    # login processes find it by this name inside their chroot
                    raise ConfigError(item.location, f"path: proxyd keeps this socket at {own}")
                continue
            changes[item.key] = value
            self.explicit[f"service/{service}/unix_listener/{own}/{item.key}"] = item.location
        self.unix_listeners[service][own] = dataclasses.replace(
            current, location=section.location, **changes
        )

    # --- protocol / local / remote ---------------------------------------------

    def _filter(self, section: RawSection, parent: FilterBlock) -> None:
        """A filter block, with Dovecot's nesting rules (config-parser.c)."""
        name, value, where = section.name, section.label, section.location
        block = dataclasses.replace(parent, location=where, values=(), keys=())
        if name == "protocol":
            if parent.protocol:
                raise ConfigError(where, "Nested protocol { protocol { .. } } block not allowed")
            if value.lstrip("!") not in schema.IMPLEMENTED_PROTOCOLS and not value.startswith("!"):
                # a protocol proxyd does not serve (lda, doveadm, imap-urlauth, ...): never matches
                self._unused_section(section)
                return
            block = dataclasses.replace(block, protocol=value)
        else:  # local or remote
            if name == "local" and parent.remote is not None:
                raise ConfigError(
                    where, "remote { local { .. } } not allowed (use local { remote { .. } } instead)"
                )
            if parent.protocol:
                raise ConfigError(
                    where,
                    f"protocol {{ {name} {{ .. }} }} not allowed (use {name} {{ protocol {{ .. }} }} instead)",
                )
            network = self._filter_net(value, where)
            outer = parent.local if name == "local" else parent.remote
            if outer is not None and not _subnet(network, outer):
                raise ConfigError(
                    where, f"{name} net1 {{ {name} net2 {{ .. }} }} requires net2 to be inside net1"
                )
            if name == "local":
                block = dataclasses.replace(block, local=network, local_text=value)
            else:
                block = dataclasses.replace(block, remote=network, remote_text=value)
        values: dict[str, Any] = {}
        keys: dict[str, Location] = {}
        for item in section.items:
            if isinstance(item, RawSection):
                if item.name in ("protocol", "local", "remote"):
                    self._filter(item, block)
                elif item.name in schema.UNUSED_SECTIONS:
                    self._unused_section(item, parent=f"{name} {value}")
                elif item.name in schema.DOVECOT_SECTIONS:
                    raise ConfigError(
                        item.location, f"section '{item.name}' inside '{name}' is not supported yet"
                    )
                else:
                    raise ConfigError(item.location, f"Unknown section: {item.name}")
                continue
            key = item.key
            spec = schema.TOP.get(key)
            if key in schema.UNUSED_TOP:
                self.unused.append(UnusedItem(item.location, f"{name} {value} {{ {key} }}"))
            elif spec is None:
                self._top_setting(item)  # raises: not supported yet, or unknown
            elif (
                key in schema.FILTER_LOGIN
                or (key in schema.FILTER_AUTH and block.local is None and block.remote is None)
                or block.protocol in schema.FILTER_BY_PROTOCOL.get(key, ())
                or (
                    block.protocol in schema.FILTER_PER_PROCESS.get(key, ())
                    and block.local is None
                    and block.remote is None
                )
            ):
                parsed = _parse(spec, item)
                if spec.pem:
                    values[f"{key}_path"] = self._check_pem(spec, item)
                values[spec.attribute] = Secret(parsed) if spec.secret else parsed
                keys[key] = item.location
            else:
                raise ConfigError(
                    item.location, f"setting '{key}' can't be set inside a '{name}' block"
                )
        if values:
            self.filters.append(
                dataclasses.replace(block, values=tuple(values.items()), keys=tuple(keys.items()))
            )

    @staticmethod
    def _filter_net(value: str, where: Location) -> IPNetwork:
        """``IP[/bits]`` or ``NAME[/bits]`` (Dovecot's config_parse_net: a name's first address)."""
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        name, slash, bits = value.partition("/")
        try:
            address = hosts.resolve_name(name)[0]
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(where, f"gethostbyname({name}) failed: {reason}") from None
        if not slash:
            return ipaddress.ip_network(address)
        try:
            return ipaddress.ip_network(f"{address}/{bits}", strict=False)
        except ValueError:
            raise ConfigError(where, f"Invalid network mask: {bits}") from None

    def _listener(self, service: str, section: RawSection) -> None:
        name = section.label
        if name == "":
            # Dovecot names an unnamed section by a counter
            name = str(self.unnamed_sections)
            self.unnamed_sections += 1
        table = self.listeners[service]
        current = table.get(name) or InetListener(name=name, port=0)
        changes: dict[str, Any] = {}
        for item in section.items:
            if isinstance(item, RawSection):
                raise ConfigError(
                    item.location, f"Unknown section: service {{ inet_listener {{ {item.name}"
                )
            spec = schema.INET_LISTENER.get(item.key)
            if spec is None:
                if item.key == "name":
                    raise ConfigError(item.location, schema.not_supported(item.key))
                raise ConfigError(item.location, _unknown("service { inet_listener { ", item.key))
            value = _parse(spec, item)
            if service in schema.MASTER_HTTP_SERVICES and item.key == "haproxy" and value:
                raise ConfigError(item.location, f"service {service}: haproxy is not supported here")
            if spec.attribute in _LISTENER_FIELDS:
                changes[spec.attribute] = value
            self.explicit[f"service/{service}/inet_listener/{name}/{item.key}"] = item.location
        table[name] = dataclasses.replace(
            current, location=current.location or section.location, **changes
        )

    def _free_unix_listener(self, service: str, section: RawSection) -> None:
        """An MTA-facing socket (LMTP): any path, absolute or under ``base_dir``; ``path`` renames it."""
        name = section.label
        if not name:
            raise ConfigError(section.location, "unix_listener is missing path")
        table = self.unix_listeners.setdefault(service, {})
        current = table.get(name) or UnixListener(name, 0o666)
        changes: dict[str, Any] = {}
        for item, value in _unix_listener_settings(section):
            changes["name" if item.key == "path" else item.key] = value
            self.explicit[f"service/{service}/unix_listener/{name}/{item.key}"] = item.location
        table[name] = dataclasses.replace(current, location=current.location or section.location, **changes)

    # --- passdb / userdb -----------------------------------------------------------

    def _passdb(self, section: RawSection) -> None:
        index = len(self.passdbs)
        fields: dict[str, Any] = {"name": section.label}
        for item in section.items:
            if isinstance(item, RawSection):
                raise ConfigError(item.location, f"Unknown section: passdb {{ {item.name}")
            spec = schema.PASSDB.get(item.key)
            if spec is None:
                if item.key in schema.DOVECOT_PASSDB:
                    raise ConfigError(item.location, schema.not_supported(item.key))
                raise ConfigError(item.location, _unknown("passdb { ", item.key))
            value = _parse(spec, item)
            if spec.attribute in _PASSDB_FIELDS:
                fields[spec.attribute] = value
            self.explicit[f"passdb/{index}/{item.key}"] = item.location
        name = fields["name"]
        if name and any(passdb.name == name for passdb in self.passdbs):
            raise ConfigError(section.location, f"passdb/{name} already exists")
        if not fields.get("driver"):
            raise ConfigError(section.location, "passdb is missing driver")
        self.explicit[f"passdb/{index}"] = section.location
        self.passdbs.append(
            PassdbSettings(
                location=section.location,
                config_dir=os.path.dirname(section.location.file) or ".",
                **fields,
            )
        )

    @staticmethod
    def _userdb(section: RawSection) -> None:
        """Accepted and ignored (a proxy needs no userdb), but still checked for typos."""
        driver = ""
        for item in section.items:
            if isinstance(item, RawSection):
                raise ConfigError(item.location, f"Unknown section: userdb {{ {item.name}")
            if item.key not in schema.USERDB_KEYS:
                raise ConfigError(item.location, _unknown("userdb { ", item.key))
            if item.key == "driver":
                driver = item.value
        if not driver:
            raise ConfigError(section.location, "userdb is missing driver")
