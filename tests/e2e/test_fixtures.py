"""The test fixtures on their own: real Dovecot backends, the recording backend, config rendering.

These need no proxyd.  They make sure that when an end-to-end test fails, the
fault is proxyd's and not the harness's.
"""

from __future__ import annotations

import base64
import poplib
import re
import subprocess
from pathlib import Path

import trustme

from tests.fixtures.dovecot import DOVEADM, DovecotBackend, dovecot_hash
from tests.fixtures.net import (
    RECORDING_BACKEND_ADDRESS,
    client_address,
    free_ports,
    port_accepts,
)
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.fixtures.tls import issue_tls_files
from tests.helpers.clients import IMAP4, IMAP4_SSL, RawImapClient, curl, fetch_subjects
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend, parse_args


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports("127.0.0.1", 5)
    assert len(set(ports)) == 5
    assert not any(port_accepts("127.0.0.1", port) for port in ports)


def test_each_backend_serves_its_own_mail(
    backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """The same user on the two backends sees a Subject naming the backend."""
    assert backend_a.address != backend_b.address
    for backend in (backend_a, backend_b):
        with IMAP4(backend.address, backend.imap_port) as client:
            assert client.login("alice", "alicepw")[0] == "OK"
            assert fetch_subjects(client) == [f"{backend.name}: INBOX of alice"]
            client.logout()


def test_backend_starttls_and_imaps_verify_against_the_test_ca(backend_a: DovecotBackend) -> None:
    with IMAP4(backend_a.address, backend_a.imap_port) as client:
        assert client.starttls(ssl_context=backend_a.tls.client_context())[0] == "OK"
        assert client.login("bob", "bobpw")[0] == "OK"
        client.logout()
    with IMAP4_SSL(
        backend_a.address, backend_a.imaps_port, ssl_context=backend_a.tls.client_context()
    ) as client:
        assert client.login("dave", "carolpw")[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("dave")]
        client.logout()


def test_backend_pop3(backend_b: DovecotBackend) -> None:
    client = poplib.POP3(backend_b.address, backend_b.pop3_port, timeout=20)
    try:
        client.user("bob")
        client.pass_("bobpw")
        count, _size = client.stat()
        assert count == 1
        _resp, lines, _octets = client.retr(1)
        assert f"Subject: {backend_b.subject_for('bob')}".encode() in lines
    finally:
        client.quit()


def test_backend_master_user(backend_a: DovecotBackend) -> None:
    """``user*proxymaster`` with LOGIN, and AUTHENTICATE PLAIN with authzid."""
    with IMAP4(backend_a.address, backend_a.imap_port) as client:
        client.login(f"alice*{backend_a.master_user}", backend_a.master_password)
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    with RawImapClient(backend_a.address, backend_a.imap_port) as client:
        token = base64.b64encode(
            f"bob\0{backend_a.master_user}\0{backend_a.master_password}".encode()
        ).decode()
        assert client.command(f"AUTHENTICATE PLAIN {token}").status == "OK"


def test_backend_wrong_password_is_fast_and_exact(backend_b: DovecotBackend) -> None:
    with RawImapClient(
        backend_b.address, backend_b.imap_port, source_ip=client_address(100)
    ) as client:
        reply = client.command("LOGIN bob wrong")
        assert reply.tagged == "NO [AUTHENTICATIONFAILED] Authentication failed."


def test_backend_honours_a_trusted_id_and_logs_the_forwarded_address(
    backend_b: DovecotBackend,
) -> None:
    """What the e2e tests rely on: an ID from 127.0.0.0/8 sets ``rip=``, ``lip=``, ``session=``."""
    session = "fixtureSelfTest01"
    with RawImapClient(
        backend_b.address, backend_b.imap_port, source_ip=client_address(101)
    ) as client:
        reply = client.command(
            'ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "4242" '
            '"x-connected-ip" "127.0.0.1" "x-connected-port" "143" '
            f'"x-session-id" "{session}" "x-proxy-ttl" "4")'
        )
        assert reply.status == "OK"
        assert client.command("LOGIN bob bobpw").status == "OK"
        client.command("LOGOUT")
    [line] = backend_b.wait_for_log(rf"Login: user=<bob>.*session=<{session}>")
    assert re.search(r"rip=192\.0\.2\.7, lip=127\.0\.0\.1,", line), line


def test_dovecot_hash_verifies_with_doveadm() -> None:
    hashed = dovecot_hash("s3cret", "SHA512-CRYPT")
    assert hashed.startswith("{SHA512-CRYPT}$6$")
    result = subprocess.run(
        [DOVEADM, "-c", "/dev/null", "pw", "-t", hashed, "-p", "s3cret"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_recording_backend_records_login_and_literals() -> None:
    script = ImapScript(users={"rita": "rita pw"})
    with RecordingImapBackend(script) as backend:
        with IMAP4(backend.address, backend.port) as client:
            assert client.login("rita", "rita pw")[0] == "OK"
            client.logout()
        with RawImapClient(backend.address, backend.port) as client:
            client.send_raw(b"a1 LOGIN {4}\r\n")
            assert client.read_line() == "+ OK"
            client.send_raw(b"rita {7+}\r\nrita pw\r\n")
            assert client.read_reply("a1").status == "OK"
        with RawImapClient(backend.address, backend.port) as client:
            assert client.command('LOGIN "rita" "nope"').tagged.startswith(
                "NO [AUTHENTICATIONFAILED]"
            )
            token = base64.b64encode(b"\0rita\0rita pw").decode()
            assert client.command(f"AUTHENTICATE PLAIN {token}").status == "OK"
        connections = backend.wait_for_connections(3)
    assert [c.credentials for c in connections] == [
        [("", "rita", "rita pw")],
        [("", "rita", "rita pw")],
        [("", "rita", "nope"), ("", "rita", "rita pw")],
    ]
    assert b"a1 LOGIN {4}\r\nrita {7+}\r\nrita pw\r\n" in backend.received()
    assert connections[0].command_names()[-1] == "LOGOUT"


def test_recording_backend_starttls(tls_ca: trustme.CA, tmp_path: Path) -> None:
    tls = issue_tls_files(tls_ca, tmp_path, RECORDING_BACKEND_ADDRESS)
    with RecordingImapBackend(ImapScript(users={"u": "p"}), tls=tls.server_context()) as backend:
        with IMAP4(backend.address, backend.port) as client:
            assert client.starttls(ssl_context=tls.client_context())[0] == "OK"
            assert client.login("u", "p")[0] == "OK"
        [connection] = backend.wait_for_connections(1)
    # imaplib asks CAPABILITY on connect and again after STARTTLS
    assert connection.command_names()[:4] == ["CAPABILITY", "STARTTLS", "CAPABILITY", "LOGIN"]
    assert connection.credentials == [("", "u", "p")]


def test_parse_args() -> None:
    assert parse_args(b'("a" "b" "c" NIL) atom {3}\r\nxyz "q\\"x"\r\n') == [
        ["a", "b", "c", None],
        "atom",
        "xyz",
        'q"x',
    ]


def test_curl_against_a_backend(backend_a: DovecotBackend) -> None:
    """curl itself works here (so an e2e curl failure is about proxyd)."""
    url = f"imap://{backend_a.address}:{backend_a.imap_port}/INBOX;UID=1"
    result = curl([url, "-u", "alice:alicepw", "--login-options", "AUTH=PLAIN"])
    assert result.returncode == 0, result.stderr
    assert f"Subject: {backend_a.subject_for('alice')}" in result.stdout


def test_passwd_entry_line() -> None:
    entry = PasswdEntry(
        "carol", "{PLAIN}pw", {**proxy_fields("127.0.0.2", 1143, destuser="dave"), "nodelay": None}
    )
    assert (
        entry.line()
        == "carol:{PLAIN}pw::::::proxy=y host=127.0.0.2 port=1143 destuser=dave nodelay"
    )


def test_proxyd_config_is_accepted_by_doveconf(proxyd: ProxydRunner, tmp_path: Path) -> None:
    """The configuration the tests give proxyd is plain Dovecot syntax: doveconf parses it."""
    passwd = tmp_path / "users"
    passwd.write_text("alice:{PLAIN}x::::::proxy=y host=127.0.0.2\n")
    config = proxyd.config(passwd, login_greeting="Hi there")
    path = proxyd.write_config(config)
    result = subprocess.run(
        ["doveconf", "-c", str(path), "-n"], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    for line in (
        f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {config.listener('imap').port}\n  }}",
        "login_greeting = Hi there",
        "disable_plaintext_auth = no",
        f"  args = {passwd}",
    ):
        assert line in result.stdout, result.stdout
