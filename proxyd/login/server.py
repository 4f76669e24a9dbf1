"""What a login process knows about a freshly accepted connection."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import trio

from proxyd.auth.request import ConnectionInfo
from proxyd.config.settings import IPNetwork, Settings
from proxyd.protocols.haproxy import ProxyHeader
from proxyd.protocols.sessionid import new_session_id
from proxyd.sockstream import SockStream

log = logging.getLogger("proxyd")


def _plain_ip(ip: str) -> str:
    if ":" not in ip:
        return ip  # the kernel's dotted quad is already canonical; no parsing per connection
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def in_networks(ip: str, networks: Sequence[IPNetwork]) -> bool:
    if not networks:
        return False
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in networks)


def connection_info(sock_stream: trio.SocketStream | SockStream, service: str, settings: Settings, *, tls: bool) -> ConnectionInfo:
    """Addresses, trust and the session id of a freshly accepted connection (Dovecot's ``client_alloc()``)."""
    return connection_info_of(
        sock_stream.socket.getsockname(), sock_stream.socket.getpeername(), service, settings, tls=tls
    )


def fixed_local_address(listener: socket.socket) -> Any:
    """The local address of every connection a listener accepts, when it is bound to one
    address (no ``getsockname()`` per connection then); None for a wildcard or UNIX listener."""
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    address = listener.getsockname()
    if ipaddress.ip_address(address[0].split("%", 1)[0]).is_unspecified:
        return None
    return address


def connection_info_of(
    local: Any, remote: Any, service: str, settings: Settings, *, tls: bool
) -> ConnectionInfo:
    """``connection_info`` from the addresses ``getsockname()``/``accept()`` gave."""
    lip, lport = _plain_ip(local[0]), int(local[1])
    rip, rport = _plain_ip(remote[0]), int(remote[1])
    trusted = in_networks(rip, settings.login_trusted_networks)
    return ConnectionInfo(
        service=service,
        local_ip=lip,
        local_port=lport,
        remote_ip=rip,
        remote_port=rport,
        real_local_ip=lip,
        real_local_port=lport,
        real_remote_ip=rip,
        real_remote_port=rport,
        secured=tls or trusted or rip == lip,
        tls=tls,
        trusted=trusted,
        session_id=new_session_id(rip, rport, time.time_ns() // 1000),
    )


def apply_proxy_header(info: ConnectionInfo, header: ProxyHeader, settings: Settings) -> ConnectionInfo:
    """Addresses from a HAProxy PROXY header; ``real_*`` keep the socket's (spec §8.4).

    Trust is decided on the forwarded client address, and a connection counts as
    secured only when the proxy said the client used TLS or the client is trusted:
    the same-host rule does not apply behind a proxy.
    """
    remote_ip = _plain_ip(header.remote_ip)
    trusted = in_networks(remote_ip, settings.login_trusted_networks)
    return dataclasses.replace(
        info,
        remote_ip=remote_ip,
        remote_port=header.remote_port,
        local_ip=_plain_ip(header.local_ip),
        local_port=header.local_port,
        trusted=trusted,
        secured=info.tls or header.ssl or trusted,
    )
