"""The LMTP proxy end to end: ``proxyd -c FILE`` between smtplib.LMTP (the MTA) and real Dovecot LMTP backends.

Recipients in proxyd's passwd-file (no passwords: LMTP looks users up, never
logs them in):

=====================  =============================================
recipient              routed to
=====================  =============================================
alice@example.org      lmtp-a (127.0.0.2), its user ``alice``
bob@example.org        lmtp-b (127.0.0.3), its user ``bob``
carol@example.org      lmtp-a as ``destuser=dave@example.org``
lost@example.org       127.0.0.9, where nothing listens
=====================  =============================================

The backends strip the domain (``auth_username_format = %Ln``) and deliver
to Maildirs the tests read.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.dovecot import LmtpBackend
from tests.fixtures.net import (
    PROXYD_ADDRESS,
    client_address,
    free_port,
    port_accepts,
    read_banner,
    wait_until,
)
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

MTA_ADDRESS = client_address(1)


@dataclass
class LmtpProxy:
    proxyd: ProxydProcess
    port: int
    socket_path: Path
    a: LmtpBackend
    b: LmtpBackend


def recipients(a: LmtpBackend, b: LmtpBackend) -> list[PasswdEntry]:
    down = free_port("127.0.0.9")
    return [
        PasswdEntry("alice@example.org", "", proxy_fields(a.address, a.lmtp_port)),
        PasswdEntry("bob@example.org", "", proxy_fields(b.address, b.lmtp_port)),
        PasswdEntry("carol@example.org", "", proxy_fields(a.address, a.lmtp_port, destuser="dave@example.org")),
        PasswdEntry("lost@example.org", "", proxy_fields("127.0.0.9", down)),
        PasswdEntry("smtp@example.org", "", proxy_fields(a.address, a.lmtp_port, protocol="smtp")),
        PasswdEntry("tls@example.org", "", proxy_fields(b.address, b.lmtp_port, starttls="any-cert",
                                                        destuser="bob@example.org")),
        PasswdEntry("maybe@example.org", "", {"proxy_maybe": None, "host": b.address, "port": str(b.lmtp_port),
                                              "destuser": "bob@example.org"}),
        PasswdEntry("verify@example.org", "", proxy_fields(b.address, b.lmtp_port, starttls="yes",
                                                           destuser="bob@example.org")),
    ]


def start_lmtp_proxy(
    proxyd: ProxydRunner, a: LmtpBackend, b: LmtpBackend, lmtp_block: str = "", **settings: str
) -> LmtpProxy:
    users = write_passwd_file(proxyd.workdir / "lmtp-users", recipients(a, b))
    config = proxyd.config(users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test",
                           login_trusted_networks="127.0.0.0/8", **settings)
    port = free_port(PROXYD_ADDRESS)
    config.listeners.append(Listener("lmtp", "lmtp", PROXYD_ADDRESS, port))
    config.extra = (
        "service lmtp {\n  unix_listener lmtp {\n    mode = 0666\n  }\n}\n"
        # Dovecot's filters apply to LMTP connections too
        f"protocol lmtp {{\n  login_greeting = LMTP proxy ready.\n{lmtp_block}}}\n"
        "remote 127.0.0.9 {\n  login_greeting = never used\n}\n"
    )
    process = proxyd.start(config)
    base_dir = Path(str(config.settings["base_dir"]))
    return LmtpProxy(process, port, base_dir / "lmtp", a, b)


@pytest.fixture
def lmtp_proxy(proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend) -> Iterator[LmtpProxy]:
    return start_lmtp_proxy(proxyd, lmtp_backend_a, lmtp_backend_b)


def deliver(
    host: str, port: int, rcpts: list[str], body: bytes, timeout: float = 30
) -> tuple[dict[str, tuple[int, bytes]], list[tuple[int, bytes]]]:
    """One LMTP transaction; (refused recipients, the replies after DATA, one per accepted recipient)."""
    if host.startswith("/"):
        client = smtplib.LMTP(host, timeout=timeout)
    else:
        client = smtplib.LMTP(host, port, source_address=(MTA_ADDRESS, 0), timeout=timeout)
    with client:
        client.ehlo_or_helo_if_needed()
        client.mail("mta@example.net")
        refused = {}
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, text)
        if len(refused) == len(rcpts):
            return refused, []
        code, _ = client.docmd("DATA")
        assert code == 354
        client.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [client.getreply() for _ in range(len(rcpts) - len(refused))]
        client.quit()
    return refused, replies


def body(subject: str) -> bytes:
    return f"From: mta@example.net\r\nTo: list@example.org\r\nSubject: {subject}\r\n\r\n.dot line\r\nbye\r\n".encode()


def delivered(backend: LmtpBackend, user: str, subject: str) -> list[bytes]:
    return [m for m in backend.messages(user) if f"Subject: {subject}".encode() in m]


def test_one_message_two_backends_unknown_and_down_recipients(lmtp_proxy: LmtpProxy) -> None:
    a, b = lmtp_proxy.a, lmtp_proxy.b
    subject = "two backends"
    refused, replies = deliver(
        PROXYD_ADDRESS, lmtp_proxy.port,
        ["alice@example.org", "nobody@example.org", "bob+lists@example.org", "lost@example.org", "carol@example.org"],
        body(subject),
    )
    assert refused["nobody@example.org"] == (550, b"5.1.1 <nobody@example.org> User doesn't exist: nobody@example.org")
    code, text = refused["lost@example.org"]
    assert code == 451
    assert re.fullmatch(rb"4\.4\.0 Proxy failed \(connect, session=[A-Za-z0-9+/]+:R4\)", text), text
    assert [code for code, _ in replies] == [250, 250, 250]
    for (_, text), rcpt in zip(replies, ["alice@example.org", "bob+lists@example.org", "carol@example.org"], strict=True):
        assert re.fullmatch(rb"2\.0\.0 <" + re.escape(rcpt.encode()) + rb"> [A-Za-z0-9+/:R]+ Saved", text), text
    (message,) = delivered(a, "alice", subject)
    assert b"\n.dot line" in message.replace(b"\r\n", b"\n")
    # Dovecot's trace header (lmtp_add_received_header = yes), without "for": several recipients
    text = message.replace(b"\r\n", b"\n").decode()
    assert re.search(rf"Received: from \S+ \(\[{re.escape(MTA_ADDRESS)}\]\)\n\tby proxy\.test with LMTP\n"
                     r"\tid [A-Za-z0-9+/]+\n\t\(envelope-from <mta@example\.net>\); ", text), text
    assert len(delivered(b, "bob", subject)) == 1
    assert len(delivered(a, "dave", subject)) == 1
    assert delivered(a, "bob", subject) == []
    assert delivered(b, "alice", subject) == []
    # Dovecot's log lines for proxied deliveries
    log = lmtp_proxy.proxyd.wait_for_log(
        r"lmtp\(\d+\): Info: lmtp-server: conn 127\.0\.0\.21:\d+ \[\d+\]: rcpt bob\+lists@example\.org: "
        r"<[^>]+>: Sent message to <bob\+lists@example\.org> at 127\.0\.0\.3:"
    )
    assert re.search(r": 250 2\.0\.0 .* Saved \(2/3 at \d+ ms\)$", log[0]), log
    lmtp_proxy.proxyd.wait_for_log(rf"lmtp\(\d+\): Info: Connect from {re.escape(MTA_ADDRESS)}$")
    lmtp_proxy.proxyd.wait_for_log(
        rf"lmtp\(\d+\): Info: Disconnect from {re.escape(MTA_ADDRESS)}: Logged out \(state=READY\)$")
    # XCLIENT: the backends saw the MTA's address, not the proxy's
    a.dovecot.wait_for_log(rf"lmtp\(\d+\): Info: Disconnect from {re.escape(MTA_ADDRESS)}: ")
    b.dovecot.wait_for_log(rf"lmtp\(\d+\): Info: Disconnect from {re.escape(MTA_ADDRESS)}: ")


def test_starttls_to_the_backend(lmtp_proxy: LmtpProxy) -> None:
    refused, replies = deliver(PROXYD_ADDRESS, lmtp_proxy.port, ["tls@example.org"], body("over tls"))
    assert refused == {}
    assert replies[0][0] == 250
    (message,) = delivered(lmtp_proxy.b, "bob", "over tls")
    # one recipient: the Received: header names it (lmtp_hdr_delivery_address = final)
    assert b"\tfor <tls@example.org>; " in message.replace(b"\r\n", b"\n")
    # starttls=yes checks the backend's certificate: no CA configured here knows the test CA
    refused, _ = deliver(PROXYD_ADDRESS, lmtp_proxy.port, ["verify@example.org"], body("verified"))
    code, text = refused["verify@example.org"]
    assert code == 451
    assert text.startswith(b"4.4.0 Proxy failed (connect, session=")


def test_unix_socket_and_smtp_backend(lmtp_proxy: LmtpProxy) -> None:
    refused, replies = deliver(str(lmtp_proxy.socket_path), 0, ["alice@example.org", "maybe@example.org"],
                               body("over the socket"))
    assert refused == {}
    assert [code for code, _ in replies] == [250, 250]
    assert len(delivered(lmtp_proxy.a, "alice", "over the socket")) == 1
    # proxy_maybe to another host is proxied like proxy
    assert len(delivered(lmtp_proxy.b, "bob", "over the socket")) == 1
    # protocol=smtp: EHLO to an LMTP backend, which refuses it; Dovecot forwards that reply
    refused, _ = deliver(PROXYD_ADDRESS, lmtp_proxy.port, ["smtp@example.org"], body("smtp"))
    # (Dovecot's words exactly: the EHLO reply came before ENHANCEDSTATUSCODES was known)
    assert refused["smtp@example.org"] == (500, b"5.0.0 <smtp@example.org> 5.5.1 Unknown command")


def test_ttl_runs_out(lmtp_proxy: LmtpProxy) -> None:
    # the greeting comes from protocol lmtp { login_greeting }
    assert read_banner(PROXYD_ADDRESS, lmtp_proxy.port).rstrip() == b"220 proxy.test LMTP proxy ready."
    with smtplib.LMTP(PROXYD_ADDRESS, lmtp_proxy.port, timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        assert client.docmd("XCLIENT TTL=0")[0] == 220
        client.ehlo("mta.test")
        client.mail("")
        assert client.rcpt("alice@example.org") == (
            554, b"5.4.6 <alice@example.org> Proxying appears to be looping (TTL=0)")
    lmtp_proxy.proxyd.wait_for_log(r"Proxying to <alice@example\.org> appears to be looping \(TTL=0\)")
    # a proxy in front (trusted) names the real MTA: it goes on to the backend, TTL one less
    with smtplib.LMTP(PROXYD_ADDRESS, lmtp_proxy.port, timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        assert client.docmd("XCLIENT ADDR=192.0.2.44 PORT=2525 TTL=3")[0] == 220
        client.ehlo("mta.test")
        assert client.sendmail("mta@example.net", ["alice@example.org"], body("via xclient")) == {}
    lmtp_proxy.a.dovecot.wait_for_log(r"lmtp\(\d+\): Info: Disconnect from 192\.0\.2\.44: ")


def test_process_title_and_parent(lmtp_proxy: LmtpProxy) -> None:
    """The LMTP process is titled "proxyd: lmtp" and is a child of the master's zygote (which
    forks every child) or of the master itself (other proxyds on the machine are not looked at)."""
    master = str(lmtp_proxy.proxyd.pid)

    def children_of(parents: set[str]) -> dict[str, str]:
        ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True)
        rows = [line.split(None, 2) for line in ps.stdout.splitlines()]
        return {row[0]: row[2].strip() for row in rows if len(row) == 3 and row[1] in parents}

    def ours() -> dict[str, str]:
        zygotes = set(children_of({master}))
        return children_of({master, *zygotes})

    wait_until(lambda: "proxyd: lmtp" in ours().values(), timeout=10,
               what="a 'proxyd: lmtp' child of the master or its zygote")


class _TlsLMTP(smtplib.LMTP):
    """LMTP over implicit TLS (smtplib has no LMTP_SSL)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock)


