"""What ManageSieve and Submission share with IMAP and POP3: HAProxy listeners, trusted networks, delay_until.

One body per behaviour, run for both protocols through ``proxyd -c FILE``
against the Dovecot backends of tests/fixtures/dovecot.py (``mail_backend_a``).
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.fixtures.dovecot import SieveSubmissionBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_ports
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

PLAIN_IR = base64.b64encode(b"\0alice\0alicepw").decode()


@dataclass(frozen=True)
class Protocol:
    name: str
    service: str
    port: Callable[[SieveSubmissionBackend], int]
    #: reads the greeting, logs alice in; returns the server's final answer
    login: Callable[[socket.socket], str]
    ok: str
    refused: str


def _lines(sock: socket.socket) -> list[str]:
    data = b""
    sock.settimeout(20)
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\r\n"):
            last = data[:-2].rsplit(b"\r\n", 1)[-1]
            if last[:2] in (b"OK", b"NO") or last[:3] == b"BYE" or (last[:3].isdigit() and last[3:4] == b" "):
                break
    return data.decode().splitlines()


def _sieve_login(sock: socket.socket) -> str:
    _lines(sock)
    sock.sendall(f'AUTHENTICATE "PLAIN" "{PLAIN_IR}"\r\n'.encode())
    return _lines(sock)[-1]


def _submission_login(sock: socket.socket) -> str:
    _lines(sock)
    sock.sendall(b"EHLO client.example\r\n")
    _lines(sock)
    sock.sendall(f"AUTH PLAIN {PLAIN_IR}\r\n".encode())
    return _lines(sock)[-1]


PROTOCOLS = [
    Protocol(
        "sieve", "managesieve-login", lambda b: b.sieve_port, _sieve_login,
        'OK "Logged in."', 'NO "Plaintext authentication disabled."',
    ),
    Protocol(
        "submission", "submission-login", lambda b: b.submission_port, _submission_login,
        "235 2.7.0 Logged in.", "523 5.7.10 Plaintext authentication disabled.",
    ),
]


def start(
    proxyd: ProxydRunner, backend: SieveSubmissionBackend, protocol: Protocol, *, haproxy: bool = False,
    fields: dict[str, str] | None = None, **settings: str,
) -> ProxydProcess:
    entry = PasswdEntry(
        "alice", "{PLAIN}alicepw", {**proxy_fields(backend.address, protocol.port(backend)), **(fields or {})}
    )
    passwd = write_passwd_file(proxyd.workdir / f"users-{protocol.name}-{time.monotonic_ns()}", [entry])
    config = proxyd.config(passwd, imaps=False, protocols=protocol.name, hostname="proxy.test", **settings)
    (port,) = free_ports(PROXYD_ADDRESS, 1)
    config.listeners = [Listener(protocol.service, protocol.name, PROXYD_ADDRESS, port, haproxy=haproxy)]
    return proxyd.start(config)


def connect(running: ProxydProcess, protocol: Protocol, n: int) -> socket.socket:
    return socket.create_connection(
        (running.address(protocol.name), running.port(protocol.name)), 20, source_address=(client_address(n), 0)
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_haproxy_listener_forwards_the_client_address(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    running = start(proxyd, mail_backend_a, protocol, haproxy=True, haproxy_trusted_networks="127.0.0.0/8")
    with connect(running, protocol, 41) as sock:
        port = running.port(protocol.name)
        sock.sendall(f"PROXY TCP4 192.0.2.77 {PROXYD_ADDRESS} 40000 {port}\r\n".encode())
        assert protocol.login(sock) == protocol.ok
    running.wait_for_log(rf"{protocol.service}: Info: Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.77, ")
    # ... and on to the backend through XCLIENT
    mail_backend_a.dovecot.wait_for_log(
        rf"{protocol.service}: Info: Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.77, "
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_plaintext_only_from_trusted_networks(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    running = start(
        proxyd, mail_backend_a, protocol, disable_plaintext_auth="yes",
        login_trusted_networks=f"{client_address(43)}/32",
    )
    with connect(running, protocol, 42) as sock:
        assert protocol.login(sock) == protocol.refused
    with connect(running, protocol, 43) as sock:
        assert protocol.login(sock) == protocol.ok


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_delay_until_holds_the_login(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    until = int(time.time()) + 3
    running = start(proxyd, mail_backend_a, protocol, fields={"delay_until": str(until)})
    with connect(running, protocol, 44) as sock:
        assert protocol.login(sock) == protocol.ok
        assert time.time() >= until - 0.5
