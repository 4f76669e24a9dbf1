"""One host pool per ``host=`` of a ``connect`` line, tried in order: shared by pgsql and mysql."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from passdb_drivers import _aio
from passdb_drivers._pool import Failover, HostPool, SqlConnector
from passdb_drivers.sql.config import ServerConnect, SqlConfig

#: (the shared asyncio loop, one host, the connect settings) -> that host's connector
ConnectorFactory = Callable[[Any, str, ServerConnect], SqlConnector]


@asynccontextmanager
async def open_failover(
    config: SqlConfig, connector: ConnectorFactory
) -> AsyncIterator[Failover[SqlConnector]]:
    """Host pools for ``config`` on the shared asyncio loop; closed on exit."""
    server = config.server
    assert server is not None
    async with _aio.open_loop() as loop:
        pools: list[HostPool[SqlConnector]] = [
            HostPool(
                connector(loop, host, server),
                maxconns=server.maxconns,
                connect_timeout=server.connect_timeout,
                query_timeout=server.query_timeout,
            )
            for host in server.hosts
        ]
        failover = Failover(pools)
        try:
            yield failover
        finally:
            await failover.aclose()