class _HaproxyLMTP(smtplib.LMTP):
    """LMTP behind a HAProxy that says the MTA is 192.0.2.9."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(f"PROXY TCP4 192.0.2.9 {host} 4711 {port}\r\n".encode())
        return sock


def test_implicit_tls_and_haproxy_listeners(
    proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend
) -> None:
    users = write_passwd_file(proxyd.workdir / "lmtp-users", recipients(lmtp_backend_a, lmtp_backend_b))
    config = proxyd.config(users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test",
                           haproxy_trusted_networks="127.0.0.0/8")
    tls_port, haproxy_port = free_port(PROXYD_ADDRESS), free_port(PROXYD_ADDRESS)
    config.listeners.append(Listener("lmtp", "lmtps", PROXYD_ADDRESS, tls_port, ssl=True))
    config.extra = (
        "service lmtp {\n  inet_listener lmtp-haproxy {\n"
        f"    address = {PROXYD_ADDRESS}\n    port = {haproxy_port}\n    haproxy = yes\n  }}\n}}\n"
    )
    process = proxyd.start(config)
    wait_until(lambda: port_accepts(PROXYD_ADDRESS, haproxy_port), timeout=10, what="the haproxy listener")
    for client_class, port, subject in ((_TlsLMTP, tls_port, "implicit tls"), (_HaproxyLMTP, haproxy_port, "haproxy")):
        with client_class(PROXYD_ADDRESS, port, timeout=30) as client:
            client.ehlo_or_helo_if_needed()
            assert client.sendmail("mta@example.net", ["alice@example.org"], body(subject)) == {}
        assert len(delivered(lmtp_backend_a, "alice", subject)) == 1
    # the address HAProxy gave went on to the backend in XCLIENT
    process.wait_for_log(r"lmtp\(\d+\): Info: Connect from 192\.0\.2\.9$")
    lmtp_backend_a.dovecot.wait_for_log(r"lmtp\(\d+\): Info: Disconnect from 192\.0\.2\.9: ")


def test_configuration_errors(proxyd: ProxydRunner) -> None:
    """proxyd -n refuses, with FILE:LINE, what the LMTP service cannot do."""
    config = proxyd.config(protocols="imap lmtp")
    path = proxyd.write_config(config)
    result = proxyd.run("-c", str(path), "-n")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("protocols = lmtp needs lmtp_proxy = yes: proxyd delivers no mail itself")
    config = proxyd.config(protocols="imap lmtp", lmtp_proxy="yes")
    config.extra = "service lmtp {\n  unix_listener lmtp {\n    user = no-such-user-lmtp\n  }\n}\n"
    path = proxyd.write_config(config)
    result = proxyd.run("-c", str(path), "-n")
    assert result.returncode == 2
    line = path.read_text().splitlines().index("    user = no-such-user-lmtp") + 1
    assert result.stderr.strip() == f"{path}:{line}: user doesn't exist: no-such-user-lmtp"


def _lmtp_script(host: str, port: int, steps: list[tuple[bytes, int]]) -> list[bytes]:
    """Send each step's bytes and read the number of replies it gets; the replies, session ids
    (``<alice@example.org> <id> Saved``) cut out."""
    with socket.create_connection((host, port), timeout=30) as sock, sock.makefile("rb") as replies:
        assert replies.readline().startswith(b"220 ")
        sock.sendall(b"LHLO mta.test\r\n")
        while replies.readline()[3:4] == b"-":
            pass
        out = []
        for data, count in steps:
            sock.sendall(data)
            for _ in range(count):
                line = replies.readline()
                out.append(re.sub(rb"> \S+ Saved", b"> ID Saved", line))
    return out


def test_bdat_replies_as_dovecot_lmtp_gives_them(lmtp_proxy: LmtpProxy) -> None:
    """The same CHUNKING dialogue, once with a Dovecot LMTP server itself, once with proxyd."""
    steps = [
        (b"MAIL FROM:<mta@example.net>\r\n", 1),
        (b"RCPT TO:<alice@example.org>\r\n", 1),
        (b"BDAT 3 LAST x\r\nabc", 1),
        (b"BDAT 2\r\nxy", 1),
        (b"DATA\r\n", 1),
        (b"RSET\r\n", 1),
        (b"BDAT 2\r\nxy", 1),
        (b"BDAT x\r\n", 1),
        (b"MAIL FROM:<>\r\n", 1),
        (b"BDAT 0\r\n", 1),
        (b"RSET\r\nMAIL FROM:<>\r\nBDAT 0\r\n", 3),
        (b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\n", 3),
        (b"BDAT 4\r\nab\r\n", 1),
        (b"DATA\r\n", 1),
        (b"BDAT 28 LAST\r\nSubject: chunks compared\r\n\r\n", 1),
        (b"QUIT\r\n", 1),
    ]
    dovecot = _lmtp_script(lmtp_proxy.a.address, lmtp_proxy.a.lmtp_port, steps)
    proxied = _lmtp_script(PROXYD_ADDRESS, lmtp_proxy.port, steps)
    assert proxied == dovecot
    assert dovecot[-2:] == [b"250 2.0.0 <alice@example.org> ID Saved\r\n", b"221 2.0.0 Bye\r\n"]
    assert len(delivered(lmtp_proxy.a, "alice", "chunks compared")) == 2


def test_bdat_to_two_backends(lmtp_proxy: LmtpProxy) -> None:
    """A message in BDAT chunks for recipients on two backends: one reply each after LAST."""
    message = body("bdat two backends") + b".dot\r\n" * 1000
    with smtplib.LMTP(PROXYD_ADDRESS, lmtp_proxy.port, source_address=(MTA_ADDRESS, 0), timeout=30) as client:
        client.ehlo_or_helo_if_needed()
        assert client.has_extn("chunking")
        client.mail("mta@example.net")
        assert client.rcpt("alice@example.org")[0] == 250
        assert client.rcpt("nobody@example.org")[0] == 550
        assert client.rcpt("bob@example.org")[0] == 250
        half = len(message) // 2
        client.send(f"BDAT {half}\r\n".encode() + message[:half])
        assert client.getreply() == (250, f"2.0.0 Added {half} octets".encode())
        client.send(f"BDAT {len(message) - half} LAST\r\n".encode() + message[half:])
        replies = [client.getreply() for _ in range(2)]
    for (code, text), rcpt in zip(replies, [b"alice@example.org", b"bob@example.org"], strict=True):
        assert code == 250
        assert text.startswith(b"2.0.0 <" + rcpt + b"> "), text
    for backend, user in ((lmtp_proxy.a, "alice"), (lmtp_proxy.b, "bob")):
        (got,) = delivered(backend, user, "bdat two backends")
        # the backend got the octets as sent (after the Received: header), dots and all
        assert got.replace(b"\r\n", b"\n").endswith(message.replace(b"\r\n", b"\n"))


def _lmtp_pids(proxyd_pid: int) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [int(line.split(None, 1)[0]) for line in ps.stdout.splitlines()[1:]
            if line.split(None, 1)[1:] == ["proxyd: lmtp"]]


def test_large_message_is_spooled_chrooted_and_within_a_small_vsz_limit(
    proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend
) -> None:
    """A 120 MB message goes through an lmtp process whose vsz_limit is smaller than it:
    the message waits in an unlinked file in mail_temp_dir (opened before the chroot), for
    both backends at once.  A directory the service's user cannot write to is logged and
    the message stays in memory, as Dovecot does it."""
    temp = proxyd.workdir / "lmtp-temp"
    temp.mkdir()
    temp.chmod(0o1777)
    users = write_passwd_file(proxyd.workdir / "lmtp-users", recipients(lmtp_backend_a, lmtp_backend_b))
    config = proxyd.config(users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test",
                           mail_temp_dir=str(temp))
    port = free_port(PROXYD_ADDRESS)
    config.listeners.append(Listener("lmtp", "lmtp", PROXYD_ADDRESS, port))
    # the login chroot: mail_temp_dir is outside it
    config.extra = "service lmtp {\n  chroot = login\n  vsz_limit = 100M\n}\n"
    process = proxyd.start(config)
    line = b"x" * 998 + b"\r\n"
    big = body("big") + line * (120 * 1024 * 1024 // len(line))
    # (the backends write 120 MB each before they answer: slow on a busy machine)
    refused, replies = deliver(PROXYD_ADDRESS, port, ["alice@example.org", "bob@example.org"], big, timeout=120)
    assert refused == {}
    assert [code for code, _ in replies] == [250, 250]
    for backend, user in ((lmtp_backend_a, "alice"), (lmtp_backend_b, "bob")):
        (got,) = delivered(backend, user, "big")
        assert got.replace(b"\r\n", b"\n").endswith(big.replace(b"\r\n", b"\n"))
    assert "safe_mkstemp" not in process.log_text()
    assert list(temp.iterdir()) == []  # unlinked at once

    # a directory it cannot write to: logged, and the (small) message is delivered from memory
    temp.chmod(0o755)
    refused, replies = deliver(PROXYD_ADDRESS, port, ["alice@example.org"], body("kept") + line * 1000)
    assert refused == {}
    assert replies[0][0] == 250
    process.wait_for_log(rf"lmtp\(\d+\): Error: safe_mkstemp\({re.escape(str(temp))}/dovecot\.lmtp\.[^)]+\) "
                         r"failed: Permission denied$")
    assert len(delivered(lmtp_backend_a, "alice", "kept")) == 1


def test_service_limits_apply(proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend) -> None:
    """client_limit = 1 and process_limit = 1: a second MTA waits (in the listen queue) for the first."""
    users = write_passwd_file(proxyd.workdir / "lmtp-users", recipients(lmtp_backend_a, lmtp_backend_b))
    config = proxyd.config(users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test")
    port = free_port(PROXYD_ADDRESS)
    config.listeners.append(Listener("lmtp", "lmtp", PROXYD_ADDRESS, port))
    config.extra = "service lmtp {\n  client_limit = 1\n  process_limit = 1\n}\n"
    proxyd.start(config)
    first = socket.create_connection((PROXYD_ADDRESS, port), timeout=10)
    try:
        assert first.recv(512).startswith(b"220 proxy.test ")
        second = socket.create_connection((PROXYD_ADDRESS, port), timeout=1.5)
        try:
            with pytest.raises(TimeoutError):
                second.recv(512)  # no process may take it while the first MTA is served
            first.sendall(b"QUIT\r\n")
            assert first.recv(512) == b"221 2.0.0 Bye\r\n"
            second.settimeout(10)
            assert second.recv(512).startswith(b"220 proxy.test ")
        finally:
            second.close()
    finally:
        first.close()


def _backend_process(backend: LmtpBackend, peer: str) -> int:
    """The pid of the backend's lmtp process that serves the connection from ``peer``."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{backend.lmtp_port} )"],
                         capture_output=True, text=True, check=True).stdout
    pids = {int(pid) for line in out.splitlines() if f" {peer}:" in line
            for pid in re.findall(r"pid=(\d+)", line)}
    assert len(pids) == 1, out
    return pids.pop()


