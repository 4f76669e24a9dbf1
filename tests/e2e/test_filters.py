"""``protocol``/``local``/``remote`` blocks and Dovecot's TLS settings, end to end.

proxyd listens on 127.0.0.1 and 127.0.0.5; clients connect from their own
loopback source addresses, so each block's effect is seen by a real client:
the greeting and the certificate per local address, ``disable_plaintext_auth``
per client network, and every TLS setting through Python's ssl client.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import PROXYD_OTHER_ADDRESS, client_address, free_port
from tests.fixtures.proxyd import Listener, ProxydProcess, ProxydRunner
from tests.fixtures.tls import TlsFiles, issue_tls_files
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


def _start(proxyd: ProxydRunner, passwd: Path, extra: str, **settings: str) -> ProxydProcess:
    config = proxyd.config(passwd, **{"disable_plaintext_auth": "yes", **settings})
    config.listeners.append(
        Listener("imap-login", "imap5", PROXYD_OTHER_ADDRESS, free_port(PROXYD_OTHER_ADDRESS))
    )
    config.listeners.append(
        Listener("imap-login", "imaps5", PROXYD_OTHER_ADDRESS, free_port(PROXYD_OTHER_ADDRESS), ssl=True)
    )
    config.extra = extra
    return proxyd.start(config)


def _greeting_and_capability(address: str, port: int, source: str) -> tuple[bytes, bytes]:
    with socket.create_connection((address, port), timeout=CLIENT_TIMEOUT, source_address=(source, 0)) as sock:
        reader = sock.makefile("rb")
        greeting = reader.readline()
        sock.sendall(b"a CAPABILITY\r\n")
        capability = reader.readline()
        reader.readline()
        return greeting, capability


def test_greeting_per_local_address_and_plaintext_per_client_network(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    running = _start(
        proxyd,
        passwd_file(()),
        f"local {PROXYD_OTHER_ADDRESS} {{\n  login_greeting = second address ready.\n}}\n"
        f"remote {client_address(60)}/32 {{\n  disable_plaintext_auth = no\n}}\n"
        "protocol imap {\n  login_greeting = imap ready.\n}\n",
    )
    first = (running.address("imap"), running.port("imap"))
    second = (running.address("imap5"), running.port("imap5"))
    # a client from 127.0.0.x to another 127.0.0.y is not "secured" (not the same address)
    greeting, _capability = _greeting_and_capability(*first, client_address(61))
    assert greeting == b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] imap ready.\r\n"
    greeting, _ = _greeting_and_capability(*second, client_address(61))
    assert greeting.endswith(b"] second address ready.\r\n")
    # the client network with plaintext allowed: no LOGINDISABLED, and a plaintext login works
    greeting, _ = _greeting_and_capability(*first, client_address(60))
    assert b"LOGINDISABLED" not in greeting
    assert b"AUTH=PLAIN" in greeting
    # imaplib cannot choose its source address: log in over a raw socket instead
    with socket.create_connection(first, timeout=CLIENT_TIMEOUT, source_address=(client_address(60), 0)) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"a LOGIN alice alicepw\r\n")
        assert reader.readline().startswith(b"a OK")
    with socket.create_connection(first, timeout=CLIENT_TIMEOUT, source_address=(client_address(61), 0)) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"a LOGIN alice alicepw\r\n")
        assert reader.readline() == (
            b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client "
            b"did it anyway. If anyone was listening, the password was exposed.\r\n"
        )


def _tls(address: str, port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((address, port), timeout=CLIENT_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname=address)


def test_certificate_per_local_address(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, tls_ca: trustme.CA, proxyd_tls: TlsFiles, tmp_path: Path
) -> None:
    other = issue_tls_files(tls_ca, tmp_path / "other-tls", "other.example", PROXYD_OTHER_ADDRESS)
    running = _start(
        proxyd,
        passwd_file(()),
        f"local {PROXYD_OTHER_ADDRESS} {{\n  ssl_cert = <{other.cert_pem}\n  ssl_key = <{other.key_pem}\n}}\n",
    )
    ctx = proxyd_tls.client_context()
    with _tls(running.address("imaps"), running.port("imaps"), ctx) as tls:
        names = [value for key, value in tls.getpeercert()["subjectAltName"]]
        assert "localhost" in names
        assert "other.example" not in names
    with _tls(running.address("imaps5"), running.port("imaps5"), ctx) as tls:
        names = [value for key, value in tls.getpeercert()["subjectAltName"]]
        assert "other.example" in names
        assert "localhost" not in names
    # STARTTLS on the second address too (imaplib checks the name against 127.0.0.5)
    with imaplib.IMAP4(running.address("imap5"), running.port("imap5"), timeout=CLIENT_TIMEOUT) as imap:
        imap.starttls(ctx)
        assert "other.example" in [v for _, v in imap.sock.getpeercert()["subjectAltName"]]  # type: ignore[attr-defined]
        imap.login("alice", "alicepw")
        imap.logout()


def _client(**options: object) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for name, value in options.items():
        setattr(ctx, name, value)
    return ctx


def _s_client(address: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{port}", "-brief", *args],
        input="", capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False,
    )


def test_tls_settings_take_effect(proxyd: ProxydRunner, passwd_file: PasswdWriter) -> None:
    running = _start(
        proxyd,
        passwd_file(()),
        "",
        ssl_cipher_suites="TLS_CHACHA20_POLY1305_SHA256",
        ssl_curve_list="secp384r1",
        ssl_cipher_list="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        ssl_prefer_server_ciphers="yes",
        ssl_options="no_ticket",
        ssl_dh="</usr/share/dovecot/dh.pem",
        verbose_ssl="yes",
    )
    address, port = running.address("imaps"), running.port("imaps")
    with _tls(address, port, _client()) as tls:
        assert tls.version() == "TLSv1.3"
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0] == "TLS_CHACHA20_POLY1305_SHA256"
        assert tls.recv(100).startswith(b"* OK")
    # TLS 1.2: the server's order wins over the client's (ssl_prefer_server_ciphers)
    client = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with _tls(address, port, client) as tls:
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        assert tls.recv(100).startswith(b"* OK")
        # no_ticket (TLS 1.3 still sends stateful tickets with OpenSSL, as under Dovecot)
        assert tls.session is not None
        assert not tls.session.has_ticket
    # a cipher outside ssl_cipher_list, or a curve outside ssl_curve_list, fails the handshake
    client = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
    with pytest.raises(ssl.SSLError):
        _tls(address, port, client).close()
    assert _s_client(address, port, "-groups", "secp384r1").returncode == 0
    assert _s_client(address, port, "-groups", "X25519").returncode != 0
    # verbose_ssl: handshakes are logged
    running.wait_for_log(r"imap-login: Info: SSL: handshake finished: TLSv1\.3")


def test_ssl_min_protocol_per_protocol_block(proxyd: ProxydRunner, passwd_file: PasswdWriter) -> None:
    running = _start(
        proxyd, passwd_file(()), f"local {PROXYD_OTHER_ADDRESS} {{\n  ssl_min_protocol = TLSv1.3\n}}\n"
    )
    tls12 = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
    with _tls(running.address("imaps"), running.port("imaps"), tls12) as tls:
        assert tls.version() == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        _tls(running.address("imaps5"), running.port("imaps5"), tls12).close()


def test_auth_username_format_per_protocol(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    """``%Ln`` for IMAP: ``Alice@Example.COM`` is the passdb's ``alice``; POP3 keeps the default."""
    running = _start(
        proxyd,
        passwd_file(()),
        "protocol imap {\n  auth_username_format = %Ln\n}\n",
        disable_plaintext_auth="no",
    )
    with imaplib.IMAP4(running.address("imap"), running.port("imap"), timeout=CLIENT_TIMEOUT) as imap:
        imap.login("Alice@Example.COM", "alicepw")
        imap.select("INBOX", readonly=True)
        fetched = imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")[1][0]
        assert isinstance(fetched, tuple)
        assert backend_a.subject_for("alice").encode() in fetched[1]
        imap.logout()
    running.wait_for_log(r"imap-login: Info: proxy\(alice,[^)]+\): Started proxying to .*: user=<alice>")


