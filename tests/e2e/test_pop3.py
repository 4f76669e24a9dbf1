"""POP3 end to end: ``proxyd -c FILE`` with ``protocols = imap pop3`` in front of real Dovecot.

The clients are Python's poplib, ``curl pop3://`` and a line-level client for
exact texts.  The backends are the suite's Dovecot instances (their POP3 ports),
which trust 127.0.0.0/8: proxyd's ``XCLIENT`` shows up in their logs as the
original client address.  With ``PROXYD_E2E_REFERENCE=dovecot`` the same tests
run against Dovecot's own proxy, which is how the expectations were checked.

Users (proxyd's passwd-file, POP3 ports):

=======  =========  ==================================================
user     password   routed to
=======  =========  ==================================================
alice    alicepw    backend-a POP3
bob      bobpw      backend-b POP3
carol    carolpw    backend-a POP3 as ``destuser=dave``
mia      miapw      backend-a as alice, logged in as master user (AUTH PLAIN)
dan      danpw      a closed port on backend-a's address
=======  =========  ==================================================
"""

from __future__ import annotations

import poplib
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.fixtures.dovecot import DovecotBackend, dovecot_hash
from tests.fixtures.net import (
    BACKEND_A_ADDRESS,
    PROXYD_ADDRESS,
    PROXYD_OTHER_ADDRESS,
    client_address,
    free_port,
    free_ports,
)
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydConfig,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import CLIENT_TIMEOUT, curl

pytestmark = pytest.mark.e2e

GREETING = "POP3 proxy ready."
CAPA_HEAD = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
AUTH_FAILED = "-ERR [AUTH] Authentication failed."
UNAVAILABLE = "-ERR [SYS/TEMP] Account is temporarily unavailable."
UNKNOWN = "-ERR Unknown command."
PLAINTEXT_REFUSED = (
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
)


# -- clients -------------------------------------------------------------------------------


def _connect(host: str, port: int, timeout: float | None, source_ip: str | None) -> socket.socket:
    source = (source_ip, 0) if source_ip else None
    return socket.create_connection((host, port), timeout, source_address=source)


class POP3(poplib.POP3):
    """poplib.POP3 that can bind its socket to ``source_ip`` first."""

    def __init__(self, host: str, port: int, *, source_ip: str | None = None) -> None:
        self.source_ip = source_ip
        super().__init__(host, port, timeout=CLIENT_TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.host, self.port, timeout, self.source_ip)


class POP3_SSL(poplib.POP3_SSL):
    """poplib.POP3_SSL that can bind its socket to ``source_ip`` first."""

    def __init__(
        self, host: str, port: int, *, context: ssl.SSLContext, source_ip: str | None = None
    ) -> None:
        self.source_ip = source_ip
        super().__init__(host, port, timeout=CLIENT_TIMEOUT, context=context)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.host, self.port, timeout, self.source_ip)
        return self.context.wrap_socket(sock, server_hostname=self.host)


