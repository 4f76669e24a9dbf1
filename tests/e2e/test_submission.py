"""Submission end to end: ``proxyd -c FILE`` with ``protocols = submission`` in front of real Dovecot.

The client is Python's smtplib; the backends are Dovecot with Debian's
dovecot-submissiond (tests/fixtures/dovecot.py ``mail_backend_a``/``_b``), each
relaying what it accepts to an SMTP sink of its own, so a test sees which
backend took a message.  The backends trust 127.0.0.0/8: proxyd's XCLIENT makes
them log the client's own address.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.conftest import proxy_started
from tests.fixtures.dovecot import SieveSubmissionBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_port, free_ports, wait_until
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
from tests.helpers.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

HOSTNAME = "proxy.test"
EHLO_LINES = [
    HOSTNAME,
    "8BITMIME",
    "AUTH PLAIN LOGIN",
    "BURL imap",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
    "SIZE",
    "STARTTLS",
    "PIPELINING",
]


def _entries(a: SieveSubmissionBackend, b: SieveSubmissionBackend) -> list[PasswdEntry]:
    return [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(a.address, a.submission_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(b.address, b.submission_port)),
        PasswdEntry(
            "mia",
            "{PLAIN}miapw",
            proxy_fields(a.address, a.submission_port, destuser="alice", master="proxymaster", **{"pass": "masterpw"}),
        ),
        PasswdEntry("dan", "{PLAIN}danpw", proxy_fields(a.address, free_port(a.address), proxy_timeout="2")),
        # forward_* fields long enough that proxyd's XCLIENT to the backend takes two lines
        PasswdEntry(
            "fay",
            "{PLAIN}faypw",
            proxy_fields(a.address, a.submission_port, destuser="alice", master="proxymaster",
                         forward_note="n" * 400, **{"pass": "masterpw"}),
        ),
    ]


def submission_config(proxyd: ProxydRunner, passwd: Path) -> ProxydConfig:
    config = proxyd.config(
        passwd, imaps=False, protocols="submission", hostname=HOSTNAME, login_greeting="Dovecot ready."
    )
    (port,) = free_ports(PROXYD_ADDRESS, 1)
    config.listeners = [Listener("submission-login", "submission", PROXYD_ADDRESS, port)]
    return config


@pytest.fixture
def running(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> ProxydProcess:
    passwd = write_passwd_file(proxyd.workdir / "submission-users", _entries(mail_backend_a, mail_backend_b))
    return proxyd.start(submission_config(proxyd, passwd))


def connect(running: ProxydProcess, n: int) -> smtplib.SMTP:
    return smtplib.SMTP(
        running.address("submission"), running.port("submission"), timeout=20,
        source_address=(client_address(n), 0),
    )


def message(sender: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "someone@example.net"
    msg["Subject"] = subject
    msg.set_content("sent through proxyd\n")
    return msg


def test_before_login(running: ProxydProcess) -> None:
    with connect(running, 31) as client:
        code, text = client.ehlo("client.example")
        assert code == 250
        assert text.decode().split("\n") == EHLO_LINES
        assert client.mail("a@example.org") == (530, b"5.7.0 Authentication required.")
        assert client.noop() == (250, b"2.0.0 OK")
        assert client.docmd("FOO") == (500, b"5.5.1 Unknown command")
        assert client.docmd("AUTH", "CRAM-MD5") == (504, b"5.5.4 Unsupported authentication mechanism.")


def test_greeting(running: ProxydProcess) -> None:
    import socket

    with socket.create_connection((running.address("submission"), running.port("submission")), 10) as sock:
        assert sock.makefile("rb").readline() == f"220 {HOSTNAME} Dovecot ready.\r\n".encode()


def test_messages_reach_the_users_backend(
    running: ProxydProcess, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> None:
    for user, password, home, other, n in (
        ("alice", "alicepw", mail_backend_a, mail_backend_b, 32),
        ("bob", "bobpw", mail_backend_b, mail_backend_a, 33),
    ):
        subject = f"proxyd-{user}-{os.getpid()}-{time.monotonic_ns()}"
        with connect(running, n) as client:
            client.ehlo("client.example")
            assert client.login(user, password) == (235, b"2.7.0 Logged in.")
            client.send_message(message(f"{user}@example.org", subject))
        wait_until(
            lambda: any(subject.encode() in m.data for m in home.relay.messages),  # noqa: B023
            timeout=10,
            what=f"{subject} at {home.address}'s relay",
        )
        assert not any(subject.encode() in m.data for m in other.relay.messages)
        # the backend took proxyd's XCLIENT: it logged the client's own address and EHLO name
        home.dovecot.wait_for_log(
            rf"submission-login: Info: Login: user=<{user}>, method=PLAIN, rip={client_address(n)}, "
        )
        running.wait_for_log(proxy_started(user, home.address))


def test_master_user(running: ProxydProcess, mail_backend_a: SieveSubmissionBackend) -> None:
    with connect(running, 34) as client:
        client.ehlo("client.example")
        assert client.login("mia", "miapw") == (235, b"2.7.0 Logged in.")
    mail_backend_a.dovecot.wait_for_log(
        r"submission-login: Info: Login: user=<alice>, method=PLAIN, rip=" + client_address(34)
    )


def test_failures(running: ProxydProcess) -> None:
    with connect(running, 35) as client:
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("alice", "wrong")
        assert (failed.value.smtp_code, failed.value.smtp_error) == (535, b"5.7.8 Authentication failed.")
        with pytest.raises(smtplib.SMTPAuthenticationError) as down:
            client.login("dan", "danpw")
        assert (down.value.smtp_code, down.value.smtp_error) == (
            454,
            b"4.7.0 Account is temporarily unavailable.",
        )
    running.wait_for_log(r"proxy\(dan[,)].*connect\(127\.0\.0\.2, \d+\) failed")


@pytest.mark.proxyd_only
def test_who_and_process_title(running: ProxydProcess, proxyd: ProxydRunner) -> None:
    with connect(running, 36) as client:
        client.ehlo("client.example")
        titles = []
        for pid in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if pid.isdigit():
                    titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip())
        assert b"proxyd: submission-login" in titles
        client.login("alice", "alicepw")
        who = proxyd.proxyctl("-c", str(running.config_path), "who")
        assert any(
            line.split()[:3] == ["alice", "submission", client_address(36)] for line in who.stdout.splitlines()
        ), who.stdout


def test_starttls_then_login(running: ProxydProcess, proxyd_tls: TlsFiles) -> None:
    context = ssl.create_default_context(cafile=str(proxyd_tls.ca_pem))
    with connect(running, 37) as client:
        client._host = "localhost"  # the name the certificate is for
        client.ehlo("client.example")
        assert client.starttls(context=context) == (220, b"2.0.0 Begin TLS negotiation now.")
        code, text = client.ehlo("client.example")
        assert code == 250
        assert "STARTTLS" not in text.decode().split("\n")
        assert client.login("alice", "alicepw") == (235, b"2.7.0 Logged in.")
    running.wait_for_log(r"submission-login: Info: .*user=<alice>, method=PLAIN, .*TLS")


# -- XCLIENT from a trusted proxy in front ----------------------------------------------------

FRONT = 38  # the client number of the "proxy in front": in login_trusted_networks


@pytest.fixture
def behind_a_proxy(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> ProxydProcess:
    passwd = write_passwd_file(proxyd.workdir / "submission-users", _entries(mail_backend_a, mail_backend_b))
    config = submission_config(proxyd, passwd)
    config.set(login_trusted_networks=f"{client_address(FRONT)}/32")
    return proxyd.start(config)


def test_xclient_from_a_trusted_proxy(behind_a_proxy: ProxydProcess, mail_backend_a: SieveSubmissionBackend) -> None:
    with connect(behind_a_proxy, FRONT) as client:
        _code, text = client.ehlo("front.example")
        assert text.decode().split("\n")[-1] == "XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD"
        assert client.docmd("XCLIENT", "ADDR=192.0.2.77 PORT=4242 HELO=real.example TTL=3") == (
            220,
            f"{HOSTNAME} Dovecot ready.".encode(),
        )
        assert client.docmd("XCLIENT", "PORT=0") == (501, b"5.5.4 Invalid PORT parameter")
        client.ehlo("front.example")
        assert client.login("alice", "alicepw") == (235, b"2.7.0 Logged in.")
    # proxyd logs the real client, and forwards it (and one hop less of its TTL) to the backend
    behind_a_proxy.wait_for_log(r"user=<alice>, method=PLAIN, rip=192\.0\.2\.77, ")
    mail_backend_a.dovecot.wait_for_log(
        r"submission-login: Info: Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.77, "
    )


def test_xclient_from_an_untrusted_client(behind_a_proxy: ProxydProcess) -> None:
    with connect(behind_a_proxy, FRONT + 1) as client:
        _code, text = client.ehlo("client.example")
        assert text.decode().split("\n") == EHLO_LINES
        assert client.docmd("XCLIENT", "ADDR=192.0.2.78") == (550, b"5.7.14 You are not from trusted IP")
        assert client.login("alice", "alicepw") == (235, b"2.7.0 Logged in.")
    behind_a_proxy.wait_for_log(rf"user=<alice>, method=PLAIN, rip={re.escape(client_address(FRONT + 1))}, ")


def test_xclient_ttl_runs_out(behind_a_proxy: ProxydProcess) -> None:
    with connect(behind_a_proxy, FRONT) as client:
        client.ehlo("front.example")
        assert client.docmd("XCLIENT", "ADDR=192.0.2.79 TTL=1")[0] == 220
        client.ehlo("front.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as looped:
            client.login("alice", "alicepw")
        assert (looped.value.smtp_code, looped.value.smtp_error) == (
            454,
            b"4.7.0 Account is temporarily unavailable.",
        )
    behind_a_proxy.wait_for_log(r"TTL reached zero - proxies appear to be looping\?")


def test_long_xclient_is_split(running: ProxydProcess, mail_backend_a: SieveSubmissionBackend) -> None:
    # HELO name and forward_note together pass 512 bytes: Dovecot takes the two XCLIENT lines
    helo = "h" * 200 + ".example"
    with connect(running, 40) as client:
        client.ehlo(helo)
        assert client.login("fay", "faypw") == (235, b"2.7.0 Logged in.")
    mail_backend_a.dovecot.wait_for_log(
        r"submission-login: Info: Login: user=<alice>, method=PLAIN, rip=" + client_address(40)
    )


# -- proxy_noauth and what the EHLO reply promises ----------------------------------------------


@pytest.fixture
def noauth_backends(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend
) -> Iterator[tuple[ProxydProcess, SmtpSink]]:
    """proxyd in front of Dovecot and of an MTA that takes XCLIENT LOGIN= (as Postfix does)."""
    with SmtpSink(mail_backend_a.address, extensions=("XCLIENT ADDR PORT HELO PROTO LOGIN",)) as mta:
        entries = [
            PasswdEntry("nina", "{PLAIN}ninapw", proxy_fields(mail_backend_a.address, mail_backend_a.submission_port,
                                                              proxy_noauth=None)),
            PasswdEntry("otto", "{PLAIN}ottopw", proxy_fields(mta.address, mta.port, proxy_noauth=None)),
        ]
        passwd = write_passwd_file(proxyd.workdir / "noauth-users", entries)
        config = submission_config(proxyd, passwd)
        config.set(submission_backend_capabilities="8BITMIME DSN")
        config.extra = "protocol submission {\n  submission_max_mail_size = 10M\n}\n"
        yield proxyd.start(config), mta


def test_proxy_noauth(noauth_backends: tuple[ProxydProcess, SmtpSink], mail_backend_a: SieveSubmissionBackend) -> None:
    running, mta = noauth_backends
    with connect(running, 41) as client:
        client.ehlo("client.example")
        assert client.login("otto", "ottopw") == (235, b"2.7.0 Logged in.")
        client.send_message(message("otto@example.org", "noauth"))
    commands = mta.commands
    assert not any(line.upper().startswith(b"AUTH") for line in commands), commands
    (xclient,) = [line for line in commands if line.startswith(b"XCLIENT ")]
    # only what the MTA offers (no TTL, SESSION), LOGIN= because of proxy_noauth
    pattern = rf"XCLIENT HELO=client\.example PROTO=ESMTP LOGIN=otto PORT=\d+ ADDR={re.escape(client_address(41))}"
    assert re.fullmatch(pattern.encode(), xclient), xclient
    assert any(b"noauth" in m.data for m in mta.messages)
    # a Dovecot backend takes no XCLIENT LOGIN=: without AUTH it still wants one (as behind Dovecot)
    with connect(running, 42) as client:
        client.ehlo("client.example")
        assert client.login("nina", "ninapw") == (235, b"2.7.0 Logged in.")
        assert client.mail("nina@example.org") == (530, b"5.7.0 Authentication required.")
    mail_backend_a.dovecot.wait_for_log(rf"submission-login: Info: Disconnected.*rip={client_address(42)}")


def test_ehlo_promises_the_configured_backend_capabilities(noauth_backends: tuple[ProxydProcess, SmtpSink]) -> None:
    running, _ = noauth_backends
    with connect(running, 43) as client:
        code, text = client.ehlo("client.example")
    assert code == 250
    assert text.decode().split("\n") == [
        HOSTNAME, "8BITMIME", "AUTH PLAIN LOGIN", "BURL imap", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES",
        f"SIZE {10 * 1024 * 1024}", "STARTTLS", "PIPELINING",
    ]


def test_too_many_bad_commands(running: ProxydProcess) -> None:
    with connect(running, 44) as client:
        client.ehlo("client.example")
        for _ in range(5):
            assert client.docmd("FOO") == (500, b"5.5.1 Unknown command")
        assert client.docmd("XCLIENT", "ADDR=192.0.2.1") == (550, b"5.7.14 You are not from trusted IP")
        for _ in range(10):
            assert client.docmd("BAR")[0] == 500
        # the eleventh in a row (501 Missing SASL mechanism parameter) is answered by the goodbye
        assert client.docmd("AUTH") == (421, f"4.7.0 {HOSTNAME} Too many invalid commands.".encode())
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.getreply()
    running.wait_for_log(
        r"submission-login: Info: Disconnected: Too many invalid commands\. \(unfinished AUTH command\) "
        rf"\(no auth attempts in \d+ secs\): user=<>, rip={re.escape(client_address(44))}"
    )


def test_tls_required(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend,
    proxyd_tls: TlsFiles,
) -> None:
    passwd = write_passwd_file(proxyd.workdir / "submission-users", _entries(mail_backend_a, mail_backend_b))
    running = proxyd.start(submission_config(proxyd, passwd).set(ssl="required"))
    with connect(running, 45) as client:
        _code, text = client.ehlo("client.example")
        assert "AUTH" not in text.decode()
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlcHc=") == (530, b"5.7.0 TLS required.")
        assert client.docmd("HELO", "client.example") == (530, b"5.7.0 TLS required.")
        client._host = "localhost"  # the name the certificate is for
        client.starttls(context=ssl.create_default_context(cafile=str(proxyd_tls.ca_pem)))
        assert client.docmd("STARTTLS") == (502, b"5.5.1 TLS is already active.")
        client.ehlo("client.example")
        assert client.login("alice", "alicepw") == (235, b"2.7.0 Logged in.")


@pytest.mark.proxyd_only  # timing: Dovecot's anvil penalty has its own curve
def test_xclient_address_carries_the_penalty(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> None:
    """The auth penalty follows the address a trusted front names, not the front's own."""
    passwd = write_passwd_file(proxyd.workdir / "submission-users", _entries(mail_backend_a, mail_backend_b))
    config = submission_config(proxyd, passwd)
    config.set(login_trusted_networks=f"{client_address(FRONT + 2)}/32", auth_failure_delay="1s")
    running = proxyd.start(config)

    def login_as(address: str, password: str) -> tuple[float, int]:
        with connect(running, FRONT + 2) as client:
            client.ehlo("front.example")
            assert client.docmd("XCLIENT", f"ADDR={address}")[0] == 220
            client.ehlo("front.example")
            started = time.monotonic()
            # one AUTH (smtplib's login() would try LOGIN after a refused PLAIN)
            initial = base64.b64encode(f"\0alice\0{password}".encode()).decode()
            code = client.docmd("AUTH", f"PLAIN {initial}")[0]
            return time.monotonic() - started, code

    elapsed, code = login_as("192.0.2.90", "wrong")
    assert code == 535
    assert 1.0 <= elapsed < 2.5
    # the same front for another client: not slowed down
    elapsed, code = login_as("192.0.2.91", "alicepw")
    assert code == 235
    assert elapsed < 1.5
    # the client that failed waits out its penalty
    elapsed, code = login_as("192.0.2.90", "alicepw")
    assert code == 235
    assert 3.5 < elapsed < 8