def test_alt_certificate_and_key_password(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    """An RSA certificate beside the ECDSA one (``ssl_alt_cert``), and an encrypted key.

    A TLS 1.2 client that offers only RSA key exchange gets the RSA certificate;
    one offering only ECDSA gets the main one.  The main key is encrypted with
    ``ssl_key_password``.
    """
    ecdsa = issue_tls_files(tls_ca, tmp_path / "ecdsa", "localhost", "127.0.0.1")
    rsa_dir = tmp_path / "rsa"
    rsa_dir.mkdir()
    rsa = tls_ca.issue_cert("rsa.example", "127.0.0.1", key_type=trustme.KeyType.RSA)
    rsa.cert_chain_pems[0].write_to_path(str(rsa_dir / "cert.pem"))
    rsa.private_key_pem.write_to_path(str(rsa_dir / "key.pem"))
    encrypted = tmp_path / "ecdsa" / "key-encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(ecdsa.key_pem), "-aes256", "-passout", "pass:s3cret",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    running = _start(
        proxyd,
        passwd_file(()),
        "",
        ssl_cert=f"<{ecdsa.cert_pem}",
        ssl_key=f"<{encrypted}",
        ssl_key_password="s3cret",
        ssl_alt_cert=f"<{rsa_dir / 'cert.pem'}",
        ssl_alt_key=f"<{rsa_dir / 'key.pem'}",
    )
    address, port = running.address("imaps"), running.port("imaps")
    for ciphers, name in (
        ("ECDHE-RSA-AES128-GCM-SHA256", "rsa.example"),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "localhost"),
    ):
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cafile=str(ecdsa.ca_pem))
        client.check_hostname = False
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(ciphers)
        with _tls(address, port, client) as tls:
            names = [value for _, value in tls.getpeercert()["subjectAltName"]]
            assert name in names
            assert tls.recv(100).startswith(b"* OK")
    # -n never shows the passphrase
    shown = proxyd.run("-c", str(running.config_path), "-n")
    assert "ssl_key_password = # hidden, use -P to show it" in shown.stdout
    assert "s3cret" not in shown.stdout