class RawPop3Client:
    """Sends exactly what it is told and returns the server's lines verbatim."""

    def __init__(self, host: str, port: int, *, source_ip: str | None = None) -> None:
        self._sock = _connect(host, port, CLIENT_TIMEOUT, source_ip)
        self._buffer = b""
        self.greeting = self.read_line()

    def __enter__(self) -> RawPop3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def read_line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread: {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.removesuffix(b"\r").decode("utf-8", errors="replace")

    def command(self, line: str) -> str:
        """Send one line and return the one-line reply."""
        self._sock.sendall(line.encode() + b"\r\n")
        return self.read_line()

    def multiline(self, line: str) -> list[str]:
        """Send one line and return a multi-line reply up to (not including) its ``.``."""
        self._sock.sendall(line.encode() + b"\r\n")
        lines = [self.read_line()]
        while lines[-1] != "." and lines[0].startswith("+OK"):
            lines.append(self.read_line())
        return lines[:-1] if lines[-1] == "." else lines

    def is_closed_by_peer(self, timeout: float = 2.0) -> bool:
        self._sock.settimeout(timeout)
        try:
            return self._buffer == b"" and self._sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


# -- setup ---------------------------------------------------------------------------------


def pop3_entries(backend_a: DovecotBackend, backend_b: DovecotBackend) -> list[PasswdEntry]:
    a, b = backend_a, backend_b
    return [
        PasswdEntry(
            "alice", dovecot_hash("alicepw", "SHA512-CRYPT"), proxy_fields(a.address, a.pop3_port)
        ),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(b.address, b.pop3_port)),
        PasswdEntry(
            "carol", "{PLAIN}carolpw", proxy_fields(a.address, a.pop3_port, destuser="dave")
        ),
        PasswdEntry(
            "mia",
            "{PLAIN}miapw",
            proxy_fields(
                a.address,
                a.pop3_port,
                destuser="alice",
                master=a.master_user,
                **{"pass": a.master_password},
            ),
        ),
        PasswdEntry(
            "dan", "{PLAIN}danpw", proxy_fields(BACKEND_A_ADDRESS, free_port(BACKEND_A_ADDRESS))
        ),
    ]


def pop3_config(
    proxyd: ProxydRunner,
    backend_a: DovecotBackend,
    backend_b: DovecotBackend,
    *,
    address: str = PROXYD_ADDRESS,
    **settings: str | None,
) -> ProxydConfig:
    """The standard configuration plus ``protocols = imap pop3`` and both POP3 listeners."""
    users: Path = write_passwd_file(
        proxyd.workdir / "pop3-users", pop3_entries(backend_a, backend_b)
    )
    config = proxyd.config(
        users,
        address=address,
        protocols="imap pop3",
        login_greeting=f'"{GREETING}"',
        login_proxy_timeout="3s",
        **settings,
    )
    pop3_port, pop3s_port = free_ports(address, 2)
    config.listeners += [
        Listener("pop3-login", "pop3", address, pop3_port),
        Listener("pop3-login", "pop3s", address, pop3s_port, ssl=True),
    ]
    return config


