"""Moving users: delay_until, kicks, and spreading the disconnects of a dead backend
(seed "Moving users between backends/clusters", spec §1.6 delay_until, §5.3, §5.5).
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_pop3 import RawPop3Client
from tests.fixtures.dovecot import DovecotBackend, DovecotFactory
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient

pytestmark = pytest.mark.e2e

HIGH_PERFORMANCE = """
service imap-login {
  service_count = 0
}
service pop3-login {
  service_count = 0
}
"""


# -- delay_until ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_delay_until_holds_the_login_until_then(
    proxyd: ProxydRunner, backend_a: DovecotBackend, protocol: str
) -> None:
    port = ps.backend_port(backend_a, protocol)
    now = int(time.time())
    entries = [
        # 3 s ahead: the login waits, then goes on
        PasswdEntry(
            "alice",
            "{PLAIN}alicepw",
            proxy_fields(backend_a.address, port, delay_until=str(now + 3)),
        ),
        # in the past: no wait
        PasswdEntry(
            "bob", "{PLAIN}bobpw", proxy_fields(backend_a.address, port, delay_until=str(now - 60))
        ),
        # more than 300 s ahead: the login fails
        PasswdEntry(
            "dave",
            "{PLAIN}carolpw",
            proxy_fields(backend_a.address, port, delay_until=str(now + 400)),
        ),
    ]
    running = ps.start(proxyd, entries)
    source = client_address(90)
    alice = ps.login(running, protocol, "alice", "alicepw", source_ip=source)
    assert alice.ok, alice
    # held until delay_until itself (what is left of the 3 s after a slow start-up)
    assert time.time() >= now + 3 - 0.1
    bob = ps.login(running, protocol, "bob", "bobpw", source_ip=source)
    assert bob.ok
    assert bob.seconds < 1.5
    dave = ps.login(running, protocol, "dave", "carolpw", source_ip=client_address(91))
    assert dave.line == ps.auth_failed(protocol)
    running.wait_for_log(r"delay_until timestamp \d+ is too much in the future, failing")


def test_delay_until_with_random_spread(proxyd: ProxydRunner, backend_b: DovecotBackend) -> None:
    """``<ts>+N`` adds 0..N-1 random seconds: logins finish between ts and ts+N."""
    start = time.time()
    stamp = int(start) + 1
    entries = [
        PasswdEntry(
            "bob",
            "{PLAIN}bobpw",
            proxy_fields(backend_b.address, backend_b.imap_port, delay_until=f"{stamp}+3"),
        )
    ]
    running = ps.start(proxyd, entries)
    done: list[float] = []

    def one(n: int) -> None:
        assert ps.login(running, "imap", "bob", "bobpw", source_ip=client_address(92 + n)).ok
        done.append(time.time())

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(done) == 4
    assert all(stamp - 0.5 <= t <= stamp + 3.5 for t in done), [t - stamp for t in done]


# -- kick ----------------------------------------------------------------------------------------------


@pytest.mark.proxyd_only
def test_kick_disconnects_without_a_message(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    entries = [
        PasswdEntry(
            "alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port)
        ),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.pop3_port)),
    ]
    running = ps.start(proxyd, entries)
    source = client_address(96)
    with (
        RawImapClient(running.address(), running.port(), source_ip=source) as alice,
        RawPop3Client(running.address("pop3"), running.port("pop3"), source_ip=source) as bob,
    ):
        assert alice.command("LOGIN alice alicepw").status == "OK"
        assert bob.command("USER bob").startswith("+OK")
        assert bob.command("PASS bobpw").startswith("+OK")
        who = proxyd.proxyctl("-c", str(running.config_path), "who")
        assert re.search(
            rf"^alice\s+imap\s+{source}\s+{backend_a.address}:{backend_a.imap_port}\s",
            who.stdout,
            re.MULTILINE,
        ), who.stdout
        result = proxyd.proxyctl("-c", str(running.config_path), "kick", "alice")
        assert result.stdout.strip() == "1 connections kicked", running.log_text()
        assert alice.read_until_closed() == []  # no BYE: just the close
        assert bob.command("STAT").startswith("+OK")  # others stay
        assert proxyd.proxyctl("-c", str(running.config_path), "kick", "b*").stdout.strip() == (
            "1 connections kicked"
        )
        assert bob.is_closed_by_peer()
    running.wait_for_log(
        r"proxy\(alice,[^)]+\): Disconnected by proxy: Kicked by admin"
    )


@pytest.mark.proxyd_only
@pytest.mark.parametrize("mode", ["high-security", "high-performance"])
def test_kick_by_backend_host(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend, mode: str
) -> None:
    """``kick --host HOST [MASK]`` (Dovecot's ``doveadm proxy kick -h HOST``) ends the
    sessions proxied to one backend, only the matching users' when a mask is given;
    in high-security mode the relay process holds them, in high-performance mode the
    login process."""
    a_fields = proxy_fields(backend_a.address, backend_a.imap_port)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", a_fields),
        PasswdEntry("carol", "{PLAIN}carolpw", {**a_fields, "destuser": "dave"}),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.imap_port)),
    ]
    running = ps.start(proxyd, entries, extra=HIGH_PERFORMANCE if mode == "high-performance" else "")
    config = str(running.config_path)
    source = client_address(97)
    clients = {
        user: RawImapClient(running.address(), running.port(), source_ip=source)
        for user in ("alice", "carol", "bob")
    }
    try:
        for user, client in clients.items():
            assert client.command(f"LOGIN {user} {user}pw").status == "OK"
        # the mask narrows it down to carol, then the host alone takes alice
        kick = proxyd.proxyctl("-c", config, "kick", "--host", backend_a.address, "c*")
        assert (kick.returncode, kick.stdout.strip()) == (0, "1 connections kicked"), kick.stderr
        assert clients["carol"].read_until_closed() == []
        assert clients["alice"].command("NOOP").status == "OK"
        kick = proxyd.proxyctl("-c", config, "kick", "-h", backend_a.address)
        assert kick.stdout.strip() == "1 connections kicked"
        assert clients["alice"].read_until_closed() == []
        assert clients["bob"].command("NOOP").status == "OK"
        # a backend nobody is on, then bob's
        assert proxyd.proxyctl("-c", config, "kick", "-h", "127.0.0.254").stdout.strip() == (
            "0 connections kicked"
        )
        assert clients["bob"].command("NOOP").status == "OK"
        assert proxyd.proxyctl("-c", config, "kick", "-h", backend_b.address, "*").stdout.strip() == (
            "1 connections kicked"
        )
        assert clients["bob"].is_closed_by_peer()
    finally:
        for client in clients.values():
            client.close()
    running.wait_for_log(rf"proxyctl kick -h {re.escape(backend_a.address)} c\*: 1 connections kicked")


@pytest.mark.proxyd_only
def test_kick_needs_a_mask_or_a_host(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    alice = PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))
    running = ps.start(proxyd, [alice])
    result = proxyd.proxyctl("-c", str(running.config_path), "kick")
    assert result.returncode == 2
    assert "a user mask or --host HOST is needed" in result.stderr


# -- a dead backend: disconnects are spread ---------------------------------------------------------


@pytest.fixture(scope="module")
def dying_backend(dovecot_factory: DovecotFactory) -> DovecotBackend:
    """A Dovecot of its own whose sessions the tests end with ``doveadm kick``."""
    return dovecot_factory.start("backend-dying", "127.0.0.8")


def kill_sessions(backend: DovecotBackend, *users: str) -> None:
    """End the users' mail processes on the backend: the backend side of their sessions dies."""
    for user in users:
        result = backend.doveadm("kick", user)
        assert result.returncode == 0, result.stderr


def _watch(sock: socket.socket, closed_at: list[float]) -> None:
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    closed_at.append(time.monotonic())


def test_dead_backend_disconnects_are_spread_over_the_max_delay(
    proxyd: ProxydRunner, dying_backend: DovecotBackend
) -> None:
    """8 IMAP and 8 POP3 sessions on a backend that dies, ``login_proxy_max_disconnect_delay =
    4s``: per protocol 2 clients are closed at once (one second's worth), the others one
    by one over the 4 seconds."""
    d = dying_backend
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(d.address, d.imap_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(d.address, d.pop3_port)),
    ]
    running = ps.start(
        proxyd, entries, extra=HIGH_PERFORMANCE, login_proxy_max_disconnect_delay="4s"
    )
    imap_clients = [
        RawImapClient(running.address(), running.port(), source_ip=client_address(100 + n))
        for n in range(8)
    ]
    pop3_clients = [
        RawPop3Client(
            running.address("pop3"), running.port("pop3"), source_ip=client_address(110 + n)
        )
        for n in range(8)
    ]
    try:
        for client in imap_clients:
            assert client.command("LOGIN alice alicepw").status == "OK"
        for p in pop3_clients:
            p.command("USER bob")
            assert p.command("PASS bobpw").startswith("+OK")
        closed: dict[str, list[float]] = {"imap": [], "pop3": []}
        socks = [("imap", c._sock) for c in imap_clients] + [
            ("pop3", p._sock) for p in pop3_clients
        ]
        threads = [threading.Thread(target=_watch, args=(s, closed[proto])) for proto, s in socks]
        for thread in threads:
            thread.start()
        killed = time.monotonic()
        kill_sessions(d, "alice", "bob")
        for thread in threads:
            thread.join(30)
        for protocol, times in closed.items():
            delays = sorted(t - killed for t in times)
            assert len(delays) == 8, protocol
            spread = delays[-1] - delays[0]
            assert spread > 2.0, (protocol, delays)
            assert delays[-1] < 8, (protocol, delays)
            # the first second's worth go together
            assert delays[1] - delays[0] < 0.5, (protocol, delays)
        lines = running.wait_for_log(r"Disconnected by server.* - disconnecting client in \d+ms")
        assert len(lines) >= 10, lines
    finally:
        for client in imap_clients:
            client.close()
        for p in pop3_clients:
            p._sock.close()


def test_without_max_delay_all_go_at_once(
    proxyd: ProxydRunner, dying_backend: DovecotBackend
) -> None:
    d = dying_backend
    entries = [PasswdEntry("dave", "{PLAIN}carolpw", proxy_fields(d.address, d.imap_port))]
    running = ps.start(proxyd, entries, extra=HIGH_PERFORMANCE)
    clients = [
        RawImapClient(running.address(), running.port(), source_ip=client_address(120 + n))
        for n in range(5)
    ]
    try:
        for client in clients:
            assert client.command("LOGIN dave carolpw").status == "OK"
        closed: list[float] = []
        threads = [threading.Thread(target=_watch, args=(c._sock, closed)) for c in clients]
        for thread in threads:
            thread.start()
        kill_sessions(d, "dave")
        for thread in threads:
            thread.join(30)
        assert len(closed) == 5
        assert max(closed) - min(closed) < 1.0
        assert "disconnecting client in" not in running.log_text()
    finally:
        for client in clients:
            client.close()
