"""Connections per host, failover between hosts, and the deadlines of every request.

The database-specific modules (``sql/pgsql.py``, ``sql/mysql.py``,
``sql/sqlite.py`` and ``ldap/connection.py``) implement :class:`Connector`: open one
connection, close it, drop it; plus their own request methods (an SQL query,
an LDAP search).  Everything else is here, in Trio, the same for all of them:

* :class:`HostPool` keeps up to ``maxconns`` connections to one host (Dovecot's
  SQL limit is per host and per process).  Connections are opened when needed
  and kept while they work.  Waiting for a free slot and connecting share the
  ``connect_timeout`` deadline; the request itself has ``query_timeout``.  A
  connection whose request timed out, was cancelled or broke is dropped at
  once, never reused.  When a kept connection turns out to be dead (the server
  restarted, an idle timeout), the request is retried once on a new one.
* :class:`Failover` tries the hosts in configuration order, skipping a host
  that failed recently (for 1 s, doubling up to 30 s while it keeps failing)
  unless every host is in that state.  Only trouble reaching a server moves on
  to the next host; an error the server returns for the request does not.

Errors: :class:`ConnectError` (could not connect, connection lost, server
shutting down) and :class:`QueryError` (the server refused the request, or it
took too long).  The passdbs turn both into ``PassdbTempFail``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

import trio

log = logging.getLogger("proxyd.auth.pool")

#: a failed host is skipped this long at first, doubling up to the maximum
DOWN_DELAY: Final = 1.0
MAX_DOWN_DELAY: Final = 30.0
#: closing connections politely at shutdown may take this long
CLOSE_TIMEOUT: Final = 2.0


class BackendError(Exception):
    """Root of the errors a connector raises; the text never holds a password."""


class ConnectError(BackendError):
    """The server could not be reached, or the connection broke."""


class QueryError(BackendError):
    """The server answered the request with an error, or it took too long."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows of an SQL query, every value a string or None (NULL)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...] = field(repr=False)


class Connector(Protocol):
    """How to reach one server (or one SQLite file)."""

    #: for log messages: ``host:port`` or the file name
    label: str

    async def connect(self) -> Any:
        """A new connection; raises ``ConnectError``."""
        ...

    async def close(self, conn: Any) -> None:
        """Close a healthy connection politely."""
        ...

    def abort(self, conn: Any) -> None:
        """Drop a connection at once (it may be in the middle of something)."""
        ...


class SqlConnector(Connector, Protocol):
    """A connector for the sql passdb."""

    async def query(self, conn: Any, sql: str, params: tuple[str, ...]) -> QueryResult:
        """Run ``sql`` with ``params``; raises ``ConnectError`` or ``QueryError``."""
        ...


_K = TypeVar("_K", bound=Connector)
_T = TypeVar("_T")


class HostPool(Generic[_K]):
    """Up to ``maxconns`` connections to one host; see the module docstring."""

    def __init__(
        self,
        connector: _K,
        *,
        maxconns: int,
        connect_timeout: float,
        query_timeout: float,
    ) -> None:
        self.connector = connector
        self._slots = trio.Semaphore(maxconns)
        self._free: list[Any] = []
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._closed = False
        #: failover state, kept by Failover
        self.failures = 0
        self.down_until = -math.inf

    @property
    def label(self) -> str:
        return self.connector.label

    @property
    def idle_connections(self) -> int:
        """How many open connections wait for a request."""
        return len(self._free)

    async def run(self, operation: Callable[[Any], Awaitable[_T]]) -> _T:
        """``await operation(conn)`` on a connection of this host, with the pool's rules.

        ``operation`` raises ``ConnectError`` when the connection broke and
        ``QueryError`` when only the request failed.
        """
        if self._closed:
            raise ConnectError(f"{self.label}: pool is closed")
        try:
            with trio.fail_after(self._connect_timeout):
                await self._slots.acquire()
        except trio.TooSlowError:
            raise ConnectError(
                f"{self.label}: no free connection within {self._connect_timeout:g} s"
            ) from None
        try:
            conn, reused = await self._connection()
            try:
                return await self._attempt(operation, conn)
            except ConnectError:
                if not reused:
                    raise
            # a kept connection died (server restart, idle timeout): once more, on a new one
            conn = await self._new_connection()
            return await self._attempt(operation, conn)
        finally:
            self._slots.release()

    async def _attempt(self, operation: Callable[[Any], Awaitable[_T]], conn: Any) -> _T:
        try:
            with trio.fail_after(self._query_timeout):
                result = await operation(conn)
        except trio.TooSlowError:
            self.connector.abort(conn)
            raise QueryError(f"{self.label}: no answer within {self._query_timeout:g} s") from None
        except QueryError:
            self._free.append(conn)  # the connection itself is fine
            raise
        except BaseException:
            self.connector.abort(conn)  # broken, cancelled, or a bug: state unknown
            raise
        self._free.append(conn)
        return result

    async def _connection(self) -> tuple[Any, bool]:
        if self._free:
            return self._free.pop(), True
        return await self._new_connection(), False

    async def _new_connection(self) -> Any:
        try:
            with trio.fail_after(self._connect_timeout):
                return await self.connector.connect()
        except trio.TooSlowError:
            raise ConnectError(
                f"{self.label}: connect timed out after {self._connect_timeout:g} s"
            ) from None

    async def aclose(self) -> None:
        """Close the idle connections (there are no busy ones once the passdb is closed)."""
        self._closed = True
        pending, self._free = self._free, []
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            while pending:
                try:
                    await self.connector.close(pending[-1])
                except Exception as exc:  # closing is best effort
                    log.debug("%s: closing a connection failed: %s", self.label, exc)
                    self.connector.abort(pending[-1])
                pending.pop()
        for conn in pending:
            self.connector.abort(conn)


class Failover(Generic[_K]):
    """The hosts of one passdb, tried in order; see the module docstring."""

    def __init__(self, pools: Sequence[HostPool[_K]]) -> None:
        if not pools:
            raise ValueError("at least one host is needed")
        self.pools = tuple(pools)

    def _order(self) -> list[HostPool[_K]]:
        now = trio.current_time()
        up = [pool for pool in self.pools if pool.down_until <= now]
        down = sorted(
            (pool for pool in self.pools if pool.down_until > now), key=lambda p: p.down_until
        )
        return up + down

    async def run(self, operation: Callable[[HostPool[_K]], Awaitable[_T]]) -> _T:
        """``await operation(pool)`` for the first host whose pool does not raise ``ConnectError``."""
        errors: list[str] = []
        for pool in self._order():
            try:
                result = await operation(pool)
            except ConnectError as exc:
                pool.failures += 1
                delay = min(DOWN_DELAY * 2 ** (pool.failures - 1), MAX_DOWN_DELAY)
                pool.down_until = trio.current_time() + delay
                if len(self.pools) > 1:
                    log.warning("%s (skipping it for %g s)", exc, delay)
                errors.append(str(exc))
                continue
            if pool.failures:
                log.info("%s is reachable again", pool.label)
            pool.failures = 0
            pool.down_until = -math.inf
            return result
        raise ConnectError("; ".join(errors))

    async def aclose(self) -> None:
        """Close every host's idle connections."""
        for pool in self.pools:
            await pool.aclose()


async def sql_query(
    failover: Failover[SqlConnector], sql: str, params: tuple[str, ...]
) -> QueryResult:
    """Run one SQL query on the first reachable host."""

    async def on_host(pool: HostPool[SqlConnector]) -> QueryResult:
        connector = pool.connector
        return await pool.run(lambda conn: connector.query(conn, sql, params))

    return await failover.run(on_host)
