"""Reading the passdb extra fields that steer proxying (Dovecot's ``client_auth_parse_args()``).

Booleans are presence based: any value, even ``no``, enables them (spec §2).
An empty routing field counts as unset (interface.md: proxyd does better than
Dovecot for ``destuser=''`` from SQL).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxyd.secret import Secret


class ProxyFieldError(ValueError):
    """The passdb reply cannot be acted on (logged; the client sees a temporary failure)."""


#: fields the login side understands now; the rest of the proxy family comes with later issues
_NOT_YET: Final = frozenset(
    {
        "proxy_maybe",
        "proxy_always",
        "source_ip",
        "proxy_refresh",
        "proxy_noauth",
        "proxy_host_immediate_failure_after",
    }
)

_TIME_RE: Final = re.compile(r"^\s*(\d+)\s*(ms|msecs?|s|secs?|seconds?|m|mins?|minutes?)?\s*$")


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """Where and how to log in for a proxied user."""

    host: str
    hostip: str
    port: int
    destuser: str
    password: Secret
    master_user: str
    mech: str
    ssl: bool
    starttls: bool
    any_cert: bool
    timeout: float | None  # proxy_timeout, seconds
    nopipelining: bool
    not_trusted: bool
    forward_fields: tuple[tuple[str, str], ...]

    @property
    def tls(self) -> bool:
        return self.ssl or self.starttls


def _parse_timeout(value: str) -> float:
    m = _TIME_RE.match(value)
    if not m:
        raise ProxyFieldError(f"Invalid proxy_timeout value: {value}")
    number, unit = int(m.group(1)), (m.group(2) or "s")
    if unit.startswith(("ms", "msec")):
        return number / 1000
    if unit.startswith("m") and not unit.startswith("ms"):
        return number * 60.0
    return float(number)


def parse_proxy_target(
    user: str, fields: Mapping[str, str], *, default_port: int, default_ssl_port: int
) -> ProxyTarget:
    """Build the proxy destination from an OK reply that has ``proxy``."""
    for name in fields:
        if name in _NOT_YET:
            raise ProxyFieldError(f"passdb field '{name}' is not supported yet")
    host = fields.get("host", "")
    if not host:
        raise ProxyFieldError("host not given")
    hostip = fields.get("hostip", "")
    if hostip:
        try:
            ipaddress.ip_address(hostip)
        except ValueError as exc:
            raise ProxyFieldError(f"Invalid hostip {hostip}") from exc
    password = fields.get("pass")
    if password is None:
        raise ProxyFieldError("password not given")
    ssl_value = fields.get("ssl")
    starttls_value = fields.get("starttls")
    # starttls wins over immediate TLS when both are given, as in Dovecot
    starttls = starttls_value is not None
    use_ssl = ssl_value is not None and not starttls
    port_text = fields.get("port", "")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ProxyFieldError(f"Invalid port number {port_text}")
        port = int(port_text)
    else:
        port = default_ssl_port if use_ssl else default_port
    timeout_text = fields.get("proxy_timeout", "")
    timeout = _parse_timeout(timeout_text) if timeout_text else None
    forward = tuple(
        (name[len("forward_") :], value)
        for name, value in fields.items()
        if name.lower().startswith("forward_")
    )
    return ProxyTarget(
        host=host,
        hostip=hostip,
        port=port,
        destuser=fields.get("destuser") or user,
        password=Secret(password),
        master_user=fields.get("master", ""),
        mech=fields.get("proxy_mech", "").upper(),
        ssl=use_ssl,
        starttls=starttls,
        any_cert="any-cert" in (ssl_value, starttls_value),
        timeout=timeout or None,
        nopipelining="proxy_nopipelining" in fields,
        not_trusted="proxy_not_trusted" in fields,
        forward_fields=forward,
    )
