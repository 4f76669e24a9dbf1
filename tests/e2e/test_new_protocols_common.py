"""What ManageSieve and Submission share with IMAP and POP3: HAProxy listeners, trusted
networks, delay_until, the auth penalty, the auth cache, tcpwrap, who/kick.

One body per behaviour, run for both protocols through ``proxyd -c FILE``
against the Dovecot backends of tests/fixtures/dovecot.py (``mail_backend_a``,
``mail_backend_b``).  Client addresses 180-189 and 192-199 are this
file's (190-191: test_lmtp_policies.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import proxy_started
from tests.e2e.proxy_support import default_port_address
from tests.fixtures.dovecot import (
    DovecotFactory,
    SieveSubmissionBackend,
    start_sieve_submission_backend,
)
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_ports, wait_until
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]



def plain_ir(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@dataclass(frozen=True)
class Protocol:
    name: str
    service: str
    port: Callable[[SieveSubmissionBackend], int]
    #: reads the greeting, logs in as (user, password); returns the server's final answer
    login: Callable[[socket.socket, str, str], str]
    ok: str
    refused: str
    #: the answer to a wrong password
    failed: str


def _lines(sock: socket.socket) -> list[str]:
    data = b""
    sock.settimeout(20)
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\r\n"):
            last = data[:-2].rsplit(b"\r\n", 1)[-1]
            if last[:2] in (b"OK", b"NO") or last[:3] == b"BYE" or (last[:3].isdigit() and last[3:4] == b" "):
                break
    return data.decode().splitlines()


def _sieve_login(sock: socket.socket, user: str = "alice", password: str = "alicepw") -> str:
    _lines(sock)
    sock.sendall(f'AUTHENTICATE "PLAIN" "{plain_ir(user, password)}"\r\n'.encode())
    return _lines(sock)[-1]


def _submission_login(sock: socket.socket, user: str = "alice", password: str = "alicepw") -> str:
    _lines(sock)
    sock.sendall(b"EHLO client.example\r\n")
    _lines(sock)
    sock.sendall(f"AUTH PLAIN {plain_ir(user, password)}\r\n".encode())
    return _lines(sock)[-1]


PROTOCOLS = [
    Protocol(
        "sieve", "managesieve-login", lambda b: b.sieve_port, _sieve_login,
        'OK "Logged in."', 'NO "Plaintext authentication disabled."', 'NO "Authentication failed."',
    ),
    Protocol(
        "submission", "submission-login", lambda b: b.submission_port, _submission_login,
        "235 2.7.0 Logged in.", "523 5.7.10 Plaintext authentication disabled.",
        "535 5.7.8 Authentication failed.",
    ),
]


def write_users(
    path: Path, backend: SieveSubmissionBackend, protocol: Protocol, fields: dict[str, str] | None = None,
    *, port: bool = True,
) -> Path:
    """A passwd-file with alice routed to ``backend``'s listener for ``protocol`` (``port=False``:
    to ``backend`` only, without a ``port`` field)."""
    route = proxy_fields(backend.address, protocol.port(backend))
    if not port:
        del route["port"]
    entry = PasswdEntry("alice", "{PLAIN}alicepw", {**route, **(fields or {})})
    return write_passwd_file(path, [entry])


def start(
    proxyd: ProxydRunner, backend: SieveSubmissionBackend, protocol: Protocol, *, haproxy: bool = False,
    fields: dict[str, str] | None = None, sql_conf: Path | None = None, extra: str = "", port: bool = True,
    doveadm_http: bool = False, **settings: str,
) -> ProxydProcess:
    """proxyd serving only ``protocol``, alice routed to ``backend`` by a passwd-file (or by
    the SQL passdb ``sql_conf``)."""
    passwd = write_users(
        proxyd.workdir / f"users-{protocol.name}-{time.monotonic_ns()}", backend, protocol, fields, port=port
    )
    config = proxyd.config(passwd, imaps=False, protocols=protocol.name, hostname="proxy.test", **settings)
    if sql_conf is not None:
        config.passdbs = [{"driver": "sql", "args": str(sql_conf)}]
    (port,) = free_ports(PROXYD_ADDRESS, 1)
    config.listeners = [Listener(protocol.service, protocol.name, PROXYD_ADDRESS, port, haproxy=haproxy)]
    if doveadm_http:
        config.listeners.append(Listener("doveadm", "http", PROXYD_ADDRESS, free_ports(PROXYD_ADDRESS, 1)[0]))
    config.extra = extra
    return proxyd.start(config)


def connect(running: ProxydProcess, protocol: Protocol, n: int) -> socket.socket:
    return socket.create_connection(
        (running.address(protocol.name), running.port(protocol.name)), 20, source_address=(client_address(n), 0)
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_haproxy_listener_forwards_the_client_address(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    running = start(proxyd, mail_backend_a, protocol, haproxy=True, haproxy_trusted_networks="127.0.0.0/8")
    with connect(running, protocol, 41) as sock:
        port = running.port(protocol.name)
        sock.sendall(f"PROXY TCP4 192.0.2.77 {PROXYD_ADDRESS} 40000 {port}\r\n".encode())
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    running.wait_for_log(
        rf"{protocol.service}: Info: proxy\(alice,[^)]+\): Started proxying to <[^>]+> "
        r"\([\d.]+ secs\): user=<alice>, method=PLAIN, rip=192\.0\.2\.77, "
    )
    # ... and on to the backend through XCLIENT
    mail_backend_a.dovecot.wait_for_log(
        rf"{protocol.service}: Info: Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.77, "
    )


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_plaintext_only_from_trusted_networks(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    running = start(
        proxyd, mail_backend_a, protocol, disable_plaintext_auth="yes",
        login_trusted_networks=f"{client_address(43)}/32",
    )
    with connect(running, protocol, 42) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.refused
    with connect(running, protocol, 43) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_delay_until_holds_the_login(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    until = int(time.time()) + 3
    running = start(proxyd, mail_backend_a, protocol, fields={"delay_until": str(until)})
    with connect(running, protocol, 44) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
        assert time.time() >= until - 0.5


@pytest.mark.parametrize(
    ("protocol", "n", "other"), [(PROTOCOLS[0], 180, 192), (PROTOCOLS[1], 181, 193)],
    ids=lambda p: getattr(p, "name", ""),
)
def test_a_failed_login_slows_down_the_next_one_from_that_ip(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol, n: int, other: int
) -> None:
    """auth_failure_delay, then the auth penalty as for IMAP and POP3 (tests/e2e/test_proxy_throttling.py)."""
    running = start(proxyd, mail_backend_a, protocol, auth_failure_delay="1s")
    with connect(running, protocol, n) as sock:
        started = time.monotonic()
        assert protocol.login(sock, "alice", "wrong") == protocol.failed
        assert 1.0 <= time.monotonic() - started < 2.5
    # the right password now waits out the penalty (4 s) ...
    with connect(running, protocol, n) as sock:
        started = time.monotonic()
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
        assert 3.5 < time.monotonic() - started < 8
    # ... which the success reset; another address was never slowed down
    for source in (n, other):
        with connect(running, protocol, source) as sock:
            started = time.monotonic()
            assert protocol.login(sock, "alice", "alicepw") == protocol.ok
            assert time.monotonic() - started < 1.5


def route_alice(database: Path, backend: SieveSubmissionBackend, protocol: Protocol) -> None:
    """alice's row in the SQLite passdb ``database`` (made on first use) routes her to ``backend``."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("create table if not exists users (username text primary key, password text, host text, port int)")
        db.execute(
            "insert or replace into users values ('alice', '{PLAIN}alicepw', ?, ?)",
            (backend.address, protocol.port(backend)),
        )
        db.commit()
    database.chmod(0o644)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_the_auth_cache_answers_until_flushed(
    proxyd: ProxydRunner,
    mail_backend_a: SieveSubmissionBackend,
    mail_backend_b: SieveSubmissionBackend,
    protocol: Protocol,
) -> None:
    """A cached passdb answer keeps routing to the old backend after the passdb changed
    (as for IMAP in tests/passdb_drivers/test_e2e_sql.py; passwd-files are never cached)."""
    database = proxyd.workdir / f"cache-{protocol.name}.db"
    route_alice(database, mail_backend_a, protocol)
    sql_conf = proxyd.workdir / f"cache-{protocol.name}-sql.conf.ext"
    sql_conf.write_text(
        f"driver = sqlite\nconnect = {database}\n"
        "password_query = SELECT password, host, port, 'y' AS proxy FROM users WHERE username = '%u'\n"
    )
    sql_conf.chmod(0o644)
    running = start(proxyd, mail_backend_a, protocol, sql_conf=sql_conf, auth_cache_size="1M")

    def proxied_to(backend: SieveSubmissionBackend) -> int:
        return len(re.findall(proxy_started("alice", backend.address), running.log_text(), re.MULTILINE))

    with connect(running, protocol, 182) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    running.wait_for_log(proxy_started("alice", mail_backend_a.address))
    route_alice(database, mail_backend_b, protocol)  # alice moved to b
    with connect(running, protocol, 182) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    wait_until(lambda: proxied_to(mail_backend_a) == 2, timeout=10, what="the cached route to backend a")
    assert proxied_to(mail_backend_b) == 0
    flushed = proxyd.proxyctl("-c", str(running.config_path), "auth", "cache", "flush")
    assert flushed.returncode == 0, flushed.stderr
    with connect(running, protocol, 182) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    running.wait_for_log(proxy_started("alice", mail_backend_b.address))


