"""Shared setup for the proxy-field end-to-end tests (tests/e2e/test_proxy_*.py).

``start(runner, entries, ...)`` runs a proxyd with IMAP and POP3 listeners and
a passwd-file holding ``entries``; ``login_imap`` / ``login_pop3`` log in with
line-level clients and return the server's final answer, so tests can assert
Dovecot's exact texts for both protocols with one parametrised body.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tests.e2e.test_pop3 import RawPop3Client
from tests.fixtures.dovecot import DovecotBackend, DovecotFactory
from tests.fixtures.net import PROXYD_ADDRESS, free_ports
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydConfig,
    ProxydProcess,
    ProxydRunner,
    write_passwd_file,
)
from tests.helpers.clients import RawImapClient

PROTOCOLS = ("imap", "pop3")


def default_port_address(seed: int, ports: tuple[int, ...] = (143, 110)) -> str:
    """A loopback address where ``ports`` (default 143 and 110) are free right now.

    Backends on the default ports need an address of their own (other test
    runs on this machine may hold them on theirs): 127.77.x.y, from ``seed``
    and the process id.
    """
    base = (os.getpid() * 7 + seed * 101) % 60000
    for step in range(200):
        n = (base + step * 13) % 60000
        address = f"127.77.{n // 250}.{n % 250 + 2}"
        if all(_bindable(address, port) for port in ports):
            return address
    raise RuntimeError(f"no loopback address with ports {ports} free")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def default_port_listeners(address: str) -> str:
    """Extra Dovecot listeners on ``address``:143 and :110."""
    return f"""
service imap-login {{
  inet_listener imap-default {{
    address = {address}
    port = 143
  }}
}}
service pop3-login {{
  inet_listener pop3-default {{
    address = {address}
    port = 110
  }}
}}
"""


@pytest.fixture(scope="session")
def backend_local(dovecot_factory: DovecotFactory) -> DovecotBackend:
    """Dovecot "backend-local", also on the default ports 143 and 110 (a port-less
    proxyd_local_backend, or a user moved between hosts that share a port)."""
    address = default_port_address(1)
    return dovecot_factory.start(
        "backend-local", address, extra_config=default_port_listeners(address)
    )


@pytest.fixture(scope="session")
def backend_moved(dovecot_factory: DovecotFactory) -> DovecotBackend:
    """Dovecot "backend-moved", also on the default ports."""
    address = default_port_address(2)
    return dovecot_factory.start(
        "backend-moved", address, extra_config=default_port_listeners(address)
    )


def config(
    runner: ProxydRunner,
    entries: Sequence[PasswdEntry],
    *,
    address: str = PROXYD_ADDRESS,
    name: str = "users",
    **settings: str | None,
) -> ProxydConfig:
    """A configuration with imap, imaps, pop3 and pop3s listeners on ``address``."""
    passwd = write_passwd_file(runner.workdir / name, entries)
    settings.setdefault("protocols", "imap pop3")
    cfg = runner.config(passwd, address=address, **settings)
    pop3_port, pop3s_port = free_ports(address, 2)
    cfg.listeners += [
        Listener("pop3-login", "pop3", address, pop3_port),
        Listener("pop3-login", "pop3s", address, pop3s_port, ssl=True),
    ]
    return cfg


def start(
    runner: ProxydRunner,
    entries: Sequence[PasswdEntry],
    *,
    extra: str = "",
    **settings: str | None,
) -> ProxydProcess:
    """Start proxyd with ``entries`` and top-level ``settings``; ``extra`` is appended raw."""
    cfg = config(runner, entries, **settings)
    cfg.extra = extra
    return runner.start(cfg)


def backend_port(backend: DovecotBackend, protocol: str, *, tls: bool = False) -> int:
    if protocol == "imap":
        return backend.imaps_port if tls else backend.imap_port
    return backend.pop3s_port if tls else backend.pop3_port


@dataclass
class Answer:
    """What a login attempt ended with."""

    #: IMAP: the tagged line without its tag; POP3: the reply to PASS
    line: str
    #: IMAP untagged lines before the tagged one
    untagged: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.line.startswith(("OK", "+OK"))


def login(
    running: ProxydProcess,
    protocol: str,
    user: str,
    password: str,
    *,
    source_ip: str | None = None,
    then: str | None = None,
) -> Answer:
    """Log in with a raw client over ``protocol``; ``then`` is one more command after success.

    For a successful login the answer to ``then`` (if given) is in ``untagged``
    (IMAP: its untagged lines and tagged line; POP3: its reply line).
    """
    started = time.monotonic()
    if protocol == "imap":
        with RawImapClient(running.address("imap"), running.port("imap"), source_ip=source_ip) as c:
            reply = c.command(f'LOGIN "{user}" "{password}"')
            seconds = time.monotonic() - started
            extra: tuple[str, ...] = ()
            if reply.status == "OK" and then:
                after = c.command(then)
                extra = (*after.untagged, after.tagged)
            if reply.status == "OK":
                c.command("LOGOUT")
            return Answer(reply.tagged, reply.untagged + extra, seconds)
    with RawPop3Client(running.address("pop3"), running.port("pop3"), source_ip=source_ip) as p:
        first = p.command(f"USER {user}")
        if not first.startswith("+OK"):
            return Answer(first, (), time.monotonic() - started)
        line = p.command(f"PASS {password}")
        seconds = time.monotonic() - started
        extra = ()
        if line.startswith("+OK") and then:
            extra = (p.command(then),)
        if line.startswith("+OK"):
            p.command("QUIT")
        return Answer(line, extra, seconds)


def unavailable(protocol: str) -> str:
    """The client text of a proxy failure (``CONNECT``/``INTERNAL``/... kinds)."""
    if protocol == "imap":
        return "NO [UNAVAILABLE] Account is temporarily unavailable."
    return "-ERR [SYS/TEMP] Account is temporarily unavailable."


def serverbug(protocol: str) -> str:
    """The client text of a ``REMOTE_CONFIG``/``INTERNAL_CONFIG`` failure (TTL, no STARTTLS)."""
    if protocol == "imap":
        return "NO [SERVERBUG] Account is temporarily unavailable."
    return "-ERR Account is temporarily unavailable."


def auth_failed(protocol: str) -> str:
    if protocol == "imap":
        return "NO [AUTHENTICATIONFAILED] Authentication failed."
    return "-ERR [AUTH] Authentication failed."
