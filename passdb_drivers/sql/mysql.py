"""MySQL / MariaDB through asyncmy, on the process's asyncio loop (``passdb_drivers._aio``).

asyncmy is chosen over aiomysql (``shared/spec/deps.md`` §3): same API, a
compiled wheel, faster.  Connections run with autocommit, so every lookup
sees the newest committed rows (a kept connection never sits in an old
InnoDB snapshot).  Placeholders are ``%s``; the parameters are strings, which
MySQL compares with any column type.  Values come back as text: bytes
decoded as UTF-8, numbers and dates through ``str()``.

A query cancelled by its deadline closes its connection; the statement may
run on in the server until it ends (``read_timeout`` bounds only the wait).
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import asyncmy
from asyncmy import errors as mysql_errors

from passdb_drivers import _aio
from passdb_drivers._pool import (
    ConnectError,
    Failover,
    QueryError,
    QueryResult,
    SqlConnector,
)
from passdb_drivers.sql.config import ServerConnect, SqlConfig
from passdb_drivers.sql.hosts import open_failover

DEFAULT_PORT: Final = 3306
#: client error codes that mean the connection is gone (CR_SERVER_GONE_ERROR, ...)
_CONNECTION_CODES: Final = frozenset({1053, 1927, 2002, 2003, 2006, 2013, 2055})


def _ssl_context(options: dict[str, str]) -> ssl.SSLContext | None:
    ca, ca_path = options.get("ssl_ca"), options.get("ssl_ca_path")
    cert, key = options.get("ssl_cert"), options.get("ssl_key")
    if not (ca or ca_path or cert):
        return None
    context = ssl.create_default_context(cafile=ca or None, capath=ca_path or None)
    verify = options.get("ssl_verify_server_cert", "no").lower() in ("yes", "1", "true")
    context.check_hostname = verify
    if not verify and not (ca or ca_path):
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key or None)
    if options.get("ssl_cipher"):
        context.set_ciphers(options["ssl_cipher"])
    return context


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, mysql_errors.OperationalError | mysql_errors.InterfaceError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        return isinstance(exc, mysql_errors.InterfaceError) or code in _CONNECTION_CODES
    return isinstance(exc, OSError | EOFError | _aio.AsyncioCancelledError)


async def _fetch(conn: Any, sql: str, params: tuple[str, ...]) -> tuple[tuple[str, ...], Any]:
    """Runs on the asyncio loop."""
    async with conn.cursor() as cursor:
        await cursor.execute(sql, params)
        rows = await cursor.fetchall()
        description = cursor.description or ()
    return tuple(str(column[0]) for column in description), rows


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class MysqlConnector:
    """One MySQL server; see ``passdb_drivers._pool.Connector``."""

    def __init__(self, loop: _aio.AsyncioLoop, host: str, server: ServerConnect) -> None:
        self._loop = loop
        self._server = server
        options = server.options
        port = server.port or DEFAULT_PORT
        self._kwargs: dict[str, Any] = {
            "user": server.user or None,
            "database": server.database or None,
            "port": port,
            "connect_timeout": server.connect_timeout,
            "charset": options.get("character_set", "utf8mb4"),
            "autocommit": True,
        }
        if host.startswith("/"):
            self._kwargs["unix_socket"] = host
            self.label = host
        else:
            self._kwargs["host"] = host
            self.label = f"{host}:{port}"
        if "client_flags" in options:
            try:
                self._kwargs["client_flag"] = int(options["client_flags"], 0)
            except ValueError:
                self._kwargs["client_flag"] = 0
        if "option_file" in options:
            self._kwargs["read_default_file"] = options["option_file"]
        if "option_group" in options:
            self._kwargs["read_default_group"] = options["option_group"]
        context = _ssl_context(options)
        if context is not None:
            self._kwargs["ssl"] = context

    async def connect(self) -> Any:
        try:
            return await self._loop.run(
                _connect, password=self._server.password.reveal(), **self._kwargs
            )
        except Exception as exc:
            raise ConnectError(f"{self.label}: {_describe(exc)}") from None

    async def query(self, conn: Any, sql: str, params: tuple[str, ...]) -> QueryResult:
        try:
            columns, rows = await self._loop.run(_fetch, conn, sql, params)
        except Exception as exc:
            if _is_connection_error(exc):
                raise ConnectError(f"{self.label}: {_describe(exc)}") from None
            raise QueryError(f"{self.label}: {_describe(exc)}") from None
        return QueryResult(columns, tuple(tuple(_text(value) for value in row) for row in rows))

    async def close(self, conn: Any) -> None:
        await self._loop.run(conn.ensure_closed)

    def abort(self, conn: Any) -> None:
        conn.close()


async def _connect(**kwargs: Any) -> Any:
    """Runs on the asyncio loop (asyncmy binds the connection to the running loop)."""
    return await asyncmy.connect(**kwargs)


def open_backend(config: SqlConfig) -> AbstractAsyncContextManager[Failover[SqlConnector]]:
    """Host pools for ``config`` on the shared asyncio loop; closed on exit."""
    return open_failover(config, MysqlConnector)
