"""The "(...)" of a pre-login client's disconnect line, as Dovecot 2.3.19 words it.

Raw IMAP over a socket, so the client can leave at exactly the point each
reason speaks of.  The same tests run against Dovecot's own proxy with
``PROXYD_E2E_REFERENCE=dovecot``.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address, free_port
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
    """alice -> backend-a; mallory is known here but not on backend-a, which refuses her;
    carol's backend port has nothing listening."""
    fields = proxy_fields(backend_a.address, backend_a.imap_port)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", fields),
        PasswdEntry("mallory", "{PLAIN}mallorypw", fields),
        PasswdEntry("carol", "{PLAIN}carolpw", proxy_fields(backend_a.address, free_port(backend_a.address))),
    ]
    path = write_passwd_file(proxyd.workdir / "reasons-users", entries)
    # plaintext mechanisms only over TLS, so a plain connection can be refused PLAIN
    return proxyd.start(proxyd.config(path, auth_mechanisms="plain login cram-md5", disable_plaintext_auth="yes"))


class _Client:
    def __init__(self, running: ProxydProcess, n: int, *, tls: bool = False) -> None:
        listener = "imaps" if tls else "imap"
        self.sock = socket.create_connection(
            (running.address(listener), running.port(listener)), timeout=20, source_address=(client_address(n), 0)
        )
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the log line is under test here, not the certificate
            self.sock = context.wrap_socket(self.sock)
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
    assert client.send(b"a AUTHENTICATE CRAM-MD5").startswith(b"+")
    client.close()
    _disconnected(running, 171, r"client didn't finish SASL auth, waited \d+ secs")


def test_client_aborting_with_a_star_did_not_finish(running: ProxydProcess) -> None:
    client = _Client(running, 172)
    assert client.send(b"a AUTHENTICATE CRAM-MD5").startswith(b"+")
    assert client.send(b"*").startswith(b"a BAD")
    client.close()
    # Dovecot never clears auth_waiting on a "*", so its "(aborted authentication)" stays unsaid
    _disconnected(running, 172, r"client didn't finish SASL auth, waited \d+ secs")


def test_backend_refuses_the_login(running: ProxydProcess) -> None:
    client = _Client(running, 173, tls=True)
    assert client.send(b"a AUTHENTICATE PLAIN " + _plain("mallory", "mallorypw")).startswith(b"a NO")
    client.close()
    _disconnected(running, 173, r"proxy dest auth failed")


def test_wrong_password(running: ProxydProcess) -> None:
    client = _Client(running, 174, tls=True)
    assert client.send(b"a AUTHENTICATE PLAIN " + _plain("alice", "wrong")).startswith(b"a NO")
    client.close()
    _disconnected(running, 174, r"auth failed, 1 attempts in \d+ secs")


def test_backend_unreachable_after_a_successful_auth(running: ProxydProcess) -> None:
    client = _Client(running, 175, tls=True)
    assert client.send(b"a AUTHENTICATE PLAIN " + _plain("carol", "carolpw")).startswith(b"a NO")
    client.close()
    _disconnected(running, 175, r"internal failure, 1 successful auths")


def test_unsupported_mechanism(running: ProxydProcess) -> None:
    client = _Client(running, 176)
    assert client.send(b"a AUTHENTICATE FOO").startswith(b"a NO")
    client.close()
    _disconnected(running, 176, r"tried to use unsupported auth mechanism")


def test_plaintext_mechanism_without_tls(running: ProxydProcess) -> None:
    client = _Client(running, 177)
    assert client.send(b"a AUTHENTICATE PLAIN").startswith(b"a NO")
    client.close()
    _disconnected(running, 177, r"tried to use disallowed plaintext auth")


def test_login_command_without_tls_has_no_code(running: ProxydProcess) -> None:
    # client_check_plaintext_auth() counts the attempt but neither codes it nor starts the clock
    client = _Client(running, 178)
    assert client.send(b"a LOGIN alice alicepw").startswith(b"* BAD [ALERT] Plaintext authentication not allowed")
    assert client.file.readline().startswith(b"a NO")
    client.close()
    _disconnected(running, 178, r"auth failed, 1 attempts in 0 secs")
