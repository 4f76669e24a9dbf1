"""``dovecot-sql.conf.ext`` and the ``connect`` strings of the three drivers.

Keys (Dovecot's ``db-sql.c``): ``driver`` (pgsql | mysql | sqlite),
``connect``, ``password_query`` (default: Dovecot's), ``default_pass_scheme``
(default MD5), and ``user_query``, ``update_query``, ``iterate_query``,
``userdb_warning_disable``, which a proxy has no use for: they are accepted and
ignored so that a Dovecot file loads as is.  Any other key is an error.

``connect``:

* **pgsql**: libpq ``key=value`` pairs (``'quoted values'`` allowed): ``host``
  (a name, an address or a socket directory), ``hostaddr``, ``port``,
  ``dbname``, ``user``, ``password``, ``connect_timeout``, ``sslmode``,
  ``sslrootcert``, ``sslcert``, ``sslkey``, ``application_name`` and
  ``options`` (only ``-c name=value`` items, sent as session settings, e.g.
  ``options='-c statement_timeout=2000'``).
* **mysql**: Dovecot's own list: ``host`` (a ``/path`` is a UNIX socket),
  ``port``, ``user``, ``password``, ``dbname``, ``client_flags``,
  ``connect_timeout``, ``read_timeout``, ``write_timeout``, ``ssl_ca``,
  ``ssl_ca_path``, ``ssl_cert``, ``ssl_key``, ``ssl_cipher``,
  ``ssl_verify_server_cert``, ``option_file``, ``option_group``,
  ``character_set``.
* **sqlite**: the database file (relative paths start at the SQL file's
  directory); it is opened read-only.

Both servers take Dovecot's ``maxconns=N`` (connections per host and per
process, default 5) and several ``host=`` items: the hosts are tried in order
and one that fails is skipped for a while (failover).  Timeouts: connecting
``connect_timeout`` (default 5 s, Dovecot's); a query gets ``read_timeout``
(mysql) or the ``statement_timeout`` given in ``options`` plus one second
(pgsql), else :data:`DEFAULT_QUERY_TIMEOUT`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from passdb_drivers._conffile import read_args_file
from proxyd.auth.schemes import is_known_scheme
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from proxyd.secret import Secret

DRIVERS: Final = ("pgsql", "mysql", "sqlite")
#: Dovecot's built-in password_query
DEFAULT_PASSWORD_QUERY: Final = (
    "SELECT username, domain, password FROM users WHERE username = '%n' AND domain = '%d'"  # noqa: S105
)
DEFAULT_PASS_SCHEME: Final = "MD5"  # noqa: S105 - a scheme name
DEFAULT_MAXCONNS: Final = 5
#: Dovecot's SQL_CONNECT_TIMEOUT_SECS
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
#: proxyd's limit for one query when the connect string sets none
DEFAULT_QUERY_TIMEOUT: Final = 5.0

_USED_KEYS: Final = frozenset({"driver", "connect", "password_query", "default_pass_scheme"})
_IGNORED_KEYS: Final = frozenset(
    {"user_query", "update_query", "iterate_query", "userdb_warning_disable"}
)
_PGSQL_KEYS: Final = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "password", "connect_timeout",
        "sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "options",
        "maxconns",
    }
)  # fmt: skip
_MYSQL_KEYS: Final = frozenset(
    {
        "host", "port", "user", "password", "dbname", "client_flags", "connect_timeout",
        "read_timeout", "write_timeout", "ssl_ca", "ssl_ca_path", "ssl_cert", "ssl_key",
        "ssl_cipher", "ssl_verify_server_cert", "option_file", "option_group",
        "character_set", "maxconns",
    }
)  # fmt: skip
_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class ServerConnect:
    """A parsed pgsql/mysql ``connect`` string; one entry in ``hosts`` per ``host=``."""

    hosts: tuple[str, ...]
    port: int
    database: str
    user: str
    password: Secret = field(repr=False)
    maxconns: int
    connect_timeout: float
    query_timeout: float
    #: the remaining driver-specific options, as written
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SqlConfig:
    """What the sql passdb needs from ``dovecot-sql.conf.ext``."""

    path: str
    driver: str
    password_query: str
    default_pass_scheme: str
    #: pgsql/mysql; None for sqlite
    server: ServerConnect | None
    #: sqlite: the absolute database path
    database_path: str = ""
    #: where ``password_query`` was set (None: the built-in default)
    query_location: Location | None = None


def _split_libpq(text: str, location: Location) -> list[tuple[str, str]]:
    """libpq conninfo: ``key = value`` pairs, values optionally in single quotes."""
    items: list[tuple[str, str]] = []
    pos = 0
    length = len(text)
    while True:
        while pos < length and text[pos].isspace():
            pos += 1
        if pos >= length:
            return items
        eq = text.find("=", pos)
        if eq == -1:
            raise ConfigError(location, f"connect: missing '=' after '{text[pos:].split()[0]}'")
        key = text[pos:eq].strip()
        pos = eq + 1
        while pos < length and text[pos] in " \t":
            pos += 1
        value: list[str] = []
        if pos < length and text[pos] == "'":
            pos += 1
            while True:
                if pos >= length:
                    raise ConfigError(location, "connect: unterminated quoted string")
                char = text[pos]
                if char == "\\" and pos + 1 < length:
                    value.append(text[pos + 1])
                    pos += 2
                    continue
                pos += 1
                if char == "'":
                    break
                value.append(char)
        else:
            while pos < length and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < length:
                    pos += 1
                value.append(text[pos])
                pos += 1
        items.append((key, "".join(value)))


def _split_dovecot(text: str, location: Location) -> list[tuple[str, str]]:
    """Dovecot's mysql connect string: blank-separated ``key=value`` words."""
    items: list[tuple[str, str]] = []
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise ConfigError(location, f"connect: Invalid connect string item: {word}")
        items.append((key, value))
    return items


