"""SQLite through the standard ``sqlite3`` module, in worker threads.

``connect`` names the database file; it is opened read-only (a proxy never
writes, and a missing file must not silently become an empty database).  The
pool (``passdb_drivers._pool.HostPool``) keeps up to ``maxconns`` connections (default 5); each
is used by one thread at a time, and the threads come from a limiter of the
same size that belongs to this passdb alone.  SQLite's busy timeout is the
query timeout, so a locked database makes the thread give up by itself; a
query cut short by its deadline is interrupted (``Connection.interrupt()``)
and its connection closed by the thread when it returns.
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from passdb_drivers._pool import (
    ConnectError,
    Failover,
    HostPool,
    QueryError,
    QueryResult,
    SqlConnector,
)
from passdb_drivers.sql.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUERY_TIMEOUT, SqlConfig

DEFAULT_MAXCONNS: Final = 5


@dataclass(slots=True)
class _Conn:
    db: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    aborted: bool = False


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


class SqliteConnector:
    """One SQLite file; see ``passdb_drivers._pool.Connector``."""

    def __init__(self, path: str, *, threads: int, busy_timeout: float) -> None:
        self.label = path
        self._uri = pathlib.Path(path).as_uri() + "?mode=ro"
        self._busy_timeout = busy_timeout
        self._limiter = trio.CapacityLimiter(threads)

    def _open(self) -> _Conn:
        try:
            db = sqlite3.connect(
                self._uri, uri=True, timeout=self._busy_timeout, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConnectError(f"{self.label}: {exc}") from None
        return _Conn(db)

    async def connect(self) -> _Conn:
        return await trio.to_thread.run_sync(self._open, limiter=self._limiter)

    def _run(self, conn: _Conn, sql: str, params: tuple[str, ...]) -> QueryResult:
        with conn.lock:
            if conn.aborted:
                raise ConnectError(f"{self.label}: connection was closed")
            conn.running = True
        try:
            cursor = conn.db.execute(sql, params)
            rows = cursor.fetchall()
            columns = tuple(str(column[0]) for column in cursor.description or ())
        except sqlite3.OperationalError as exc:
            # unable to open / disk I/O / locked: the file, not the query
            text = str(exc)
            if "unable to open" in text or "disk I/O" in text or "locked" in text:
                raise ConnectError(f"{self.label}: {text}") from None
            raise QueryError(f"{self.label}: {text}") from None
        except sqlite3.Error as exc:
            raise QueryError(f"{self.label}: {exc}") from None
        finally:
            with conn.lock:
                conn.running = False
                if conn.aborted:
                    conn.db.close()
        return QueryResult(columns, tuple(tuple(_text(value) for value in row) for row in rows))

    async def query(self, conn: _Conn, sql: str, params: tuple[str, ...]) -> QueryResult:
        # abandoned on cancel: the thread is interrupted (abort) and cleans up itself
        return await trio.to_thread.run_sync(
            self._run, conn, sql, params, limiter=self._limiter, abandon_on_cancel=True
        )

    async def close(self, conn: _Conn) -> None:
        self.abort(conn)
        await trio.lowlevel.checkpoint()

    def abort(self, conn: _Conn) -> None:
        with conn.lock:
            conn.aborted = True
            if conn.running:
                conn.db.interrupt()  # the thread closes it when the query returns
                return
        conn.db.close()


@asynccontextmanager
async def open_backend(config: SqlConfig) -> AsyncIterator[Failover[SqlConnector]]:
    """A pool for the database file of ``config``; closed on exit."""
    connector = SqliteConnector(
        config.database_path, threads=DEFAULT_MAXCONNS, busy_timeout=DEFAULT_QUERY_TIMEOUT
    )
    pool: HostPool[SqlConnector] = HostPool(
        connector,
        maxconns=DEFAULT_MAXCONNS,
        connect_timeout=DEFAULT_CONNECT_TIMEOUT,
        query_timeout=DEFAULT_QUERY_TIMEOUT,
    )
    failover = Failover([pool])
    try:
        yield failover
    finally:
        await failover.aclose()