def test_a_backend_dying_mid_data_fails_only_its_recipients(lmtp_proxy: LmtpProxy) -> None:
    """No message is lost: the backend that dies while the message streams to it gives its
    recipient Dovecot's 451 4.4.0, the other backend's recipients are delivered and told so."""
    line = b"y" * 998 + b"\r\n"
    message = body("mid-data") + line * (30 * 1024 * 1024 // len(line))
    with smtplib.LMTP(PROXYD_ADDRESS, lmtp_proxy.port, source_address=(MTA_ADDRESS, 0), timeout=60) as client:
        client.ehlo_or_helo_if_needed()
        client.mail("mta@example.net")
        assert client.rcpt("alice@example.org")[0] == 250
        assert client.rcpt("bob@example.org")[0] == 250
        victim = _backend_process(lmtp_proxy.b, PROXYD_ADDRESS)
        # stopped, it reads nothing: proxyd's sending stalls once the socket buffers are full
        os.kill(victim, signal.SIGSTOP)
        try:
            assert client.docmd("DATA")[0] == 354
            client.send(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")

            def stalled() -> bool:
                out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{lmtp_proxy.b.lmtp_port} )"],
                                     capture_output=True, text=True, check=True).stdout
                return any(int(row.split()[0]) > 0 for row in out.splitlines())

            wait_until(stalled, timeout=30, what="proxyd sending the message to the stopped backend")
        finally:
            os.kill(victim, signal.SIGKILL)  # dies while stopped, mid-message
        replies = [client.getreply() for _ in range(2)]
        assert client.noop() == (250, b"2.0.0 OK")
    assert replies[0][0] == 250
    assert replies[0][1].startswith(b"2.0.0 <alice@example.org> ")
    code, text = replies[1]
    assert code == 451
    assert re.fullmatch(rb"4\.4\.0 Proxy failed \(connection lost, session=[A-Za-z0-9+/]+:R2\)", text), text
    (got,) = delivered(lmtp_proxy.a, "alice", "mid-data")
    assert got.replace(b"\r\n", b"\n").endswith(message.replace(b"\r\n", b"\n"))
    assert delivered(lmtp_proxy.b, "bob", "mid-data") == []
    lmtp_proxy.proxyd.wait_for_log(r"rcpt bob@example\.org: <[^>]+:R2>: Failed to send message to "
                                   rf"<bob@example\.org> at {re.escape(lmtp_proxy.b.address)}:\d+: ")


