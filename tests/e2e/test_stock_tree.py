"""Debian's stock Dovecot 2.3 tree, turned into a proxy, runs under proxyd unchanged.

The tree is ``/etc/dovecot`` as dovecot-core ships it plus the protocols.d
files of the installed protocol packages, with only an administrator's
edits (tests/e2e/stock_tree.py).  ``proxyd -n`` passes and lists what belongs
to services a proxy does not run; real clients log in over IMAP (STARTTLS,
IMAPS) and POP3 (STLS, POP3S) and reach the real Dovecot backend.
"""

from __future__ import annotations

import imaplib
import poplib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd.protocols import registry
from tests.e2e.stock_tree import StockPorts, stock_tree
from tests.fixtures.dovecot import DovecotBackend, dovecot_hash
from tests.fixtures.net import PROXYD_ADDRESS, free_ports
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydConfig,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.fixtures.tls import TlsFiles
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


@pytest.fixture
def tree_dir() -> Iterator[Path]:
    """A directory the unprivileged auth process can read (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="proxyd-stock-"))
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _users(tree_dir: Path, backend: DovecotBackend) -> Path:
    """``users-%s``: one passwd-file per protocol, since the backend's ports are not the defaults."""
    password = dovecot_hash("alicepw", "SHA512-CRYPT")
    for protocol, port in (("imap", backend.imap_port), ("pop3", backend.pop3_port)):
        write_passwd_file(
            tree_dir / f"users-{protocol}",
            [PasswdEntry("alice", password, proxy_fields(backend.address, port))],
        )
    return tree_dir / "users-%s"


def _start(
    proxyd: ProxydRunner,
    tree_dir: Path,
    proxyd_tls: TlsFiles,
    backend: DovecotBackend,
    protocols: list[str],
    extra: dict[str, str] | None = None,
) -> tuple[Path, StockPorts]:
    ports = StockPorts(*free_ports(PROXYD_ADDRESS, 4))
    conf = stock_tree(
        tree_dir,
        protocols=protocols,
        listen=PROXYD_ADDRESS,
        ports=ports,
        cert=proxyd_tls.cert_pem,
        key=proxyd_tls.key_pem,
        users=_users(tree_dir, backend),
        base_dir=tree_dir / "run",
        extra=extra,
    )
    return conf, ports


def _listeners(ports: StockPorts) -> list[Listener]:
    return [
        Listener("imap-login", "imap", PROXYD_ADDRESS, ports.imap),
        Listener("imap-login", "imaps", PROXYD_ADDRESS, ports.imaps, ssl=True),
        Listener("pop3-login", "pop3", PROXYD_ADDRESS, ports.pop3),
        Listener("pop3-login", "pop3s", PROXYD_ADDRESS, ports.pop3s, ssl=True),
    ]


def test_stock_tree_loads_and_proxies_imap_and_pop3(
    proxyd: ProxydRunner, tree_dir: Path, proxyd_tls: TlsFiles, backend_a: DovecotBackend
) -> None:
    conf, ports = _start(proxyd, tree_dir, proxyd_tls, backend_a, ["imapd", "pop3d"])
    checked = proxyd.run("-c", str(conf), "-n")
    assert checked.returncode == 0, checked.stderr
    out = checked.stdout
    assert "protocols = imap pop3\n" in out
    assert "ssl_dh = </usr/share/dovecot/dh.pem\n" in out
    heading = "# Not used by a proxy (services proxyd does not run; accepted, never applied):"
    unused = out.split(heading + "\n", 1)[1].splitlines()
    assert f"#   {tree_dir}/dovecot/dovecot.conf:90: dict {{ }}" in unused
    assert f"#   {tree_dir}/dovecot/conf.d/10-mail.conf:30: mail_location" in unused
    assert any(line.endswith("service auth { unix_listener auth-userdb { } }") for line in unused)
    assert any(line.endswith("protocol lda { }") for line in unused)

    _proxy_imap_and_pop3(proxyd, conf, ports, proxyd_tls, backend_a)


