"""``proxyctl move --from OLD --to NEW``: draining a backend of 200 users in a real PostgreSQL
passdb over a 10-second window, across two proxyd nodes, interrupted and resumed exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.test_cluster import start_nodes
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address, wait_until
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.proxyd import ProxydRunner, command_line
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

USERS = [f"user{n:03d}" for n in range(200)]


def test_drain_200_users_over_10_seconds_with_a_resume(
    proxyd: ProxydRunner, postgres: PostgresServer, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    table = f"drain_accounts_{os.getpid()}"
    rows = ", ".join(f"('{user}', 'alicepw', '{backend_a.address}', {backend_a.imap_port}, NULL)" for user in USERS)
    postgres.sql(
        f"DROP TABLE IF EXISTS {table}; "
        f"CREATE TABLE {table} (username text PRIMARY KEY, password text, host text, port int, delay_until text); "
        f"INSERT INTO {table} VALUES {rows}; "
        f"INSERT INTO {table} VALUES ('stays', 'alicepw', '{backend_b.address}', {backend_b.imap_port}, NULL); "
        f"GRANT ALL ON {table} TO dovecot;"
    )
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    conf = proxyd.workdir / "drain-sql.conf.ext"
    # every user logs in to the backends as alice (the backends' own user)
    conf.write_text(
        f"driver = pgsql\nconnect = {postgres.connect_string()}\ndefault_pass_scheme = PLAIN\n"
        f"password_query = SELECT username AS user, password, host, port, delay_until, "
        f"'alice' AS destuser, 'Y' AS proxy FROM {table} WHERE username = '%u'\n"
    )
    conf.chmod(0o644)
    nodes, _ = start_nodes(proxyd, [], extra=f"passdb {{\n  driver = sql\n  args = {conf}\n}}\n")
    nodes[2].stop()  # two nodes of three up: the third is named and the drain goes on
    sessions = [
        RawImapClient(nodes[i % 2].address(), nodes[i % 2].port(), source_ip=client_address(26 + i))
        for i in range(6)
    ]
    try:
        for i, client in enumerate(sessions):
            assert client.command(f"LOGIN {USERS[i * 30]} alicepw").status == "OK"
        argv, env = command_line("proxyctl")
        command = [*argv, "-c", str(nodes[0].config_path), "move", "--from", backend_a.address,
                   "--to", backend_b.address, "--window", "10", "--batch", "20", "--delay", "2"]  # fmt: skip
        started = time.time()
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        wait_until(lambda: _moved(postgres, table, backend_b.address) >= 40, timeout=20, what="two batches moved")
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=30)
        assert first.returncode == 1, (out, err)
        assert "draining 127.0.0.2: 200 users to 127.0.0.3 over 10 s" in out
        assert "interrupted" in err
        assert "the same command resumes the drain" in err
        moved = _moved(postgres, table, backend_b.address)
        assert 40 <= moved < 200

        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
        assert second.returncode == 1, (second.stdout, second.stderr)  # the third node is down
        assert "resuming the drain of 127.0.0.2" in second.stdout
        assert "Connection refused" in second.stderr
        assert "drained 127.0.0.2: 200 users moved to 127.0.0.3" in second.stdout
        assert "6 sessions kicked on 3 nodes" in second.stdout
        finished = time.time()
        for client in sessions:
            assert client.read_until_closed() == []
    finally:
        for client in sessions:
            client.close()
    assert _moved(postgres, table, backend_b.address) == 201  # the 200 and 'stays'
    stamps = sorted(
        int(value) for value in postgres.sql(f"SELECT delay_until FROM {table} WHERE username <> 'stays'").split()
    )
    assert len(stamps) == 200
    # batches one second apart, each delayed 2 s: spread over the window, none before its batch
    assert stamps[-1] - stamps[0] >= 8
    assert started + 1 <= stamps[0]
    assert stamps[-1] <= finished + 3
    assert len(set(stamps)) >= 9
    assert not list(proxyd.workdir.glob("**/drain-*.json"))  # the journal is gone when done


def _moved(postgres: PostgresServer, table: str, host: str) -> int:
    return int(postgres.sql(f"SELECT count(*) FROM {table} WHERE host = '{host}'").strip())
