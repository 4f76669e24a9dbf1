"""Settings whose values are host names or addresses that must be resolved up front.

Dovecot resolves ``login_source_ips`` when a login process starts (before its
chroot) and ``auth_proxy_self`` when the auth process checks its settings.
proxyd's login processes are chrooted and cannot resolve names later either,
so both are resolved while the configuration is loaded (in the master, on
start and on every reload) and the addresses travel inside ``Settings``.

``login_source_ips`` follows ``parse_login_source_ips()`` (``login-common/main.c``):
space or comma separated names/IPs, every address of a name is used, a name
that does not resolve is logged and skipped, and a leading ``?`` keeps only
the addresses this host can bind to.  ``auth_proxy_self`` is space separated;
a name that does not resolve is an error (Dovecot's ``auth_proxy_self_ips``
check).

The host's own canonical name (:func:`my_hostdomain`, the default of
``hostname``) is looked up at the same time, for the same reason.

``proxyd_local_backend = host[:port]`` is parsed here too (the host is resolved
at login time in the auth process, like a passdb ``host``).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from typing import Final

from proxyd.config.settings import HostList, LocalBackend
from proxyd.setting import values as v

log = logging.getLogger("proxyd.config")

_MAX_PORT: Final = 65535


def resolve_name(name: str) -> tuple[str, ...]:
    """Every address of ``name`` (an IP gives itself), in resolver order, without repeats.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    try:
        return (str(ipaddress.ip_address(name)),)
    except ValueError:
        pass
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.cache
def my_hostdomain() -> str:
    """Dovecot's ``my_hostdomain()``: this host's canonical name
    (``gethostbyname(gethostname())->h_name``), else just its host name.

    What ``hostname`` means when it is not set (submission-login's greeting and
    EHLO name).  Looked up once per process, while the configuration is loaded:
    a chrooted login process could not.
    """
    name = socket.gethostname()
    try:
        return socket.gethostbyname_ex(name)[0] or name
    except OSError:
        return name


def can_bind(address: str) -> bool:
    """True when a TCP socket can bind to ``address`` (Dovecot's ``net_try_bind()``)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


def parse_source_ips(value: str) -> HostList:
    """``login_source_ips``: names resolve to all their addresses; ``?`` keeps bindable ones."""
    text = value
    only_working = value.startswith("?")
    if only_working:
        value = value[1:]
    addresses: list[str] = []
    for name in v.split_list(value):
        try:
            found = resolve_name(name)
        except OSError as exc:
            # Dovecot logs and goes on without this name
            log.error("login_source_ips: gethostbyname(%s) failed: %s", name, _gai_text(exc))
            continue
        for address in found:
            if only_working and not can_bind(address):
                continue
            if address not in addresses:
                addresses.append(address)
    return HostList(text, tuple(addresses))


def parse_proxy_self(value: str) -> HostList:
    """``auth_proxy_self``: extra addresses (or names) that count as this host for ``proxy_maybe``."""
    addresses: list[str] = []
    for name in value.split():
        try:
            found = resolve_name(name)
        except OSError as exc:
            raise v.InvalidValue(
                f"auth_proxy_self_ips: gethostbyname({name}) failed: {_gai_text(exc)}"
            ) from None
        addresses.extend(address for address in found if address not in addresses)
    return HostList(value, tuple(addresses))


def format_host_list(value: HostList) -> str:
    return value.text


def parse_local_backend(value: str) -> LocalBackend | None:
    """``proxyd_local_backend = host[:port]`` (``[v6]:port`` for IPv6); empty = none.

    Without a port each protocol uses its default port (143/110, or 993/995 with
    a passdb ``ssl`` field), so one setting serves IMAP and POP3.
    """
    if value == "":
        return None
    if ":" not in value:
        return LocalBackend(value, 0)
    try:
        return LocalBackend(str(ipaddress.IPv6Address(value)), 0)
    except ValueError:
        pass
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise v.InvalidValue(
                f"proxyd_local_backend: Invalid IPv6 address in '{value}'"
            ) from None
        return _local_backend(value, host, port_text)
    if not sep or not host or ":" in host:
        raise v.InvalidValue(
            f"proxyd_local_backend: '{value}' is not host[:port] (write IPv6 as [addr]:port)"
        )
    return _local_backend(value, host, port_text)


def _local_backend(value: str, host: str, port_text: str) -> LocalBackend:
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) <= _MAX_PORT:
        raise v.InvalidValue(f"proxyd_local_backend: Invalid port number in '{value}'")
    return LocalBackend(host, int(port_text))


def format_local_backend(value: LocalBackend | None) -> str:
    if value is None:
        return ""
    if not value.port:
        return value.host
    host = f"[{value.host}]" if ":" in value.host else value.host
    return f"{host}:{value.port}"


def _gai_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def parse_cluster_peers(value: str) -> tuple[str, ...]:
    """``proxyd_cluster_peers = IP:PORT ...``: the peers' doveadm HTTP listeners, as
    ``host:port`` (``[v6]:port`` for IPv6); a port is required."""
    peers: list[str] = []
    for item in value.split():
        host, sep, port_text = item.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if not sep or not host or (":" in host and not bracketed):
            raise v.InvalidValue(f"proxyd_cluster_peers: '{item}' is not IP:PORT ([IPv6]:PORT)")
        if bracketed:
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise v.InvalidValue(f"proxyd_cluster_peers: Invalid IPv6 address in '{item}'") from None
        try:
            port = v.parse_port(port_text)
        except v.InvalidValue:
            port = 0
        if port == 0:
            raise v.InvalidValue(f"proxyd_cluster_peers: Invalid port in '{item}'")
        if item not in peers:
            peers.append(item)
    return tuple(peers)