def test_verbose_replies_and_rawlogs(
    proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend
) -> None:
    """lmtp_verbose_replies = yes puts lib-smtp's own error in the 451; lmtp_rawlog_dir and
    lmtp_proxy_rawlog_dir record the MTA's and the backends' connections, line by line
    with timestamps, in files the lmtp process (dropped to its user) creates."""
    server_log, client_log = proxyd.workdir / "rawlog-mta", proxyd.workdir / "rawlog-backends"
    for directory in (server_log, client_log):
        directory.mkdir()
        directory.chmod(0o1777)
    # (where Dovecot configurations often keep lmtp settings: every LMTP connection matches it)
    proxy = start_lmtp_proxy(proxyd, lmtp_backend_a, lmtp_backend_b, lmtp_block="  lmtp_verbose_replies = yes\n",
                             lmtp_rawlog_dir=str(server_log), lmtp_proxy_rawlog_dir=str(client_log))
    refused, replies = deliver(PROXYD_ADDRESS, proxy.port, ["alice@example.org", "lost@example.org"],
                               body("rawlogged"))
    code, text = refused["lost@example.org"]
    assert code == 451
    assert re.fullmatch(rb"4\.4\.0 Proxy failed: Failed to connect to remote server "
                        rb"\(session=[A-Za-z0-9+/]+:R2\)", text), text
    proxy.proxyd.wait_for_log(r"rcpt lost@example\.org: <[^>]+>: lmtp-client: connect\(127\.0\.0\.9:\d+\) "
                              r"failed: Connection refused$")
    assert [code for code, _ in replies] == [250]

    def files(directory: Path, suffix: str) -> str:
        found = sorted(directory.glob(f"*.{suffix}"))
        assert found, f"no *.{suffix} in {directory}"
        for path in found:
            assert re.fullmatch(r"\d{8}-\d{6}\.\d+\.\d+\." + suffix, path.name), path.name
            assert path.stat().st_mode & 0o777 == 0o600
        return "".join(path.read_text(errors="replace") for path in found)

    def lines(text: str) -> list[str]:
        # every line opens with the time it was seen
        stamped = text.splitlines()
        for line in stamped:
            assert re.match(r"\d+\.\d{6} ", line), line
        return [line.split(" ", 1)[1] for line in stamped]

    wait_until(lambda: "221 2.0.0 Bye" in files(server_log, "out"), timeout=10, what="the MTA rawlog")
    mta_in, mta_out = lines(files(server_log, "in")), lines(files(server_log, "out"))
    # (smtplib's spelling)
    assert "mail FROM:<mta@example.net>" in mta_in
    assert "rcpt TO:<alice@example.org>" in mta_in
    assert "Subject: rawlogged" in mta_in
    assert mta_out[0] == "220 proxy.test LMTP proxy ready."
    assert "354 OK" in mta_out
    backend_in, backend_out = lines(files(client_log, "in")), lines(files(client_log, "out"))
    assert "LHLO proxy.test" in backend_out
    assert any(line.startswith("XCLIENT ") for line in backend_out)
    assert "RCPT TO:<alice@example.org>" in backend_out
    assert any(re.fullmatch(r"BDAT \d+ LAST", line) for line in backend_out)
    assert "Subject: rawlogged" in backend_out
    assert any(line.startswith("250-CHUNKING") for line in backend_in)
    # STARTTLS to a backend: the rawlog goes on in new files, in the clear
    before = set(client_log.glob("*.out"))
    refused, replies = deliver(PROXYD_ADDRESS, proxy.port, ["tls@example.org"], body("rawlog tls"))
    assert refused == {}
    assert [code for code, _ in replies] == [250]
    new = sorted(set(client_log.glob("*.out")) - before)
    assert len(new) == 2
    outs = [lines(path.read_text(errors="replace")) for path in new]
    plain, inside = (outs[0], outs[1]) if "STARTTLS" in outs[0] else (outs[1], outs[0])
    assert plain[-1] == "STARTTLS"
    assert "RCPT TO:<bob@example.org> ORCPT=rfc822;tls@example.org" in inside


