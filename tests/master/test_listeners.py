"""Listener options of the service model: ``haproxy = yes`` and ``login_access_sockets = tcpwrap``."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import RawImapClient
from tests.master.test_process_model import static_config

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]


def _raw(address: str, port: int, payload: bytes, source: str) -> bytes:
    """Send ``payload`` first, then read what the server says until it closes or 2 s pass."""
    with socket.create_connection((address, port), 5, source_address=(source, 0)) as sock:
        sock.sendall(payload)
        sock.settimeout(2)
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
                if b"\r\n" in data and not payload:
                    break
        except (TimeoutError, ConnectionResetError):
            pass  # a reset is a drop too: the proxy closed with our bytes unread
    return data


def test_haproxy_listener_takes_the_client_address_from_the_header(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """A PROXY v1 header from a trusted proxy sets the client address the backend sees;
    a connection without a valid header, or from an untrusted peer, is dropped."""
    config = static_config(proxyd, backend_a)
    config.set(haproxy_trusted_networks="127.0.0.0/8")
    config.extra = config.extra + "\nservice imap-login {\n  inet_listener imap {\n    haproxy = yes\n  }\n}\n"
    master = proxyd.start(config)
    address, port = master.address(), master.port()

    source = client_address(80)
    with socket.create_connection((address, port), 5, source_address=(source, 0)) as sock:
        sock.sendall(f"PROXY TCP4 192.0.2.77 {address} 40000 {port}\r\n".encode())
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK ")
        sock.sendall(b"a LOGIN alice alicepw\r\n")
        assert reader.readline().startswith(b"a OK ")
        sock.sendall(b"b LOGOUT\r\n")
    backend_a.wait_for_log(r"Login: user=<alice>.*rip=192\.0\.2\.77")

    # no header at all: closed without a greeting
    assert _raw(address, port, b"a NOOP\r\n", client_address(81)) == b""
    assert "haproxy" in master.log_text()


def test_haproxy_untrusted_peer_is_dropped(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    config = static_config(proxyd, backend_a)
    config.set(haproxy_trusted_networks="10.0.0.0/8")
    config.extra = config.extra + "\nservice imap-login {\n  inet_listener imap {\n    haproxy = yes\n  }\n}\n"
    master = proxyd.start(config)
    header = f"PROXY TCP4 192.0.2.77 {master.address()} 40000 {master.port()}\r\n".encode()
    assert _raw(master.address(), master.port(), header, client_address(82)) == b""
    master.wait_for_log(r"haproxy: Client not trusted")


def test_tcpwrap_access_service_refuses_before_the_greeting(
    proxyd: ProxydRunner, backend_a: DovecotBackend, tmp_path: Path
) -> None:
    """``login_access_sockets = tcpwrap`` asks the built-in tcpwrap service, which reads
    hosts.allow/hosts.deny under its chroot; a denied client gets no greeting."""
    root = tmp_path / "tcpwrap-root"
    (root / "etc").mkdir(parents=True)
    denied, allowed_ip = client_address(84), client_address(85)
    (root / "etc/hosts.allow").write_text(f"imap: {allowed_ip}\n")
    (root / "etc/hosts.deny").write_text(f"imap: {denied}\n")
    for path in (tmp_path, root, root / "etc", root / "etc/hosts.allow", root / "etc/hosts.deny"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = static_config(proxyd, backend_a)
    config.set(login_access_sockets="tcpwrap")
    # pytest's tmp dirs are private to root: the service reads them as root here
    config.extra = config.extra + f"\nservice tcpwrap {{\n  chroot = {root}\n  user = root\n}}\n"
    master = proxyd.start(config)
    assert _raw(master.address(), master.port(), b"", denied) == b""
    with RawImapClient(master.address(), master.port(), source_ip=allowed_ip) as allowed:
        assert allowed.greeting.startswith("* OK ")
        assert allowed.command("LOGIN alice alicepw").status == "OK"
    master.wait_for_log(rf"access\(tcpwrap\): Client refused \(rip={denied}\)")


def test_waiting_connections_reads_the_accept_queue() -> None:
    """What the master reads to fork a burst's processes at once in high-security mode."""
    from proxyd.master.listeners import waiting_connections

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        assert waiting_connections(listener) == 0
        clients = [socket.create_connection(listener.getsockname(), 5) for _ in range(3)]
        try:
            assert waiting_connections(listener) == 3
            listener.accept()[0].close()
            assert waiting_connections(listener) == 2
        finally:
            for client in clients:
                client.close()
    with socket.socket(socket.AF_UNIX) as unix:
        assert waiting_connections(unix) == 0  # not TCP: nothing to read


def test_a_burst_gets_its_login_processes_at_once(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """Eight clients connecting together in high-security mode all get a greeting."""
    master = proxyd.start(static_config(proxyd, backend_a))
    sockets = [
        socket.create_connection((master.address(), master.port()), 10, source_address=(client_address(95), 0))
        for _ in range(8)
    ]
    try:
        for sock in sockets:
            assert sock.recv(4096).startswith(b"* OK ")
    finally:
        for sock in sockets:
            sock.close()
