"""PostgreSQL through asyncpg, on the process's asyncio loop (``passdb_drivers._aio``).

One asyncpg connection per pool slot (``passdb_drivers._pool.HostPool``): a query is a single
call across the Trio/asyncio bridge, which prepares the statement once per
connection (kept with it) and then only binds and fetches: one round trip.

Parameters are strings.  The server infers each placeholder's type from the
query; where that is a number or a boolean the string is converted first, as
the server would convert a quoted literal (``id = '%u'`` against an integer
column).  A placeholder whose type cannot be inferred (``SELECT '%n@%d' AS
user``) is cast to text, which is what PostgreSQL does with an untyped literal
there.  Values come back as text: booleans as ``t``/``f`` like libpq, bytes
decoded as UTF-8, everything else through ``str()``.
"""

from __future__ import annotations

import logging
import re
import ssl
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import asyncpg

from passdb_drivers import _aio
from passdb_drivers._pool import (
    ConnectError,
    Failover,
    QueryError,
    QueryResult,
    SqlConnector,
)
from passdb_drivers.sql.config import ServerConnect, SqlConfig, session_settings
from passdb_drivers.sql.hosts import open_failover

log = logging.getLogger("proxyd.auth.sql")

DEFAULT_PORT: Final = 5432
_INDETERMINATE: Final = re.compile(r"parameter \$(\d+)")
_INT_TYPES: Final = frozenset({"int2", "int4", "int8", "oid"})
_FLOAT_TYPES: Final = frozenset({"float4", "float8"})
_TRUE: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE: Final = frozenset({"f", "false", "n", "no", "off", "0"})


def _ssl_option(options: dict[str, str]) -> ssl.SSLContext | str | None:
    mode = options.get("sslmode")
    rootcert, cert, key = (options.get(k) for k in ("sslrootcert", "sslcert", "sslkey"))
    if not (rootcert or cert):
        return mode
    if mode in ("disable", "allow"):
        return mode
    context = (
        ssl.create_default_context(cafile=rootcert) if rootcert else ssl.create_default_context()
    )
    if mode == "verify-full":
        context.check_hostname = True
    elif rootcert and mode in (None, "prefer", "require", "verify-ca"):
        # libpq: require with a root certificate verifies the chain, not the name
        context.check_hostname = False
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


def _convert(value: str, type_name: str) -> Any:
    """The Python value asyncpg needs for a placeholder of type ``type_name``."""
    try:
        if type_name in _INT_TYPES:
            return int(value.strip())
        if type_name in _FLOAT_TYPES:
            return float(value)
        if type_name == "numeric":
            return Decimal(value.strip())
    except (ValueError, InvalidOperation):
        raise QueryError(f"invalid input syntax for type {type_name}") from None
    if type_name == "bool":
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise QueryError("invalid input syntax for type boolean")
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return isinstance(exc, asyncpg.InterfaceError | OSError | EOFError | _aio.AsyncioCancelledError)


@dataclass(slots=True)
class _PgConn:
    """An asyncpg connection and the statements prepared on it (by SQL text)."""

    connection: Any
    statements: dict[str, Any] = field(default_factory=dict)


async def _prepare(conn: _PgConn, sql: str) -> Any:
    statement = conn.statements.get(sql)
    if statement is None:
        statement = await conn.connection.prepare(sql)
        conn.statements[sql] = statement
    return statement


async def _fetch(
    conn: _PgConn, sql: str, params: tuple[str, ...], fixes: dict[str, str]
) -> tuple[str, tuple[str, ...], list[Any]]:
    """Runs on the asyncio loop: prepare (once per connection), convert the parameters, fetch."""
    statement = None
    while statement is None:
        try:
            statement = await _prepare(conn, sql)
        except asyncpg.exceptions.IndeterminateDatatypeError as exc:
            match = _INDETERMINATE.search(str(exc))
            number = match.group(1) if match else ""
            fixed = re.sub(rf"\${number}(?!\d)", f"${number}::text", sql, count=1)
            if not number or fixed == sql:
                raise
            fixes[sql] = fixed  # remembered for the next requests
            sql = fixed
    args = [
        _convert(value, param.name)
        for value, param in zip(params, statement.get_parameters(), strict=True)
    ]
    try:
        rows = await statement.fetch(*args)
    except (
        asyncpg.exceptions.InvalidCachedStatementError,
        asyncpg.exceptions.OutdatedSchemaCacheError,
    ):
        # the table changed under the kept statement: prepare it again, once
        conn.statements.pop(sql, None)
        statement = await _prepare(conn, sql)
        rows = await statement.fetch(*args)
    columns = tuple(attribute.name for attribute in statement.get_attributes())
    return sql, columns, rows


class PgConnector:
    """One PostgreSQL server; see ``passdb_drivers._pool.Connector``."""

    def __init__(self, loop: _aio.AsyncioLoop, host: str, server: ServerConnect) -> None:
        self._loop = loop
        self._host = host
        self._server = server
        port = server.port or DEFAULT_PORT
        self.label = f"{host}:{port}" if not host.startswith("/") else f"{host}/.s.PGSQL.{port}"
        self._port = port
        self._ssl = _ssl_option(server.options)
        self._settings = session_settings(server, None)
        if "application_name" in server.options:
            self._settings["application_name"] = server.options["application_name"]
        self._fixes: dict[str, str] = {}

    async def connect(self) -> _PgConn:
        server = self._server
        try:
            connection = await self._loop.run(
                asyncpg.connect,
                host=self._host,
                port=self._port,
                user=server.user or None,
                password=server.password.reveal() or None,
                database=server.database or None,
                timeout=server.connect_timeout,
                ssl=self._ssl,
                server_settings=self._settings or None,
            )
        except Exception as exc:
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None
        return _PgConn(connection)

    async def query(self, conn: _PgConn, sql: str, params: tuple[str, ...]) -> QueryResult:
        sql = self._fixes.get(sql, sql)
        try:
            _, columns, rows = await self._loop.run(_fetch, conn, sql, params, self._fixes)
        except QueryError:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                raise ConnectError(f"{self.label}: {_describe(exc)}") from None
            raise QueryError(f"{self.label}: {_describe(exc)}") from None
        return QueryResult(columns, tuple(tuple(_text(value) for value in row) for row in rows))

    async def close(self, conn: _PgConn) -> None:
        await self._loop.run(conn.connection.close, timeout=2)

    def abort(self, conn: _PgConn) -> None:
        conn.connection.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def open_backend(config: SqlConfig) -> AbstractAsyncContextManager[Failover[SqlConnector]]:
    """Host pools for ``config`` on the shared asyncio loop; closed on exit."""
    return open_failover(config, PgConnector)