def test_a_trusted_managesieve_proxy_forwards_the_client_address(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend
) -> None:
    """login_trusted_networks: a ManageSieve proxy in front of proxyd sends XCLIENT (Pigeonhole's
    ``cmd_xclient``); the address it names is the client's, in proxyd's log and the backend's."""
    sieve = PROTOCOLS[0]
    trusted = client_address(183)
    running = start(proxyd, mail_backend_a, sieve, login_trusted_networks=f"{trusted}/32")
    with connect(running, sieve, 184) as sock:
        assert '"XCLIENT"' not in _lines(sock)
        sock.sendall(b"XCLIENT ADDR=192.0.2.55 PORT=4242\r\n")
        assert _lines(sock) == ['NO "You are not from trusted IP"']
    with connect(running, sieve, 183) as sock:
        assert '"XCLIENT"' in _lines(sock)
        sock.sendall(b"XCLIENT ADDR=192.0.2.55 PORT=4242\r\n")
        assert _lines(sock) == ['OK "Updated"']
        sock.sendall(f'AUTHENTICATE "PLAIN" "{plain_ir("alice", "alicepw")}"\r\n'.encode())
        assert _lines(sock)[-1] == sieve.ok
    running.wait_for_log(
        r"managesieve-login: Info: proxy\(alice,[^)]+\): Started proxying to <[^>]+> "
        r"\([\d.]+ secs\): user=<alice>, method=PLAIN, rip=192\.0\.2\.55, "
    )
    mail_backend_a.dovecot.wait_for_log(r"managesieve-login: Info: Login: user=<alice>, method=PLAIN, rip=192\.0\.2\.55, ")


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_tcpwrap_refuses_before_the_greeting(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol, tmp_path: Path
) -> None:
    """``login_access_sockets = tcpwrap``: the daemon name in hosts.deny is the protocol
    (``sieve``, ``submission``: Dovecot's ``login_binary->protocol``), and a refused client
    gets no text at all, as from Dovecot's ``login_access_callback()``: the socket is closed."""
    denied, allowed = client_address(185), client_address(186)
    root = tmp_path / "tcpwrap-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts.allow").write_text("")
    (root / "etc/hosts.deny").write_text(f"imap: {allowed}\n{protocol.name}: {denied}\n")
    for path in (tmp_path, root, root / "etc", root / "etc/hosts.allow", root / "etc/hosts.deny"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    running = start(
        proxyd, mail_backend_a, protocol, login_access_sockets="tcpwrap",
        extra=f"service tcpwrap {{\n  chroot = {root}\n  user = root\n}}\n",
    )
    with connect(running, protocol, 185) as sock:
        sock.settimeout(20)
        assert sock.recv(4096) == b""
    with connect(running, protocol, 186) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    running.wait_for_log(rf"{protocol.service}: Info: access\(tcpwrap\): Client refused \(rip={denied}\)")


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_who_lists_and_kick_disconnects(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend, protocol: Protocol
) -> None:
    """proxyctl who/kick, and the doveadm HTTP API's proxyList (whose ``service`` is Dovecot's
    ``login_binary->protocol``: ``sieve``, ``submission``)."""
    running = start(proxyd, mail_backend_a, protocol, doveadm_http=True, doveadm_api_key="k3y")
    conf = str(running.config_path)
    with connect(running, protocol, 187) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
        who = proxyd.proxyctl("-c", conf, "who", "ali*")
        assert who.returncode == 0, who.stderr
        header, row = who.stdout.splitlines()
        assert header.split() == ["username", "proto", "client", "backend", "age"]
        assert row.split()[:4] == [
            "alice", protocol.name, client_address(187), f"{mail_backend_a.address}:{protocol.port(mail_backend_a)}"
        ]
        request = urllib.request.Request(
            f"http://{running.address('http')}:{running.port('http')}/doveadm/v1",
            data=json.dumps([["proxyList", {}, "t1"]]).encode(),
            headers={"Authorization": "X-Dovecot-API " + base64.b64encode(b"k3y").decode()},
        )
        with urllib.request.urlopen(request, timeout=20) as answer:
            listed = json.loads(answer.read())
        assert listed == [["doveadmResponse", [{
            "username": "alice", "service": protocol.name, "src-ip": client_address(187),
            "dest-ip": mail_backend_a.address, "dest-port": str(protocol.port(mail_backend_a)),
        }], "t1"]]
        kicked = proxyd.proxyctl("-c", conf, "kick", "alice")
        assert kicked.returncode == 0, kicked.stderr
        assert kicked.stdout.split()[0] == "1", kicked.stdout
        sock.settimeout(20)
        while sock.recv(4096):  # whatever the backend says last, then a clean close
            pass
    assert proxyd.proxyctl("-c", conf, "who").stdout.splitlines() == [header]


def test_a_protocol_sieve_block_sets_the_greeting(
    proxyd: ProxydRunner, mail_backend_a: SieveSubmissionBackend
) -> None:
    """``protocol sieve { managesieve_* }`` (where Debian's 20-managesieve.conf puts them) applies."""
    sieve = PROTOCOLS[0]
    running = start(
        proxyd, mail_backend_a, sieve, managesieve_notify_capability="mailto xmpp",
        extra="protocol sieve {\n  managesieve_implementation_string = Cluster Sieve\n}\n",
    )
    with connect(running, sieve, 188) as sock:
        greeting = _lines(sock)
    assert greeting[0] == '"IMPLEMENTATION" "Cluster Sieve"'
    assert '"NOTIFY" "mailto xmpp"' in greeting


@pytest.fixture(scope="module")
def default_port_backend(dovecot_factory: DovecotFactory) -> Iterator[SieveSubmissionBackend]:
    """A Dovecot with ManageSieve on 4190 and Submission on 587, on an address of its own."""
    address = default_port_address(3, (4190, 587))
    backend = start_sieve_submission_backend(dovecot_factory, "mail-default-ports", address, (4190, 587))
    yield backend
    backend.relay.close()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
def test_without_port_the_backend_is_on_the_protocols_default_port(
    proxyd: ProxydRunner, default_port_backend: SieveSubmissionBackend, protocol: Protocol
) -> None:
    """A passdb row with ``host`` and no ``port`` serves every protocol: ManageSieve goes to
    4190 (Pigeonhole's default port), Submission to 587."""
    running = start(proxyd, default_port_backend, protocol, port=False)
    with connect(running, protocol, 189) as sock:
        assert protocol.login(sock, "alice", "alicepw") == protocol.ok
    port = default_port_backend.sieve_port if protocol.name == "sieve" else default_port_backend.submission_port
    address = re.escape(default_port_backend.address)
    running.wait_for_log(rf"proxy\(alice,{address}:{port}\): Started proxying to <{address}> ")
