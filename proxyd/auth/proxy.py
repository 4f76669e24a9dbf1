"""The proxy decisions the auth process makes (Dovecot's ``auth_request_proxy_finish()``).

Theory of operation
-------------------
After a successful passdb chain, when the reply has ``proxy`` or
``proxy_maybe``, :meth:`ProxyFinisher.finish` settles where the login goes,
before the reply reaches the login process (which can neither resolve names
nor know which addresses are this node's):

* no ``host``: Dovecot's director case; ``lip``/``lport`` are added and
  nothing is "self";
* ``host`` is an IP: it is self when it equals the connection's *real* local
  IP or one of ``auth_proxy_self``'s addresses;
* ``host`` is a name: ``hostip`` is used when given (an invalid one fails the
  login), else the name is resolved here (10 s, or ``proxy_timeout`` plain
  seconds) and ``hostip=<first address>`` is added; self when *any* address is
  self.  A failed lookup is a temporary failure with the proxy fields removed.

Then only ``proxy_maybe`` changes: not self, or a ``port`` other than the
connection's local port → ``proxy``; self → every proxy field is dropped (a
local login in Dovecot).  With ``proxy_always`` a bare ``proxy`` stays (a
director would pick the host; proxyd has none, so the login fails with
``host not given``).  proxyd keeps no mail: without ``proxy_always`` a self
user goes to ``proxyd_local_backend`` instead (its user name, not ``destuser``;
without a port there, the protocol's default port);
without that setting the login is refused with an error in the log.

Plain ``proxy`` pointing at this node is left alone here; the login process
catches it (``Proxying loops to itself``).

The password the client typed is added as ``pass`` whenever the final reply
proxies and the passdb gave no ``pass``.  Fields a trusted proxy in front
forwarded (IMAP ``x-forward-*``, POP3 ``FORWARD=``) become ``forward_*`` fields,
so they travel on to the next hop (Dovecot imports them into the request).

:func:`split_master_user` is ``auth_master_user_separator``: ``user*master``
logs in as ``master`` on behalf of ``user``.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, FailCode
from proxyd.config.settings import LocalBackend, Settings

log = logging.getLogger("proxyd.auth")

#: AUTH_DNS_DEFAULT_TIMEOUT_MSECS
DNS_TIMEOUT: Final = 10.0
#: AUTH_DNS_WARN_MSECS
DNS_WARN_SECS: Final = 0.5
#: what a self proxy_maybe login drops (auth_request_proxy_finish_failure)
_PROXY_FIELDS: Final = ("proxy", "proxy_maybe", "proxy_always", "host", "port", "destuser")

Resolver = Callable[[str], Awaitable[Sequence[str]]]


async def resolve_host(name: str) -> list[str]:
    """Every address of ``name`` (A and AAAA), first answer first, without repeats."""
    infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.lru_cache(maxsize=1024)
def _parse_ip(text: str) -> str | None:
    """The normal form of an IP address, None for a name (cached: the same few backends
    and local addresses come with every login)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def split_names(user: str, login_user: str, separator: str) -> tuple[str, str]:
    """``(user, login_user)``: ``user<sep>master`` → ``(master, user)`` (Dovecot splits at the first one)."""
    if not separator or login_user or separator not in user:
        return user, login_user
    login_user, _, master = user.partition(separator)
    return master, login_user


def split_master_user(request: AuthRequest, separator: str) -> AuthRequest:
    """``user<sep>master`` → authenticate as ``master`` for ``user``."""
    user, login_user = split_names(request.user, request.login_user, separator)
    if user == request.user:
        return request
    return dataclasses.replace(request, user=user, login_user=login_user)


