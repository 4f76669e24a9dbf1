"""Cluster-wide operations through the peers' doveadm HTTP listeners (``proxyd_cluster_peers``):
``proxyctl who --cluster``, ``kick --cluster``, and ``move`` kicking on every node; three
proxyd nodes on loopback addresses of their own, one of which refuses the key or is down.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address, free_port
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydConfig,
    ProxydProcess,
    ProxydRunner,
    command_line,
    proxy_fields,
)
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

NODES = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
KEY = "cluster-key"


def start_nodes(
    proxyd: ProxydRunner,
    entries: list[PasswdEntry],
    *,
    keys: tuple[str, ...] = (KEY, KEY, KEY),
    down: str | None = None,
    extra: str = "",
) -> tuple[list[ProxydProcess], list[str]]:
    ports = {node: free_port(node) for node in NODES}
    peers = [f"{node}:{ports[node]}" for node in NODES]
    if down is not None:
        peers.append(down)
    running = []
    for node, key in zip(NODES, keys, strict=True):
        cfg: ProxydConfig = ps.config(
            proxyd, entries, address=node, name=f"users-{node}",
            doveadm_api_key=key, proxyd_cluster_peers=" ".join(peers),
        )  # fmt: skip
        cfg.extra = extra
        cfg.listeners.append(Listener("doveadm", "http", node, ports[node]))
        running.append(proxyd.start(cfg))
    return running, peers


def test_who_and_kick_on_every_node(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port)),
        PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, backend_b.imap_port)),
    ]
    # the third node has another key: it refuses the others' requests
    nodes, peers = start_nodes(proxyd, entries, keys=(KEY, KEY, "other-key"))
    a, b, c = nodes
    clients = [
        RawImapClient(a.address(), a.port(), source_ip=client_address(18)),
        RawImapClient(b.address(), b.port(), source_ip=client_address(19)),
        RawImapClient(b.address(), b.port(), source_ip=client_address(20)),
        RawImapClient(c.address(), c.port(), source_ip=client_address(21)),
    ]
    try:
        for client, user in zip(clients, ("alice", "alice", "bob", "alice"), strict=True):
            assert client.command(f"LOGIN {user} {user}pw").status == "OK"
        config = str(a.config_path)

        who = proxyd.proxyctl("-c", config, "who", "--cluster")
        assert who.returncode == 1
        assert f"proxyctl: {peers[2]}: HTTP 401 Authentication required" in who.stderr
        lines = who.stdout.splitlines()
        assert lines[0].split() == ["node", "username", "proto", "client", "backend"]
        rows = sorted(tuple(line.split()) for line in lines[1:])
        assert rows == sorted([
            (peers[0], "alice", "imap", client_address(18), f"{backend_a.address}:{backend_a.imap_port}"),
            (peers[1], "alice", "imap", client_address(19), f"{backend_a.address}:{backend_a.imap_port}"),
            (peers[1], "bob", "imap", client_address(20), f"{backend_b.address}:{backend_b.imap_port}"),
        ])  # fmt: skip
        assert "bob" not in proxyd.proxyctl("-c", config, "who", "--cluster", "a*").stdout

        kick = proxyd.proxyctl("-c", config, "kick", "--cluster", "alice")
        assert (kick.returncode, kick.stdout.strip()) == (1, "2 connections kicked")
        assert peers[2] in kick.stderr
        assert clients[0].read_until_closed() == []
        assert clients[1].read_until_closed() == []
        assert clients[3].command("NOOP").status == "OK"  # on the node that refused

        c.stop()
        kick = proxyd.proxyctl("-c", config, "kick", "--cluster", "--host", backend_b.address)
        assert (kick.returncode, kick.stdout.strip()) == (1, "1 connections kicked")
        assert f"proxyctl: {peers[2]}: Connection refused" in kick.stderr
        assert clients[2].is_closed_by_peer()
    finally:
        for client in clients:
            client.close()


def test_cluster_needs_peers_and_a_key(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    running = ps.start(proxyd, [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))])
    result = proxyd.proxyctl("-c", str(running.config_path), "who", "--cluster")
    assert result.returncode == 2
    assert "--cluster needs proxyd_cluster_peers" in result.stderr


SQL_CONF = """\
driver = sqlite
connect = {db}
default_pass_scheme = PLAIN
password_query = SELECT username AS user, password, host, port, delay_until, \\
  'Y' AS proxy FROM accounts WHERE username = '%u'
"""


def test_move_kicks_on_every_node(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """The nodes share one SQL passdb; ``move`` on one node kicks the user's sessions on
    all of them; a peer that is down is named, the rest is done, exit status 1."""
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    db = proxyd.workdir / "cluster-accounts.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE accounts (username TEXT PRIMARY KEY, password TEXT, host TEXT NOT NULL,"
                     " port INTEGER, delay_until TEXT)")  # fmt: skip
        conn.execute("INSERT INTO accounts VALUES ('alice', 'alicepw', ?, ?, NULL)", (backend_a.address, backend_a.imap_port))
    conn.close()
    db.chmod(0o666)
    db.parent.chmod(0o777)  # SQLite writes its journal beside the file
    conf = proxyd.workdir / "cluster-sql.conf.ext"
    conf.write_text(SQL_CONF.format(db=db))
    conf.chmod(0o644)
    down = f"127.0.1.9:{free_port('127.0.1.9')}"
    nodes, _ = start_nodes(proxyd, [], down=down, extra=f"passdb {{\n  driver = sql\n  args = {conf}\n}}\n")
    clients = [RawImapClient(n.address(), n.port(), source_ip=client_address(22 + i)) for i, n in enumerate(nodes)]
    try:
        for client in clients:
            assert client.command("LOGIN alice alicepw").status == "OK"
        argv, env = command_line("proxyctl")
        move = subprocess.run(
            [*argv, "-c", str(nodes[0].config_path), "move", "alice", backend_b.address],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert move.returncode == 1, (move.stdout, move.stderr)
        assert "3 connections kicked (4 nodes)" in move.stdout
        assert re.search(rf"proxyctl: {re.escape(down)}: Connection refused", move.stderr)
        for client in clients:
            assert client.read_until_closed() == []
    finally:
        for client in clients:
            client.close()
    assert Path(db).exists()


def test_peers_over_tls(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """With ``ssl = yes`` on the doveadm listener the peers are asked over TLS, their
    certificates verified against ``ssl_client_ca_file``; a peer that is not TLS is named."""
    entries = [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))]
    ports = [free_port("127.0.0.1"), free_port("127.0.0.5")]
    peers = f"127.0.0.1:{ports[0]} 127.0.0.5:{ports[1]}"
    nodes = []
    for address, port, tls in (("127.0.0.1", ports[0], True), ("127.0.0.5", ports[1], False)):
        cfg = ps.config(
            proxyd, entries, address=address, name=f"users-tls-{address}", doveadm_api_key=KEY,
            proxyd_cluster_peers=peers, ssl_client_ca_file=str(proxyd.tls.ca_pem),
        )  # fmt: skip
        cfg.listeners.append(Listener("doveadm", "http", address, port, ssl=tls))
        nodes.append(proxyd.start(cfg))
    with RawImapClient(nodes[0].address(), nodes[0].port(), source_ip=client_address(25)) as alice:
        assert alice.command("LOGIN alice alicepw").status == "OK"
        who = proxyd.proxyctl("-c", str(nodes[0].config_path), "who", "--cluster")
        assert who.returncode == 1
        assert f"127.0.0.1:{ports[0]} " in who.stdout
        assert f"proxyctl: 127.0.0.5:{ports[1]}: SSL error: wrong version number" in who.stderr