def _proxy_imap_and_pop3(
    proxyd: ProxydRunner,
    conf: Path,
    ports: StockPorts,
    proxyd_tls: TlsFiles,
    backend_a: DovecotBackend,
    extra_listeners: list[Listener] | None = None,
) -> None:
    """Start proxyd on the tree; IMAP (STARTTLS, IMAPS) and POP3 (STLS, POP3S) logins reach the backend."""
    config = ProxydConfig(
        settings={}, listeners=[*_listeners(ports), *(extra_listeners or [])], passdbs=[]
    )
    running = proxyd.start_file(conf, config)
    subject = backend_a.subject_for("alice")
    tls = proxyd_tls.client_context()

    with imaplib.IMAP4(PROXYD_ADDRESS, ports.imap, timeout=CLIENT_TIMEOUT) as imap:
        imap.starttls(tls)
        imap.login("alice", "alicepw")
        imap.select("INBOX", readonly=True)
        assert subject.encode() in imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")[1][0][1]
        imap.logout()
    with imaplib.IMAP4_SSL(PROXYD_ADDRESS, ports.imaps, ssl_context=tls, timeout=CLIENT_TIMEOUT) as imap:
        imap.login("alice", "alicepw")
        imap.logout()

    pop3 = poplib.POP3(PROXYD_ADDRESS, ports.pop3, timeout=CLIENT_TIMEOUT)
    pop3.stls(tls)
    pop3.user("alice")
    pop3.pass_("alicepw")
    assert subject.encode() in b"\n".join(pop3.top(1, 0)[1])
    pop3.quit()
    pop3s = poplib.POP3_SSL(PROXYD_ADDRESS, ports.pop3s, context=tls, timeout=CLIENT_TIMEOUT)
    pop3s.user("alice")
    pop3s.pass_("alicepw")
    pop3s.quit()
    running.wait_for_log(r"pop3-login: Info: .*user=<alice>")


ALL_PROTOCOL_FILES = ["imapd", "lmtpd", "managesieved", "pop3d", "submissiond"]


def test_stock_tree_with_every_protocol_package(
    proxyd: ProxydRunner, tree_dir: Path, proxyd_tls: TlsFiles, backend_a: DovecotBackend
) -> None:
    """All of Debian's protocol packages installed: ``protocols`` is judged on its final value.

    Protocols proxyd does not serve yet are refused there, at the line that made
    the final value (the last protocols.d file), never at an intermediate step;
    once all are served, the tree runs and IMAP and POP3 are proxied as before.
    """
    # LMTP is proxied only with lmtp_proxy = yes, in Dovecot too: an administrator's edit
    extra = {"99-proxy.conf": "lmtp_proxy = yes\n"}
    conf, ports = _start(proxyd, tree_dir, proxyd_tls, backend_a, ALL_PROTOCOL_FILES, extra)
    checked = proxyd.run("-c", str(conf), "-n")
    final = ["imap", "lmtp", "sieve", "pop3", "submission"]  # protocols.d files in name order
    missing = [name for name in final if name not in registry.BY_NAME]
    if not missing:
        assert checked.returncode == 0, checked.stderr
        assert f"protocols = {' '.join(final)}\n" in checked.stdout
        # the ports of the other login services, as an administrator moves them
        submission, sieve = free_ports(PROXYD_ADDRESS, 2)
        (tree_dir / "dovecot/conf.d/98-ports.conf").write_text(
            f"service submission-login {{\n  inet_listener submission {{\n    port = {submission}\n  }}\n}}\n"
            f"service managesieve-login {{\n  inet_listener sieve {{\n    port = {sieve}\n  }}\n}}\n"
        )
        others = [
            Listener("submission-login", "submission", PROXYD_ADDRESS, submission),
            Listener("managesieve-login", "sieve", PROXYD_ADDRESS, sieve),
        ]
        _proxy_imap_and_pop3(proxyd, conf, ports, proxyd_tls, backend_a, others)
        return
    assert checked.returncode == 2
    assert checked.stderr == (
        f"{tree_dir}/protocols.d/submissiond.protocol:1: protocol '{missing[0]}' is not supported yet\n"
    )
