"""Connecting to a backend and logging in there (Dovecot's ``login-proxy.c``).

One ``proxy_login()`` call covers the whole ``proxy_timeout``: connect, optional
TLS, the protocol engine's login dialogue, and up to ``login_proxy_max_reconnects``
retries one second apart for the failure kinds Dovecot retries.  Protocol work
is the sans-IO backend engine's; this module only moves bytes and keeps time.

The login process cannot resolve names (it is chrooted): the auth process
put the address into ``hostip`` when ``host`` is a name.  Connections are made
from the passdb's ``source_ip`` or the next of ``login_source_ips``, and are
counted in the process's :class:`~proxyd.proxied.proxystate.ProxyState` record
for the backend (``proxy_host_immediate_failure_after``, disconnect pacing).
TLS towards the backend sends ``host`` as SNI and, unless ``any-cert``,
checks the certificate against it; a TLS failure is an INTERNAL failure (no
reconnect; the client gets a temporary failure).
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import assert_never

import trio

from proxyd.auth.request import ConnectionInfo
from proxyd.errtext import cause_text, os_error
from proxyd.login.proxyfields import ProxyTarget
from proxyd.protocols.backend_events import (
    RETRYABLE_FAILURES,
    BackendFailed,
    BackendIgnored,
    BackendLoggedIn,
    BackendNeedsTLS,
    BackendUntagged,
    ProxyFailure,
)
from proxyd.protocols.events import _NeedData
from proxyd.protocols.spec import BackendLogin, LoginServerEngine, ProtocolSpec
from proxyd.proxied.proxystate import BackendRecord, ProxyState
from proxyd.sockstream import SockStream, connect_ip, sockname_text

_RECONNECT_DELAY = 1.0
#: Linux IP_BIND_ADDRESS_NO_PORT: don't reserve a port at bind() (avoids port exhaustion)
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_RECONNECT_MIN_REMAINING = 1.1
#: failures that get proxy_connect_error_append()'s " (after N secs[, N reconnects])"
_CONNECT_ERRORS = ("connect(", "Login timed out in state=")
#: login_proxy_failed()'s prefixes of the retried kinds (its debug "- reconnecting" line)
_RECONNECT_LOG_PREFIX = {
    ProxyFailure.REMOTE: "Aborting due to remote server: ",
    ProxyFailure.PROTOCOL: "Remote server sent invalid input: ",
}


@dataclass(slots=True)
class BackendConnected:
    """A logged-in backend connection, ready for the relay."""

    stream: trio.abc.Stream
    ip: str
    client_reply: bytes  # the final reply for the client (its tag, backend capabilities)
    trailing: bytes  # backend bytes after the reply
    elapsed: float
    reconnects: int
    #: the process's record for this backend; the connection counts as proxying there
    record: BackendRecord | None = None
    source_ip: str = ""


SendToClient = Callable[[bytes], Awaitable[None]]


async def proxy_login(
    *,
    spec: ProtocolSpec,
    target: ProxyTarget,
    login: BackendLogin,
    client_engine: LoginServerEngine,
    tls_context: Callable[[bool], ssl.SSLContext],
    time_budget: float,
    max_reconnects: int,
    send_to_client: SendToClient,
    log: logging.Logger,
    state: ProxyState | None = None,
    source_ip: str = "",
    log_user: str = "",
    client_since: float | None = None,
) -> BackendConnected | BackendFailed:
    """Connect and log in, retrying as Dovecot does; never raises for backend trouble.

    ``source_ip`` is the address to connect from ("" = the OS's choice);
    ``log_user`` the user as log lines show it (``proxy(USER,IP:PORT): ...``);
    ``state`` is the login process's proxy state (a private one if None);
    ``client_since`` when the client connected (Trio time), for the ``duration=`` of
    "Disconnected by server" (Dovecot counts from the client's connect).
    """
    started = trio.current_time()
    client_since = started if client_since is None else client_since
    deadline = started + time_budget
    reconnects = 0
    ip = target.ip
    state = state if state is not None else ProxyState()
    record = state.record(ip, target.port)
    while True:
        record.num_waiting_connections += 1
        try:
            if state.host_is_down(record, target.host_immediate_failure_after):
                # the backend has been failing for a while: no reconnects either
                return BackendFailed(ProxyFailure.CONNECT, "Host is down")
            result = await _attempt(
                spec, target, ip, login, client_engine, tls_context, deadline, send_to_client,
                record, source_ip, log, log_user, client_since,
            )
        finally:
            record.num_waiting_connections -= 1
        if isinstance(result, BackendConnected):
            result.elapsed = trio.current_time() - started
            result.reconnects = reconnects
            result.record = record
            result.source_ip = source_ip
            return result
        remaining = deadline - trio.current_time()
        text = result.log_text
        if text.startswith(_CONNECT_ERRORS):
            # proxy_connect_error_append(): only connect errors and timeouts say how long it took
            elapsed = math.floor(trio.current_time() - started)
            text += f" (after {elapsed} secs"
            text += f", {reconnects} reconnects" if reconnects else ""
            text += f", local={result.local})" if result.local else ")"
        if result.kind not in RETRYABLE_FAILURES or reconnects >= max_reconnects or remaining <= _RECONNECT_MIN_REMAINING:
            return BackendFailed(result.kind, text, result.client_reply)
        log.debug(
            "proxy(%s,%s:%d): %s%s - reconnecting (attempt #%d)",
            log_user, ip, target.port, _RECONNECT_LOG_PREFIX.get(result.kind, ""), text, reconnects + 1,
        )
        reconnects += 1
        await trio.sleep(_RECONNECT_DELAY)


async def _attempt(
    spec: ProtocolSpec,
    target: ProxyTarget,
    ip: str,
    login: BackendLogin,
    client_engine: LoginServerEngine,
    tls_context: Callable[[bool], ssl.SSLContext],
    deadline: float,
    send_to_client: SendToClient,
    record: BackendRecord,
    source_ip: str,
    log: logging.Logger,
    log_user: str,
    client_since: float,
) -> BackendConnected | BackendFailed:
    stream: trio.abc.Stream | None = None
    assert spec.login is not None
    engine = spec.login.new_backend(login, client_engine)
    connected = False
    handed_over = False
    # the connection's own address, for Dovecot's ", local=IP:PORT" on connect errors
    local: list[str] = []
    backend_sock: trio.socket.SocketType | None = None
    try:
        with trio.move_on_at(deadline) as scope:
            try:
                sock_stream = await connect_tcp(ip, target.port, source_ip, local)
            except BaseException:
                ProxyState.connect_failed(record)
                raise
            stream = sock_stream
            backend_sock = sock_stream.socket  # its address is asked only for a log line
            connected = True
            ProxyState.connected(record)
            if target.ssl:
                stream = await _start_tls(stream, tls_context(not target.any_cert), target.host)
            while True:
                event = engine.next_event()
                out = engine.data_to_send()
                if out:
                    await stream.send_all(out)
                match event:
                    case _NeedData():
                        data = await stream.receive_some(65536)
                        engine.receive_data(bytes(data))
                    case BackendUntagged():
                        await send_to_client(event.line)
                    case BackendNeedsTLS():
                        stream = await _start_tls(stream, tls_context(not target.any_cert), target.host)
                        engine.tls_started()
                    case BackendIgnored():
                        # Dovecot: e_error() on the proxy's event, and the dialogue goes on
                        log.error("proxy(%s,%s:%d): %s", log_user, ip, target.port, event.log_text)
                    case BackendLoggedIn():
                        result = BackendConnected(stream, ip, event.client_reply, engine.trailing_data(), 0.0, 0)
                        stream = None  # handed over
                        handed_over = True
                        return result
                    case BackendFailed():
                        text = event.log_text
                        if text.startswith("Disconnected by server"):
                            duration = math.floor(trio.current_time() - client_since)
                            text += f" (state={engine.state_name}, duration={duration}s)"
                        return BackendFailed(event.kind, text, event.client_reply)
                    case _:
                        assert_never(event)
        if scope.cancelled_caught:
            if not connected:
                ProxyState.connect_failed(record)
                return BackendFailed(
                    ProxyFailure.CONNECT,
                    f"connect({ip}, {target.port}) failed: Connection timed out",
                    local=_local_text(local, source_ip),
                )
            if backend_sock is not None:
                local.append(sockname_text(backend_sock))
            return BackendFailed(
                ProxyFailure.CONNECT, f"Login timed out in state={engine.state_name}",
                local=_local_text(local, source_ip),
            )
        raise AssertionError("unreachable")
    except _TLSFailure as exc:
        return BackendFailed(ProxyFailure.INTERNAL, f"TLS handshake with {ip}:{target.port} failed: {exc}")
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        text = os_error(exc) if isinstance(exc, OSError) else cause_text(exc, str(exc) or "Connection lost")
        if not connected:
            return BackendFailed(
                ProxyFailure.CONNECT, f"connect({ip}, {target.port}) failed: {text}",
                local=_local_text(local, source_ip),
            )
        duration = math.floor(trio.current_time() - client_since)
        return BackendFailed(
            ProxyFailure.CONNECT,
            f"Disconnected by server: {text} (state={engine.state_name}, duration={duration}s)",
        )
    finally:
        if connected and not handed_over:
            ProxyState.disconnected(record)
        if stream is not None:
            await trio.aclose_forcefully(stream)


class _TLSFailure(Exception):
    pass


def _local_text(local: list[str], source_ip: str) -> str:
    """proxy_connect_error_append()'s ``local=``: the socket's IP:PORT, else the source IP."""
    return next((text for text in local if text), source_ip)


async def _start_tls(stream: trio.abc.Stream, context: ssl.SSLContext, host: str) -> trio.SSLStream[trio.abc.Stream]:
    # host is the SNI name and, unless any-cert, what the certificate must match
    # (an IP literal is matched against IP SANs and sent without SNI)
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        raise _TLSFailure(f"SSL_connect() failed: {cause_text(exc, 'Connection lost')}") from exc
    return tls


async def connect_tcp(ip: str, port: int, source_ip: str = "", local: list[str] | None = None) -> SockStream:
    """A plain TCP connect to an IP (names were resolved before): no happy-eyeballs machinery.

    ``source_ip`` binds first (``login_source_ips``, the LMTP proxy's ``proxy_source_ip``);
    ``local`` gets the failed connection's own ``IP:PORT``."""
    return await connect_ip(ip, port, source_ip, bind_no_port=_IP_BIND_ADDRESS_NO_PORT, local=local)


def backend_login_for(
    target: ProxyTarget, conn: ConnectionInfo, proxy_ttl: int, *, login_user: str = ""
) -> BackendLogin:
    """What the backend login engine needs: the passdb's proxy fields and the client's
    connection facts to forward (ID / XCLIENT), with one hop less of ``proxy_ttl``."""
    return BackendLogin(
        user=target.destuser,
        password=target.password.reveal(),
        master_user=target.master_user,
        mech=target.mech,
        starttls=target.starttls,
        tls_active=target.ssl,
        nopipelining=target.nopipelining,
        not_trusted=target.not_trusted,
        session_id=conn.session_id,
        remote_ip=conn.remote_ip,
        remote_port=conn.remote_port,
        local_ip=conn.local_ip,
        local_port=conn.local_port,
        proxy_ttl=proxy_ttl - 1,
        forward_fields=target.forward_fields,
        client_id=conn.client_id,
        noauth=target.noauth,
        login_user=login_user,
    )
