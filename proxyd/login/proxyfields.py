"""Reading the passdb extra fields that steer proxying (Dovecot's ``client_auth_parse_args()``).

Booleans are presence based: any value, even ``no``, enables them (spec §2).
An empty routing field counts as unset (interface.md: proxyd does better than
Dovecot for ``destuser=''`` from SQL).

:func:`parse_proxy_target` also makes the checks of Dovecot's
``proxy_check_start()`` that need no connection state: ``pass`` and ``host``
given, ``host`` an IP unless the auth process added ``hostip`` (login
processes cannot resolve names; the auth process does it, see
``proxyd.auth.proxy``), a ``proxy_mech`` with a client implementation.
Values Dovecot only logs about (a bad ``port``, ``proxy_timeout``,
``proxy_host_immediate_failure_after``, an unparsable ``source_ip``) are
collected in :attr:`ProxyTarget.warnings` and the defaults are used.

``proxy_noauth`` is read for every protocol but only Submission acts on it,
as in Dovecot (no AUTH to the backend; XCLIENT ``LOGIN=`` names the user).
Fields that reach the login process but do nothing here: ``proxy_maybe`` /
``proxy_always`` (the auth process has acted on them), ``proxy_refresh`` (it
feeds a director, which proxyd does not have).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.events import ClientFailure
from proxyd.protocols.sasl import CLIENT_MECHANISMS
from proxyd.protocols.spec import Referral
from proxyd.secret import Secret

#: Dovecot's default for ``proxy_host_immediate_failure_after`` (seconds)
HOST_IMMEDIATE_FAILURE_AFTER: Final = 30.0

_TIME_RE: Final = re.compile(r"^\s*(\d+)\s*(ms|msecs?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?\s*$")


class ProxyFieldError(ValueError):
    """The passdb reply cannot be acted on (logged; the client sees a temporary failure)."""


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
    source_ip: str = ""  # passdb source_ip ("" = login_source_ips or the OS's choice)
    noauth: bool = False  # proxy_noauth (Submission: log in without AUTH)
    host_immediate_failure_after: float = HOST_IMMEDIATE_FAILURE_AFTER
    warnings: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl or self.starttls

    @property
    def ip(self) -> str:
        """The address to connect to."""
        return self.hostip or self.host


def _parse_time(value: str) -> float | None:
    m = _TIME_RE.match(value)
    if not m:
        return None
    number, unit = int(m.group(1)), (m.group(2) or "s")
    if unit.startswith(("ms", "msec")):
        return number / 1000
    if unit.startswith("m"):
        return number * 60.0
    if unit.startswith("h"):
        return number * 3600.0
    return float(number)


@functools.lru_cache(maxsize=1024)
def _is_ip(text: str) -> bool:
    """``host`` is an IP address (cached: the same few backends come with every login)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port(fields: Mapping[str, str], warnings: list[str]) -> int:
    """The ``port`` field; 0 when absent or invalid (Dovecot logs and uses the default)."""
    text = fields.get("port", "")
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        warnings.append(f"Auth service returned invalid port number: {text}")
        return 0
    return int(text)


def parse_proxy_target(
    user: str, fields: Mapping[str, str], *, default_port: int, default_ssl_port: int
) -> ProxyTarget:
    """Build the proxy destination from an OK reply that has ``proxy``."""
    warnings: list[str] = []
    password = fields.get("pass")
    if password is None:
        raise ProxyFieldError("password not given")
    host = fields.get("host", "")
    if not host:
        raise ProxyFieldError("host not given")
    hostip = fields.get("hostip", "")
    if hostip:
        if not _is_ip(hostip):
            raise ProxyFieldError(f"Invalid hostip {hostip}")
    elif not _is_ip(host):
        raise ProxyFieldError(f"BUG: host {host} is not an IP (auth should have changed it)")
    mech = fields.get("proxy_mech", "").upper()
    if mech and mech not in CLIENT_MECHANISMS:
        raise ProxyFieldError(f"Unsupported SASL mechanism {fields['proxy_mech']}")
    ssl_value = fields.get("ssl")
    starttls_value = fields.get("starttls")
    # starttls wins over immediate TLS when both are given, as in Dovecot
    starttls = starttls_value is not None
    use_ssl = ssl_value is not None and not starttls
    port = _port(fields, warnings) or (default_ssl_port if use_ssl else default_port)
    timeout: float | None = None
    timeout_text = fields.get("proxy_timeout", "")
    if timeout_text:
        timeout = _parse_time(timeout_text)
        if timeout is None:
            warnings.append(f"BUG: Auth service returned invalid proxy_timeout value '{timeout_text}'")
    failure_after = HOST_IMMEDIATE_FAILURE_AFTER
    failure_text = fields.get("proxy_host_immediate_failure_after", "")
    if failure_text:
        parsed = _parse_time(failure_text)
        if parsed is None:
            warnings.append(
                "BUG: Auth service returned invalid proxy_host_immediate_failure_after "
                f"value '{failure_text}'"
            )
        else:
            failure_after = parsed
    source_ip = fields.get("source_ip", "")
    if source_ip and not _is_ip(source_ip):
        # net_addr2ip() failed: Dovecot silently lets the OS choose
        source_ip = ""
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
        mech=mech,
        ssl=use_ssl,
        starttls=starttls,
        any_cert="any-cert" in (ssl_value, starttls_value),
        timeout=timeout or None,
        nopipelining="proxy_nopipelining" in fields,
        not_trusted="proxy_not_trusted" in fields,
        noauth="proxy_noauth" in fields,
        forward_fields=forward,
        source_ip=source_ip,
        host_immediate_failure_after=failure_after,
        warnings=tuple(warnings),
    )


def parse_referral(user: str, fields: Mapping[str, str], *, default_port: int) -> Referral | None:
    """The referral of a ``nologin`` reply that names a ``host`` (None without one)."""
    host = fields.get("host", "")
    if not host:
        return None
    return Referral(
        host=host,
        port=_port(fields, []) or default_port,
        destuser=fields.get("destuser") or user,
        reason=fields.get("reason") or "Try this server instead.",
    )


def is_ourself(
    target: ProxyTarget, *, user: str, local_ip: str, local_port: int
) -> bool:
    """Dovecot's ``login_proxy_is_ourself()``: same port, ``host`` our local IP, same user."""
    if target.port != local_port or not _is_ip(target.host):
        return False
    if ipaddress.ip_address(target.host) != ipaddress.ip_address(local_ip):
        return False
    return target.destuser == user


def target_refusal(
    target: ProxyTarget, *, user: str, local_ip: str, local_port: int, proxy_ttl: int
) -> tuple[str, ClientFailure] | None:
    """Why the login must not go to ``target`` (Dovecot's log text and the client's
    failure), or None: a proxy loop to ourselves, or a TTL that ran out."""
    if is_ourself(target, user=user, local_ip=local_ip, local_port=local_port):
        return "Proxying loops to itself", ClientFailure.PROXY_UNAVAILABLE
    if proxy_ttl <= 1:
        return "TTL reached zero - proxies appear to be looping?", ClientFailure.PROXY_SERVERBUG
    return None