def _number(key: str, value: str, location: Location, *, minimum: int = 0) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < minimum:
        raise ConfigError(location, f"connect: {key} must be a number (got '{value}')")
    return int(value)


def _statement_timeout(options: str, location: Location) -> tuple[dict[str, str], float | None]:
    """pgsql ``options='-c a=b -c c=d'``: session settings, and statement_timeout in seconds."""
    settings: dict[str, str] = {}
    words = options.split()
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            item = words[index + 1]
            index += 2
        elif (word.startswith("-c") and len(word) > 2) or (word.startswith("--") and "=" in word):
            item = word[2:]
            index += 1
        else:
            raise ConfigError(
                location, f"connect: options: only '-c name=value' is supported: {word}"
            )
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(location, f"connect: options: invalid setting '{item}'")
        settings[name.replace("-", "_")] = value
    timeout = None
    raw = settings.get("statement_timeout")
    if raw is not None:
        digits = raw.rstrip("ms").strip()
        if raw.endswith("s") and not raw.endswith("ms"):
            timeout = float(digits) if digits.isdigit() else None
        elif digits.isdigit():
            timeout = int(digits) / 1000
        if timeout is None:
            raise ConfigError(location, f"connect: options: invalid statement_timeout '{raw}'")
    return settings, timeout