@pytest.fixture
def pop3_proxyd(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> ProxydProcess:
    return proxyd.start(pop3_config(proxyd, backend_a, backend_b))


def login_line(user: str, rip: str) -> str:
    """Dovecot's backend log line for a POP3 login of ``user`` from ``rip``."""
    return rf"pop3-login: Info: Login: user=<{re.escape(user)}>, method=\w+, rip={re.escape(rip)},"


def retr_subject(client: poplib.POP3, which: int = 1) -> str:
    _, lines, _ = client.retr(which)
    for line in lines:
        if line.startswith(b"Subject: "):
            return line.decode().removeprefix("Subject: ")
    raise AssertionError(f"no Subject in {lines!r}")


# -- tests ---------------------------------------------------------------------------------


def test_poplib_user_pass_reaches_the_right_backend_with_the_client_address(
    pop3_proxyd: ProxydProcess, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """USER/PASS through proxyd; the backend logs the client's own address (XCLIENT)."""
    source = client_address(150)
    client = POP3(pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=source)
    try:
        assert client.getwelcome() == f"+OK {GREETING}".encode()
        assert client.user("alice") == b"+OK"
        assert client.pass_("alicepw").startswith(b"+OK")
        assert client.stat()[0] == 1
        assert retr_subject(client) == backend_a.subject_for("alice")
    finally:
        client.quit()
    backend_a.wait_for_log(login_line("alice", source))

    client = POP3(pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=source)
    try:
        client.user("bob")
        client.pass_("bobpw")
        assert retr_subject(client) == backend_b.subject_for("bob")
    finally:
        client.quit()
    backend_b.wait_for_log(login_line("bob", source))


def test_destuser_and_master_user(pop3_proxyd: ProxydProcess, backend_a: DovecotBackend) -> None:
    """carol logs in to the backend as dave (USER/PASS); mia as alice through the master user (AUTH PLAIN)."""
    source = client_address(151)
    for user, password, mailbox in (("carol", "carolpw", "dave"), ("mia", "miapw", "alice")):
        client = POP3(pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=source)
        try:
            client.user(user)
            client.pass_(password)
            assert retr_subject(client) == backend_a.subject_for(mailbox)
        finally:
            client.quit()
    backend_a.wait_for_log(login_line("dave", source))
    backend_a.wait_for_log(
        login_line(f"alice*{backend_a.master_user}", source) + "|" + login_line("alice", source)
    )


def test_curl_list_retr_and_wrong_password(
    pop3_proxyd: ProxydProcess, backend_b: DovecotBackend
) -> None:
    url = f"pop3://{pop3_proxyd.address()}:{pop3_proxyd.port('pop3')}"
    listing = curl([f"{url}/", "-u", "bob:bobpw"])
    assert listing.returncode == 0, listing.stderr
    assert re.fullmatch(r"1 \d+\r?\n", listing.stdout), listing.stdout

    message = curl([f"{url}/1", "-u", "bob:bobpw", "--login-options", "AUTH=PLAIN"])
    assert message.returncode == 0, message.stderr
    assert f"Subject: {backend_b.subject_for('bob')}" in message.stdout

    denied = curl([f"{url}/", "-u", "bob:wrong", "--interface", client_address(152)])
    assert denied.returncode == 67, (denied.returncode, denied.stderr)


def test_stls_and_pop3s(
    pop3_proxyd: ProxydProcess, proxyd_tls: TlsFiles, backend_a: DovecotBackend
) -> None:
    source = client_address(153)
    client = POP3(pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=source)
    try:
        assert "STLS" in client.capa()
        assert client.stls(proxyd_tls.client_context()) == b"+OK Begin TLS negotiation now."
        assert "STLS" not in client.capa()
        client.user("alice")
        client.pass_("alicepw")
        assert retr_subject(client) == backend_a.subject_for("alice")
    finally:
        client.quit()

    secure = POP3_SSL(
        pop3_proxyd.address(),
        pop3_proxyd.port("pop3s"),
        context=proxyd_tls.client_context(),
        source_ip=source,
    )
    try:
        assert secure.getwelcome() == f"+OK {GREETING}".encode()
        assert "STLS" not in secure.capa()
        secure.user("alice")
        secure.pass_("alicepw")
        assert secure.stat()[0] == 1
    finally:
        secure.quit()


def test_pre_login_texts(pop3_proxyd: ProxydProcess) -> None:
    """Dovecot's exact pre-login dialogue for an untrusted client."""
    with RawPop3Client(
        pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=client_address(154)
    ) as client:
        assert client.greeting == f"+OK {GREETING}"
        assert client.multiline("CAPA") == ["+OK", *CAPA_HEAD, "STLS", "USER", "SASL PLAIN LOGIN"]
        assert client.multiline("AUTH") == ["+OK", "PLAIN", "LOGIN"]
        assert client.command("NOOP") == UNKNOWN
        assert client.command("PASS x") == "-ERR No username given."
        assert (
            client.command("APOP alice 0123456789abcdef0123456789abcdef")
            == "-ERR APOP not enabled."
        )
        assert (
            client.command("XCLIENT ADDR=192.0.2.1") == "+OK You are not from trusted IP - ignoring"
        )
        assert client.command("STAT") == UNKNOWN
        assert client.command("USER alice") == "+OK"  # resets the bad counter
        assert client.command("AUTH PLAIN") == "+ "
        assert client.command("*") == "-ERR Authentication aborted by client."
        assert client.command("AUTH FOO") == "-ERR [AUTH] Unsupported authentication mechanism."
        assert client.command("LIST") == UNKNOWN
        assert client.command("RETR 1") == UNKNOWN
        assert client.command("DELE 1") == UNKNOWN
        assert client.read_line() == "-ERR Too many invalid bad commands."
        assert client.is_closed_by_peer()

    with RawPop3Client(
        pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=client_address(154)
    ) as client:
        assert client.command("QUIT") == "+OK Logging out"
        assert client.is_closed_by_peer()


def test_failures_keep_the_client_connected(
    pop3_proxyd: ProxydProcess, backend_a: DovecotBackend
) -> None:
    """Wrong password: Dovecot's text, no backend contact; backend down: [SYS/TEMP] after the retries."""
    source = client_address(155)
    with RawPop3Client(pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=source) as client:
        assert client.command("USER alice") == "+OK"
        assert client.command("PASS not-alicepw") == AUTH_FAILED
        assert client.command("QUIT") == "+OK Logging out"
    time.sleep(0.5)
    assert not backend_a.log_lines(rf"rip={re.escape(source)}\b")

    with RawPop3Client(
        pop3_proxyd.address(), pop3_proxyd.port("pop3"), source_ip=client_address(156)
    ) as client:
        assert client.command("USER dan") == "+OK"
        started = time.monotonic()
        assert client.command("PASS danpw") == UNAVAILABLE
        assert time.monotonic() - started < 10
        assert client.command("USER alice") == "+OK"
        assert client.command("PASS alicepw").startswith("+OK")
        assert client.command("STAT").startswith("+OK 1 ")


def test_trusted_peer_forwards_the_client_with_xclient(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """A trusted proxy in front of proxyd: [XCLIENT] in the greeting, its XCLIENT is taken
    and passed on, so the backend logs the address the first proxy saw."""
    front = client_address(157)
    running = proxyd.start(
        pop3_config(proxyd, backend_a, backend_b, login_trusted_networks=f"{front}/32")
    )
    with RawPop3Client(running.address(), running.port("pop3"), source_ip=front) as client:
        assert client.greeting == f"+OK [XCLIENT] {GREETING}"
        assert (
            client.command("XCLIENT ADDR=198.51.100.7 PORT=4242 TTL=x") == "-ERR Invalid parameters"
        )
        assert client.command("XCLIENT ADDR=198.51.100.7 PORT=4242") == "+OK Updated"
        assert client.command("USER alice") == "+OK"
        assert client.command("PASS alicepw").startswith("+OK")
        assert client.command("QUIT").startswith("+OK")
    backend_a.wait_for_log(login_line("alice", "198.51.100.7"))

    with RawPop3Client(
        running.address(), running.port("pop3"), source_ip=client_address(158)
    ) as client:
        assert client.greeting == f"+OK {GREETING}"


def test_plaintext_needs_tls_when_not_secured(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend, proxyd_tls: TlsFiles
) -> None:
    """``disable_plaintext_auth = yes`` and a client that is neither local nor TLS:
    no USER, no SASL mechanisms, USER/PASS refused; after STLS everything works."""
    config = pop3_config(
        proxyd, backend_a, backend_b, address=PROXYD_OTHER_ADDRESS, disable_plaintext_auth="yes"
    )
    running = proxyd.start(config)
    with RawPop3Client(running.address(), running.port("pop3"), source_ip=PROXYD_ADDRESS) as client:
        assert client.multiline("CAPA") == ["+OK", *CAPA_HEAD, "STLS", "SASL"]
        assert client.command("USER alice") == PLAINTEXT_REFUSED
        assert client.command("PASS alicepw") == PLAINTEXT_REFUSED
        assert client.command("AUTH PLAIN") == "-ERR [AUTH] Plaintext authentication disabled."
    client = POP3(running.address(), running.port("pop3"), source_ip=PROXYD_ADDRESS)
    try:
        client.stls(proxyd_tls.client_context())
        client.user("alice")
        client.pass_("alicepw")
        assert retr_subject(client) == backend_a.subject_for("alice")
    finally:
        client.quit()
