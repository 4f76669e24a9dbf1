"""ManageSieve end to end: ``proxyd -c FILE`` with ``protocols = sieve`` in front of real Pigeonhole backends.

The client is a small ManageSieve client (tests/helpers/managesieve.py); the
backends are Dovecot with Debian's dovecot-managesieved (tests/fixtures/dovecot.py
``mail_backend_a``/``_b``), which trust 127.0.0.0/8 and so take proxyd's
XCLIENT: their log names the real client address.

Users (proxyd's passwd-file):

=======  =========  ==================================================
user     password   routed to
=======  =========  ==================================================
alice    alicepw    mail-a ManageSieve
bob      bobpw      mail-b ManageSieve
carol    carolpw    mail-a as ``destuser=dave``
mia      miapw      mail-a as alice, logged in as master user proxymaster
dan      danpw      a closed port on mail-a's address
=======  =========  ==================================================
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import proxy_started
from tests.fixtures.dovecot import SieveSubmissionBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_port, free_ports
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
from tests.helpers.managesieve import ManageSieveClient

pytestmark = pytest.mark.e2e

CAPS_BEFORE_TLS = [
    '"IMPLEMENTATION" "Dovecot Pigeonhole"',
    '"SIEVE" "fileinto reject envelope encoded-character vacation subaddress '
    "comparator-i;ascii-numeric relational regex imap4flags copy include variables body "
    'enotify environment mailbox date index ihave duplicate mime foreverypart extracttext"',
    '"NOTIFY" "mailto"',
    '"SASL" "PLAIN LOGIN"',
    '"STARTTLS"',
    '"VERSION" "1.0"',
]
SCRIPT = 'require "fileinto";\r\nif header :contains "subject" "[list]" { fileinto "Lists"; }\r\n'


def _entries(a: SieveSubmissionBackend, b: SieveSubmissionBackend) -> list[PasswdEntry]:
    return [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(a.address, a.sieve_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(b.address, b.sieve_port)),
        PasswdEntry("carol", "{PLAIN}carolpw", proxy_fields(a.address, a.sieve_port, destuser="dave")),
        PasswdEntry(
            "mia",
            "{PLAIN}miapw",
            proxy_fields(a.address, a.sieve_port, destuser="alice", master="proxymaster", **{"pass": "masterpw"}),
        ),
        PasswdEntry("dan", "{PLAIN}danpw", proxy_fields(a.address, free_port(a.address), proxy_timeout="2")),
    ]


def sieve_config(proxyd: ProxydRunner, passwd: Path, **settings: str | None) -> ProxydConfig:
    # Debian's Dovecot says "(Debian)" in both by default; the reference run must match
    settings.setdefault("managesieve_implementation_string", "Dovecot Pigeonhole")
    settings.setdefault("login_greeting", "Dovecot ready.")
    config = proxyd.config(passwd, imaps=False, protocols="sieve", **settings)
    (port,) = free_ports(PROXYD_ADDRESS, 1)
    config.listeners = [Listener("managesieve-login", "sieve", PROXYD_ADDRESS, port)]
    return config


@pytest.fixture
def running(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> ProxydProcess:
    passwd = write_passwd_file(proxyd.workdir / "sieve-users", _entries(mail_backend_a, mail_backend_b))
    return proxyd.start(sieve_config(proxyd, passwd))


def connect(running: ProxydProcess, n: int) -> ManageSieveClient:
    return ManageSieveClient(running.address("sieve"), running.port("sieve"), source_ip=client_address(n))


def test_greeting_capability_noop_logout(running: ProxydProcess) -> None:
    with connect(running, 1) as client:
        assert client.greeting.lines == CAPS_BEFORE_TLS
        assert client.greeting.final == 'OK "Dovecot ready."'
        reply = client.command("CAPABILITY")
        assert (reply.lines, reply.final) == (CAPS_BEFORE_TLS, 'OK "Capability completed."')
        assert client.command("NOOP").final == 'OK "NOOP Completed"'
        assert client.command('NOOP "x1"').final == 'OK (TAG "x1") "Done"'
        assert client.command("FOO").final == 'NO "Error in MANAGESIEVE command received by server."'
        assert client.logout().final == 'OK "Logout completed."'
    running.wait_for_log(r"managesieve-login: Info: Disconnected: Aborted login by logging out \(no auth attempts")


def test_scripts_land_on_the_users_backend(
    running: ProxydProcess, mail_backend_a: SieveSubmissionBackend, mail_backend_b: SieveSubmissionBackend
) -> None:
    for user, password, home, other, n in (
        ("alice", "alicepw", mail_backend_a, mail_backend_b, 2),
        ("bob", "bobpw", mail_backend_b, mail_backend_a, 3),
    ):
        name = f"proxyd-{user}-{os.getpid()}-{time.monotonic_ns()}"
        with connect(running, n) as client:
            assert client.authenticate_plain(user, password).final == 'OK "Logged in."'
            # from here on the backend answers: its own implementation string
            caps = client.command("CAPABILITY")
            assert '"IMPLEMENTATION" "Dovecot (Debian) Pigeonhole"' in caps.lines
            assert client.putscript(name, SCRIPT).status == "OK"
            assert client.setactive(name).status == "OK"
            assert f'"{name}" ACTIVE' in client.listscripts().lines
            client.logout()
        assert (home.sieve_dir(user) / f"{name}.sieve").read_text() == SCRIPT.replace("\r\n", "\n")
        assert not (other.sieve_dir(user) / f"{name}.sieve").exists()
        # the backend took proxyd's XCLIENT: it logged the client's own address
        home.dovecot.wait_for_log(
            rf"managesieve-login: Info: Login: user=<{user}>, method=PLAIN, rip={client_address(n)}, "
        )
        running.wait_for_log(proxy_started(user, home.address))


def test_destuser_and_master_user(running: ProxydProcess, mail_backend_a: SieveSubmissionBackend) -> None:
    with connect(running, 4) as client:
        assert client.authenticate_plain("carol", "carolpw").final == 'OK "Logged in."'
    mail_backend_a.dovecot.wait_for_log(r"managesieve-login: Info: Login: user=<dave>, .*rip=" + client_address(4))
    with connect(running, 5) as client:
        assert client.authenticate_plain("mia", "miapw").final == 'OK "Logged in."'
    mail_backend_a.dovecot.wait_for_log(
        r"managesieve-login: Info: Login: user=<alice>, method=PLAIN, rip=" + client_address(5)
    )


def test_login_mechanism(running: ProxydProcess) -> None:
    with connect(running, 6) as client:
        assert client.authenticate_login("bob", "bobpw").final == 'OK "Logged in."'


def test_failures(running: ProxydProcess) -> None:
    with connect(running, 7) as client:
        assert client.authenticate_plain("alice", "wrong").final == 'NO "Authentication failed."'
        assert client.authenticate_plain("dan", "danpw").final == (
            'NO (TRYLATER) "Account is temporarily unavailable."'
        )
        assert client.command('AUTHENTICATE "CRAM-MD5"').final == 'NO "Unsupported authentication mechanism."'
    running.wait_for_log(r"proxy\(dan[,)].*connect\(127\.0\.0\.2, \d+\) failed")


def test_starttls_sends_capabilities_again(running: ProxydProcess, proxyd_tls: TlsFiles) -> None:
    context = ssl.create_default_context(cafile=str(proxyd_tls.ca_pem))
    with connect(running, 8) as client:
        reply = client.starttls(context, server_hostname="localhost")
        assert reply.lines == [line for line in CAPS_BEFORE_TLS if line != '"STARTTLS"']
        assert reply.final == 'OK "TLS negotiation successful."'
        assert client.authenticate_plain("alice", "alicepw").final == 'OK "Logged in."'
    running.wait_for_log(r"managesieve-login: Info: .*user=<alice>, method=PLAIN, .*TLS")


@pytest.mark.proxyd_only
def test_who_kick_and_process_title(running: ProxydProcess, proxyd: ProxydRunner) -> None:
    with connect(running, 9) as client:
        assert client.authenticate_plain("alice", "alicepw").final == 'OK "Logged in."'
        conf = str(running.config_path)
        who = proxyd.proxyctl("-c", conf, "who")
        assert who.returncode == 0, who.stderr
        assert any(
            line.split()[:3] == ["alice", "sieve", client_address(9)] for line in who.stdout.splitlines()
        ), who.stdout
        kicked = proxyd.proxyctl("-c", conf, "kick", "alice")
        assert kicked.stdout.strip().startswith("1"), kicked.stdout
        with pytest.raises(EOFError):
            client.command("NOOP")
    # a client still logging in has its login process (a proxied one may have left it)
    with connect(running, 10):
        titles = []
        for pid in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if pid.isdigit():
                    titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip())
        assert b"proxyd: managesieve-login" in titles
