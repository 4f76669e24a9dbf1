"""What proxyd sends to a POP3 backend, line by line, and how it passes the answers on.

A small scripted POP3 server on 127.0.0.4 records every line it receives.  It
answers like Dovecot: ``+OK [XCLIENT] ...`` banner (or one without XCLIENT),
``+OK`` to XCLIENT and USER, and a configurable reply to PASS / AUTH.  With
``PROXYD_E2E_REFERENCE=dovecot`` Dovecot's own proxy talks to the same server,
which checks proxyd's backend dialogue against Dovecot's.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.e2e.test_pop3 import RawPop3Client
from tests.fixtures.net import RECORDING_BACKEND_ADDRESS, client_address, free_ports
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

pytestmark = pytest.mark.e2e


@dataclass
class Pop3Script:
    banner: str = "+OK [XCLIENT] Recording POP3 backend ready."
    #: the reply to PASS (and to AUTH)
    login_reply: str = "+OK Logged in."


@dataclass
class Recorded:
    """One backend connection: the lines received, in order."""

    lines: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


class RecordingPop3Backend:
    """A threaded POP3 server that logs everyone in (or not) and records what it got."""

    def __init__(self, script: Pop3Script) -> None:
        self.script = script
        self.address = RECORDING_BACKEND_ADDRESS
        self._server = socket.create_server((self.address, 0))
        # accept() in a thread does not notice close(): poll so __exit__ can stop it
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self.port: int = self._server.getsockname()[1]
        self.connections: list[Recorded] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RecordingPop3Backend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            recorded = Recorded()
            with self._lock:
                self.connections.append(recorded)
            threading.Thread(target=self._serve, args=(sock, recorded), daemon=True).start()

    def _serve(self, sock: socket.socket, recorded: Recorded) -> None:
        try:
            self._dialogue(sock, recorded)
        finally:
            recorded.closed.set()

    def _dialogue(self, sock: socket.socket, recorded: Recorded) -> None:
        with contextlib.closing(sock), contextlib.suppress(OSError):
            sock.settimeout(30)
            sock.sendall(self.script.banner.encode() + b"\r\n")
            buffer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n", 1)
                    line = raw.decode("utf-8", "replace")
                    recorded.lines.append(line)
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("PASS", "AUTH"):
                        reply = self.script.login_reply
                    elif verb == "XCLIENT":
                        reply = "+OK Updated"
                    elif verb == "USER":
                        reply = "+OK"
                    elif verb == "STAT":
                        reply = "+OK 0 0"
                    elif verb == "QUIT":
                        sock.sendall(b"+OK Logging out.\r\n")
                        return
                    else:
                        reply = "-ERR Unknown command."
                    sock.sendall(reply.encode() + b"\r\n")

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.connections) >= count:
                    return list(self.connections)
            time.sleep(0.05)
        raise TimeoutError(f"{count} backend connections expected, got {len(self.connections)}")


@pytest.fixture
def start_proxyd(proxyd: ProxydRunner) -> Callable[..., ProxydProcess]:
    """Call with a backend and extra passdb fields: a proxyd whose rita goes there over POP3."""

    def start(backend: RecordingPop3Backend, **fields: str) -> ProxydProcess:
        users = write_passwd_file(
            proxyd.workdir / "pop3-rita",
            [
                PasswdEntry(
                    "rita", "{PLAIN}ritapw", proxy_fields(backend.address, backend.port, **fields)
                )
            ],
        )
        config = proxyd.config(users, protocols="imap pop3", login_proxy_timeout="3s")
        pop3_port, pop3s_port = free_ports(config.listeners[0].address, 2)
        config.listeners += [
            Listener("pop3-login", "pop3", config.listeners[0].address, pop3_port),
            Listener("pop3-login", "pop3s", config.listeners[0].address, pop3s_port, ssl=True),
        ]
        return proxyd.start(config)

    return start


def test_xclient_then_user_and_pass_after_its_ok(start_proxyd) -> None:
    """Dovecot's order: XCLIENT (with FORWARD) and USER together, PASS after USER's +OK;
    the backend's +OK reaches the client verbatim and the client's pipelined STAT follows."""
    source = client_address(170)
    with RecordingPop3Backend(Pop3Script()) as backend:
        running = start_proxyd(backend, destuser="rita-backend", forward_client="webmail")
        with RawPop3Client(running.address(), running.port("pop3"), source_ip=source) as client:
            client_port = client._sock.getsockname()[1]
            assert client.command("USER rita") == "+OK"
            assert client.command("PASS ritapw") == "+OK Logged in."
            assert client.command("STAT") == "+OK 0 0"
            assert client.command("QUIT") == "+OK Logging out."
        [connection] = backend.wait_for_connections(1)
        connection.closed.wait(5)
    xclient, *rest = connection.lines
    match = re.fullmatch(
        r"XCLIENT ADDR=(\S+) PORT=(\d+) SESSION=(\S+) TTL=(\d+) FORWARD=(\S+)", xclient
    )
    assert match, xclient
    assert match[1] == source
    assert match[2] == str(client_port)
    assert match[4] == "4"
    assert base64.b64decode(match[5]) == b"client=webmail"
    assert rest == ["USER rita-backend", "PASS ritapw", "STAT", "QUIT"]


def test_no_xclient_without_the_banner_code_or_with_proxy_not_trusted(start_proxyd) -> None:
    for script, fields in (
        (Pop3Script(banner="+OK Plain backend."), {}),
        (Pop3Script(), {"proxy_not_trusted": "y"}),
    ):
        with RecordingPop3Backend(script) as backend:
            running = start_proxyd(backend, **fields)
            with RawPop3Client(
                running.address(), running.port("pop3"), source_ip=client_address(171)
            ) as client:
                client.command("USER rita")
                assert client.command("PASS ritapw") == "+OK Logged in."
            [connection] = backend.wait_for_connections(1)
        assert connection.lines[:2] == ["USER rita", "PASS ritapw"]


def test_master_user_logs_in_with_auth_plain(start_proxyd) -> None:
    with RecordingPop3Backend(Pop3Script(banner="+OK ready")) as backend:
        running = start_proxyd(backend, master="proxymaster", **{"pass": "masterpw"})
        with RawPop3Client(
            running.address(), running.port("pop3"), source_ip=client_address(172)
        ) as client:
            client.command("USER rita")
            assert client.command("PASS ritapw") == "+OK Logged in."
        [connection] = backend.wait_for_connections(1)
    ir = base64.b64encode(b"rita\0proxymaster\0masterpw").decode()
    assert connection.lines[0] == f"AUTH PLAIN {ir}"


@pytest.mark.parametrize(
    ("login_reply", "client_sees"),
    [
        # POP3 passes backend texts on, unlike IMAP
        (
            "-ERR [IN-USE] Mailbox is locked by another session.",
            "-ERR [IN-USE] Mailbox is locked by another session.",
        ),
        ("-ERR [AUTH] Authentication failed.", "-ERR [AUTH] Authentication failed."),
        ("nonsense", "-ERR Authentication failed."),
    ],
)
def test_backend_refusals_are_passed_on(start_proxyd, login_reply: str, client_sees: str) -> None:
    with RecordingPop3Backend(Pop3Script(login_reply=login_reply)) as backend:
        running = start_proxyd(backend)
        with RawPop3Client(
            running.address(), running.port("pop3"), source_ip=client_address(173)
        ) as client:
            client.command("USER rita")
            assert client.command("PASS ritapw") == client_sees
            assert client.command("QUIT") == "+OK Logging out"
        assert len(backend.connections) == 1


def test_backend_tempfail_is_retried_then_passed_on(start_proxyd) -> None:
    with RecordingPop3Backend(
        Pop3Script(login_reply="-ERR [SYS/TEMP] Busy, try later.")
    ) as backend:
        running = start_proxyd(backend)
        with RawPop3Client(
            running.address(), running.port("pop3"), source_ip=client_address(174)
        ) as client:
            client.command("USER rita")
            assert client.command("PASS ritapw") == "-ERR [SYS/TEMP] Busy, try later."
            assert client.command("QUIT") == "+OK Logging out"
        assert len(backend.connections) >= 2, "a backend [SYS/TEMP] is retried"


def test_a_non_pop3_backend_is_a_temporary_failure(start_proxyd) -> None:
    with RecordingPop3Backend(Pop3Script(banner="* OK IMAP4rev1 ready")) as backend:
        running = start_proxyd(backend)
        with RawPop3Client(
            running.address(), running.port("pop3"), source_ip=client_address(175)
        ) as client:
            client.command("USER rita")
            assert (
                client.command("PASS ritapw")
                == "-ERR [SYS/TEMP] Account is temporarily unavailable."
            )
