"""The "(...)" of a pre-login client's disconnect line, as Dovecot 2.3.19 words it.

Raw IMAP over a socket, so the client can leave at exactly the point each
reason speaks of.  The same tests run against Dovecot's own proxy with
``PROXYD_E2E_REFERENCE=dovecot``.
"""

from __future__ import annotations

import base64
import re
import socket

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import (
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def running(proxyd: ProxydRunner, backend_a: DovecotBackend) -> ProxydProcess:
    """alice -> backend-a; mallory is known here but not on backend-a, which refuses her."""
    fields = proxy_fields(backend_a.address, backend_a.imap_port)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", fields),
        PasswdEntry("mallory", "{PLAIN}mallorypw", fields),
    ]
    path = write_passwd_file(proxyd.workdir / "reasons-users", entries)
    return proxyd.start(proxyd.config(path))


class _Client:
    def __init__(self, running: ProxydProcess, n: int) -> None:
        self.sock = socket.create_connection(
            (running.address(), running.port()), timeout=20, source_address=(client_address(n), 0)
        )
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")

    def send(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.file.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def _disconnected(running: ProxydProcess, n: int, extra: str) -> None:
    running.wait_for_log(
        rf"imap-login: Info: Disconnected: [^(]*\({extra}\): user=<[^>]*>, (method=\S+, )?"
        rf"rip={re.escape(client_address(n))}"
    )


def test_client_leaves_before_the_sasl_continuation(running: ProxydProcess) -> None:
    client = _Client(running, 171)
    assert client.send(b"a AUTHENTICATE PLAIN").startswith(b"+")
    client.close()
    _disconnected(running, 171, r"client didn't finish SASL auth, waited \d+ secs")


def test_client_aborting_with_a_star_did_not_finish(running: ProxydProcess) -> None:
    client = _Client(running, 172)
    assert client.send(b"a AUTHENTICATE PLAIN").startswith(b"+")
    assert client.send(b"*").startswith(b"a BAD")
    client.close()
    # Dovecot never clears auth_waiting on a "*", so its "(aborted authentication)" stays unsaid
    _disconnected(running, 172, r"client didn't finish SASL auth, waited \d+ secs")


def test_backend_refuses_the_login(running: ProxydProcess) -> None:
    client = _Client(running, 173)
    assert client.send(b"a AUTHENTICATE PLAIN " + _plain("mallory", "mallorypw")).startswith(b"a NO")
    client.close()
    _disconnected(running, 173, r"proxy dest auth failed")


def test_wrong_password(running: ProxydProcess) -> None:
    client = _Client(running, 174)
    assert client.send(b"a AUTHENTICATE PLAIN " + _plain("alice", "wrong")).startswith(b"a NO")
    client.close()
    _disconnected(running, 174, r"auth failed, 1 attempts in \d+ secs")
