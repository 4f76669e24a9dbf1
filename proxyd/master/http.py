"""The master's own HTTP listeners: the doveadm HTTP API (``service doveadm``) and
``/metrics`` (``service stats``).

The master already holds every process's session accounts (it asks them for
``proxyctl who``/``kick``), so it answers the API itself; it never sees a
password hash or passdb credential, which stay in the auth process.
"""

from __future__ import annotations

import ssl
from typing import Protocol

import trio

from proxyd.config.settings import Settings
from proxyd.doveadm.commands import Node
from proxyd.doveadm.server import DoveadmHttp
from proxyd.httpd import Handler, serve_listener
from proxyd.ipc.inherited import BoundSocket
from proxyd.stats.metrics import Snapshot, StatsHttp


class Master(Node, Protocol):
    """What the HTTP listeners ask of the master (``proxyd.master.main.Master``)."""

    settings: Settings

    async def metrics_snapshot(self) -> Snapshot: ...


def handler_for(master: Master, bound: BoundSocket) -> Handler:
    if bound.service == "doveadm":
        return DoveadmHttp(master, lambda: master.settings).handle
    if bound.service == "stats":
        return StatsHttp(master.metrics_snapshot).handle
    raise ValueError(f"no HTTP service {bound.service}")


async def serve_master_http(
    master: Master,
    bound: BoundSocket,
    tls: ssl.SSLContext | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(bound.sock))
    wrap = None
    if bound.listener.ssl:
        assert tls is not None  # the configuration check makes sure (ssl != no)
        context = tls

        def wrap(stream: trio.SocketStream) -> trio.abc.Stream:
            return trio.SSLStream(stream, context, server_side=True)

    await serve_listener(listener, handler_for(master, bound), wrap=wrap, task_status=task_status)