def test_bare_lf_data_as_dovecot_lmtp_takes_it(lmtp_proxy: LmtpProxy) -> None:
    """An MTA that ends lines with LF alone: Dovecot's DATA reader takes LF.LF as the end and
    drops a dot that opens a line; so does proxyd."""
    steps = [
        (b"MAIL FROM:<mta@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n", 3),
        (b"Subject: bare lf\n\n..stuffed\nlast\n.\n", 1),
        (b"QUIT\r\n", 1),
    ]
    assert _lmtp_script(PROXYD_ADDRESS, lmtp_proxy.port, steps) == _lmtp_script(
        lmtp_proxy.a.address, lmtp_proxy.a.lmtp_port, steps)
    messages = delivered(lmtp_proxy.a, "alice", "bare lf")
    assert len(messages) == 2
    for message in messages:
        assert message.replace(b"\r\n", b"\n").endswith(b"Subject: bare lf\n\n.stuffed\nlast\n")


def test_lhlo_capabilities_as_dovecot_lmtp_lists_them(lmtp_proxy: LmtpProxy) -> None:
    """Both trust the MTA here (login_trusted_networks): the same list after the host name."""

    def lhlo(host: str, port: int) -> list[bytes]:
        with socket.create_connection((host, port), timeout=30) as sock, sock.makefile("rb") as replies:
            assert replies.readline().startswith(b"220 ")
            sock.sendall(b"LHLO mta.test\r\n")
            lines = [replies.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(replies.readline())
        return [line.rstrip(b"\r\n")[4:] for line in lines[1:]]

    assert lhlo(PROXYD_ADDRESS, lmtp_proxy.port) == lhlo(lmtp_proxy.a.address, lmtp_proxy.a.lmtp_port) == [
        b"8BITMIME", b"CHUNKING", b"ENHANCEDSTATUSCODES", b"PIPELINING", b"STARTTLS",
        b"XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT", b"XRCPTFORWARD"]
