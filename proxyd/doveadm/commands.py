"""The doveadm commands proxyd answers, run against the node's sessions.

``authCacheFlush`` is ``doveadm auth cache flush [USER...]`` (answered
``[{"entries": "N"}]``, every entry when no user is given).

``proxyList`` and ``proxyKick`` are Dovecot's ``doveadm proxy list`` and
``doveadm proxy kick`` (``login-proxy.c``'s LIST-FULL and KICK / KICK-HOST):
list rows carry ``username``, ``service``, ``src-ip``, ``dest-ip`` and
``dest-port``, every value a string; a kick answers ``[{"count": "N"}]``.
Dovecot's ``socket-path`` and ``passdb-field`` parameters name its IPC socket
and alternative user names, which proxyd does not have: they are not listed,
and a request that uses them gets ``invalidRequest``.

Users in ``proxyKick`` are masks as for ``proxyctl kick`` (``*`` and ``?``), and
with ``host`` they narrow the kick to those users' sessions on that backend
(Dovecot's KICK-HOST would take them for more host names).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

from proxyd.doveadm.protocol import (
    EX_USAGE,
    Call,
    CommandSpec,
    ErrorType,
    ParamSpec,
    ParamType,
    error_entry,
    response_entry,
)
from proxyd.ipc.messages import WhoRow
from proxyd.log import sanitize

log = logging.getLogger("proxyd.doveadm")


class Node(Protocol):
    """What the commands need of the process that holds the sessions' accounts."""

    async def who(self, mask: str) -> list[WhoRow]: ...

    async def kick(self, masks: Sequence[str], host: str | None = None) -> int: ...

    async def flush_cache(self, users: list[str]) -> int: ...


PROXY_LIST: Final = CommandSpec("proxy list")
PROXY_KICK: Final = CommandSpec(
    "proxy kick", (ParamSpec("host", ParamType.STRING), ParamSpec("user", ParamType.ARRAY))
)
AUTH_CACHE_FLUSH: Final = CommandSpec("auth cache flush", (ParamSpec("user", ParamType.ARRAY),))
COMMANDS: Final = (PROXY_LIST, PROXY_KICK, AUTH_CACHE_FLUSH)


async def run_call(node: Node, call: Call, remote_ip: str) -> list[Any]:
    """One command's entry of the answer; nothing a client sends makes this raise."""
    if call.command is None:
        return error_entry(ErrorType.UNKNOWN_METHOD, call.tag)
    if call.invalid:
        return error_entry(ErrorType.INVALID_REQUEST, call.tag)
    if call.command is PROXY_LIST:
        log.info("Executing command '%s'", call.command.name)
        return response_entry(proxy_list_rows(await node.who("*")), call.tag)
    if call.command is AUTH_CACHE_FLUSH:
        log.info("Executing command '%s'", call.command.name)
        users = call.params.get("user")
        flushed = await node.flush_cache([str(u) for u in users] if isinstance(users, list) else [])
        return response_entry([{"entries": str(flushed)}], call.tag)
    assert call.command is PROXY_KICK
    users = call.params.get("user")
    host = call.params.get("host")
    masks = [str(u) for u in users] if isinstance(users, list) else []
    host_text = host if isinstance(host, str) else None
    if not masks and host_text is None:
        # doveadm prints the usage (and a server process would exit with it)
        return error_entry(ErrorType.EXIT_CODE, call.tag, EX_USAGE)
    log.info("Executing command '%s'", call.command.name)
    count = await node.kick(masks or ["*"], host_text)
    what = " ".join(masks) if host_text is None else f"-h {host_text} {' '.join(masks) or '*'}"
    what = sanitize(what, 200)
    log.info("doveadm proxy kick %s from %s: %d connections kicked", what, remote_ip, count)
    return response_entry([{"count": str(count)}], call.tag)


def proxy_list_rows(sessions: list[WhoRow]) -> list[dict[str, str]]:
    """``who`` rows as Dovecot's LIST-FULL columns."""
    rows = []
    for session in sorted(sessions, key=lambda s: (s.user, -s.age)):
        dest_ip, _, dest_port = session.backend.rpartition(":")
        rows.append(
            {
                "username": session.user,
                "service": session.protocol,
                "src-ip": session.ip,
                "dest-ip": dest_ip,
                "dest-port": dest_port,
            }
        )
    return rows
