"""Where one recipient goes: the passdb extra fields LMTP reads (``lmtp_proxy_rcpt_parse_fields()``).

Fields: ``proxy`` (``proxy_maybe`` is settled by the auth process before the
reply gets here), ``host``, ``hostip``, ``source_ip``, ``port``,
``proxy_timeout`` (plain seconds), ``proxy_not_trusted``, ``protocol``
(``lmtp``: LHLO, default port 24; ``smtp``: EHLO, default port 25), ``ssl``
and ``starttls`` (``any-cert`` skips verification), ``user``/``destuser``
(the address the backend gets).  Without ``port`` or ``protocol`` the port is
the one the MTA connected to, as in Dovecot.  Unknown fields are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.lmtp.address import xtext_encode

# Dovecot's tab escaping, as the XCLIENT FORWARD= of POP3 and ManageSieve uses it
from proxyd.protocols.xclient import tab_escape

#: LMTP_PROXY_DEFAULT_TIMEOUT_MSECS
DEFAULT_TIMEOUT: Final = 125.0


class RouteError(ValueError):
    """Fields that cannot be acted on; ``str()`` is Dovecot's log text after ``proxy: ``."""


@dataclass(frozen=True, slots=True)
class Route:
    """One backend and how to reach it; recipients with equal routes share a connection."""

    host: str
    hostip: str  # the address to connect to ("" : host is an IP)
    port: int
    lmtp: bool
    ssl: bool
    starttls: bool
    verify_cert: bool
    source_ip: str
    not_trusted: bool
    timeout: float

    @property
    def connect_ip(self) -> str:
        return self.hostip or self.host

    def key(self) -> tuple[object, ...]:
        """What makes two recipients share a backend connection (Dovecot's comparison)."""
        return (self.lmtp, self.port, self.host, self.hostip, self.source_ip, self.ssl, self.starttls, self.verify_cert)


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def parse_route(fields: Mapping[str, str], local_port: int) -> tuple[Route | None, str | None]:
    """(route or None when the user is not proxied, the new user name from ``user``/``destuser``).

    Raises ``RouteError`` for a value Dovecot refuses.
    """
    proxying = False
    host: str | None = None
    hostip = source_ip = ""
    port = local_port
    port_set = False
    lmtp = True
    ssl = starttls = False
    verify = True
    not_trusted = False
    timeout = DEFAULT_TIMEOUT
    user: str | None = None
    for key, value in fields.items():
        if key == "proxy":
            proxying = True
        elif key == "host":
            host = value
        elif key == "hostip":
            if (ip := _ip(value)) is None:
                raise RouteError(f"Invalid hostip {value}")
            hostip = ip
        elif key == "source_ip":
            if (ip := _ip(value)) is None:
                raise RouteError(f"Invalid source_ip {value}")
            source_ip = ip
        elif key == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise RouteError(f"Invalid port number {value}")
            port, port_set = int(value), True
        elif key == "proxy_timeout":
            if not value.isdigit():
                raise RouteError(f"Invalid proxy_timeout value {value}")
            timeout = float(int(value)) or DEFAULT_TIMEOUT
        elif key == "proxy_not_trusted":
            not_trusted = True
        elif key == "protocol":
            if value not in ("lmtp", "smtp"):
                raise RouteError(f"Unknown protocol {value}")
            lmtp = value == "lmtp"
            if not port_set:
                port = 24 if lmtp else 25
        elif key in ("ssl", "starttls"):
            ssl = True
            starttls = starttls or key == "starttls"
            verify = verify and value != "any-cert"
        elif key in ("user", "destuser") and value:
            # an empty destuser counts as unset (proxyd's contract, not Dovecot's)
            user = value
    if not proxying:
        return None, user
    if not host:
        raise RouteError("host not given")
    if not hostip and _ip(host) is None:
        raise RouteError(f"host {host} is not an IP (auth should have changed it)")
    return (
        Route(
            host=host,
            hostip=hostip,
            port=port,
            lmtp=lmtp,
            ssl=ssl,
            starttls=starttls,
            verify_cert=verify,
            source_ip=source_ip,
            not_trusted=not_trusted,
            timeout=timeout,
        ),
        user,
    )


def is_ourself(route: Route, local_ip: str, local_port: int) -> bool:
    """``lmtp_proxy_is_ourself()``: the route points at the listener the MTA came in on."""
    if route.port != local_port:
        return False
    return _ip(route.connect_ip) == _ip(local_ip)


def rcpt_forward_param(fields: Mapping[str, str]) -> str:
    """``XRCPTFORWARD=``: the passdb's ``forward_*`` fields (names without the prefix) for a
    backend that offers XRCPTFORWARD, tab-escaped, TAB-joined and xtext-encoded as Dovecot's
    ``lmtp_proxy_rcpt()`` and ``smtp_params_add_encoded()`` write them."""
    joined = "\t".join(tab_escape(f"{key}={value}") for key, value in fields.items())
    return f"XRCPTFORWARD={xtext_encode(joined)}"