@dataclass(frozen=True, slots=True)
class ProxyFinisher:
    """Resolves ``proxy_maybe``/``host`` for one configuration."""

    self_ips: frozenset[str] = frozenset()
    local_backend: LocalBackend | None = None
    resolver: Resolver = resolve_host

    @classmethod
    def from_settings(cls, settings: Settings) -> ProxyFinisher:
        """The finisher for ``auth_proxy_self`` and ``proxyd_local_backend``."""
        return cls(
            self_ips=frozenset(settings.auth_proxy_self.addresses),
            local_backend=settings.proxyd_local_backend,
        )

    def _ip_is_self(self, request: AuthRequest, ip: str) -> bool:
        return ip == _parse_ip(request.conn.real_local_ip) or ip in self.self_ips

    async def finish(self, request: AuthRequest, reply: AuthReply) -> AuthReply:
        """The reply as the login process gets it; unchanged unless it proxies."""
        if reply.status is not AuthStatus.OK:
            return reply
        fields = dict(reply.fields)
        if "proxy" not in fields and "proxy_maybe" not in fields:
            return reply
        prefix = f"proxy({reply.user or request.user},{request.conn.remote_ip}): "
        host = fields.get("host", "")
        host_is_self = False
        if not host:
            # director case: it may do the proxy_maybe check itself
            if request.conn.local_ip:
                fields["lip"] = request.conn.local_ip
            if request.conn.local_port:
                fields["lport"] = str(request.conn.local_port)
        elif (ip := _parse_ip(host)) is not None:
            host_is_self = self._ip_is_self(request, ip)
        else:
            hostip = fields.get("hostip", "")
            if hostip:
                ip = _parse_ip(hostip)
                if ip is None:
                    log.error("%sInvalid hostip in passdb: %s", prefix, hostip)
                    return dataclasses.replace(
                        reply, status=AuthStatus.FAIL, fail_code=FailCode.AUTH_FAILED, fields={}
                    )
                host_is_self = self._ip_is_self(request, ip)
            else:
                addresses = await self._lookup(prefix, host, _dns_timeout(fields))
                if addresses is None:
                    for name in _PROXY_FIELDS:
                        fields.pop(name, None)
                    return dataclasses.replace(
                        reply, status=AuthStatus.TEMPFAIL, fail_code=FailCode.TEMP_FAIL, fields=fields
                    )
                fields["hostip"] = addresses[0]
                host_is_self = any(self._ip_is_self(request, address) for address in addresses)
        finished = await self._finish_maybe(prefix, request, fields, host_is_self)
        if finished is None:
            return dataclasses.replace(
                reply, status=AuthStatus.TEMPFAIL, fail_code=FailCode.TEMP_FAIL, fields={}
            )
        fields = finished
        if "proxy" in fields and "pass" not in fields and request.password is not None:
            # the password the client typed, not the passdb's (Dovecot's auth_str_append_extra_fields)
            fields["pass"] = request.password.reveal()
        return reply.with_fields(fields)

    async def _finish_maybe(
        self, prefix: str, request: AuthRequest, fields: dict[str, str], host_is_self: bool
    ) -> dict[str, str] | None:
        """Dovecot's ``auth_request_proxy_finish_ip()`` plus proxyd's local backend."""
        if "proxy_maybe" not in fields:
            return fields
        port = fields.get("port", "")
        same_port = not port or port == str(request.conn.local_port)
        if not host_is_self or not same_port:
            del fields["proxy_maybe"]
            fields["proxy"] = ""
            return fields
        proxy_always = "proxy_always" in fields
        host = fields.get("host", "")
        for name in (*_PROXY_FIELDS, "hostip"):
            fields.pop(name, None)
        if proxy_always:
            # Dovecot lets a director fill in the host; proxyd has no director
            fields["proxy"] = ""
            return fields
        local = self.local_backend
        if local is None:
            log.error(
                "%sproxy_maybe: host %s is this node, but proxyd keeps no mail and "
                "proxyd_local_backend is not set",
                prefix, host,
            )
            return fields
        fields["proxy"] = ""
        fields["host"] = local.host
        if local.port:
            fields["port"] = str(local.port)
        if _parse_ip(local.host) is None:
            addresses = await self._lookup(prefix, local.host, DNS_TIMEOUT)
            if addresses is None:
                return None
            fields["hostip"] = addresses[0]
        return fields

    async def _lookup(self, prefix: str, host: str, limit: float) -> list[str] | None:
        started = trio.current_time()
        try:
            with trio.fail_after(limit):
                addresses = list(await self.resolver(host))
        except trio.TooSlowError:
            log.error("%sDNS lookup for %s failed: Timeout", prefix, host)
            return None
        except OSError as exc:
            log.error("%sDNS lookup for %s failed: %s", prefix, host, exc.strerror or exc)
            return None
        if not addresses:
            log.error("%sDNS lookup for %s failed: no addresses", prefix, host)
            return None
        took = trio.current_time() - started
        if took > DNS_WARN_SECS:
            log.warning("%sDNS lookup for %s took %.3f s", prefix, host, took)
        return addresses


def _dns_timeout(fields: dict[str, str]) -> float:
    """``proxy_timeout`` when it is plain seconds, else Dovecot's 10 s."""
    value = fields.get("proxy_timeout", "")
    if value.isascii() and value.isdigit() and int(value) > 0:
        return float(value)
    return DNS_TIMEOUT