def parse_server_connect(driver: str, text: str, location: Location) -> ServerConnect:
    """Parse a pgsql or mysql ``connect`` value; raises ``ConfigError`` at ``location``."""
    pairs = _split_libpq(text, location) if driver == "pgsql" else _split_dovecot(text, location)
    allowed = _PGSQL_KEYS if driver == "pgsql" else _MYSQL_KEYS
    hosts: list[str] = []
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise ConfigError(location, f"connect: Unknown connect string: {key}")
        if key in ("host", "hostaddr"):
            hosts.extend(part for part in value.split(",") if part)
        else:
            options[key] = value
    if not hosts:
        hosts = ["localhost"]
    port = _number("port", options.pop("port", "0"), location)
    if port > 65535:
        raise ConfigError(location, f"connect: invalid port {port}")
    maxconns = _number(
        "maxconns", options.pop("maxconns", str(DEFAULT_MAXCONNS)), location, minimum=1
    )
    connect_timeout = float(
        _number("connect_timeout", options.pop("connect_timeout", "5"), location, minimum=1)
    )
    query_timeout = DEFAULT_QUERY_TIMEOUT
    if driver == "mysql":
        if "read_timeout" in options:
            read_timeout = options.pop("read_timeout")
            query_timeout = float(_number("read_timeout", read_timeout, location, minimum=1))
    else:
        sslmode = options.get("sslmode")
        if sslmode is not None and sslmode not in _SSLMODES:
            raise ConfigError(location, f'connect: invalid sslmode value: "{sslmode}"')
        if "options" in options:
            _, statement = _statement_timeout(options["options"], location)
            if statement is not None:
                query_timeout = statement + 1.0
    return ServerConnect(
        hosts=tuple(hosts),
        port=port,
        database=options.pop("dbname", ""),
        user=options.pop("user", ""),
        password=Secret(options.pop("password", "")),
        maxconns=maxconns,
        connect_timeout=connect_timeout,
        query_timeout=query_timeout,
        options=options,
    )


def session_settings(server: ServerConnect, location: Location | None) -> dict[str, str]:
    """pgsql: the ``-c name=value`` items of ``options``."""
    raw = server.options.get("options")
    if raw is None:
        return {}
    return _statement_timeout(raw, location or Location("connect", 0))[0]


def read_sql_config(settings: PassdbSettings) -> SqlConfig:
    """Read ``args`` (the path of ``dovecot-sql.conf.ext``); raises ``ConfigError``."""
    args = settings.args.strip()
    if not args:
        raise ConfigError(settings.location, "passdb sql: args must name dovecot-sql.conf.ext")
    path = args if os.path.isabs(args) else os.path.join(settings.config_dir, args)
    values: dict[str, tuple[str, Location]] = {}
    for item in read_args_file(path, settings.location):
        if item.key not in _USED_KEYS and item.key not in _IGNORED_KEYS:
            raise ConfigError(item.location, f"Unknown setting: {item.key}")
        values[item.key] = (item.value, item.location)
    end = Location(path, 0)
    if "driver" not in values:
        raise ConfigError(end, "sql: driver not set in configuration file")
    driver, driver_location = values["driver"]
    if driver not in DRIVERS:
        raise ConfigError(
            driver_location, f"sql: Unknown driver '{driver}' (supported: {', '.join(DRIVERS)})"
        )
    if "connect" not in values:
        raise ConfigError(end, "sql: connect string not set in configuration file")
    connect, connect_location = values["connect"]
    scheme, scheme_location = values.get("default_pass_scheme", (DEFAULT_PASS_SCHEME, end))
    if not is_known_scheme(scheme):
        raise ConfigError(scheme_location, f"sql: Unknown default_pass_scheme: {scheme}")
    query, query_location = values.get("password_query", (DEFAULT_PASSWORD_QUERY, None))
    if driver == "sqlite":
        database = connect.strip()
        if not database:
            raise ConfigError(connect_location, "sql: sqlite needs the database path in connect")
        if not os.path.isabs(database):
            database = os.path.join(os.path.dirname(path), database)
        return SqlConfig(
            path=path,
            driver=driver,
            password_query=query,
            default_pass_scheme=scheme,
            server=None,
            database_path=database,
            query_location=query_location,
        )
    return SqlConfig(
        path=path,
        driver=driver,
        password_query=query,
        default_pass_scheme=scheme,
        server=parse_server_connect(driver, connect, connect_location),
        query_location=query_location,
    )
