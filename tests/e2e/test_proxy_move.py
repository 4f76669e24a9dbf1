"""``proxyctl move USER HOST``: the seed's user move in one step, with an SQLite passdb.

backend-local and backend-moved (on addresses of their own) both serve the
default ports, as the backends of one cluster would, so moving a user only
changes the ``host`` column.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_pop3 import RawPop3Client
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.mariadb import MariadbServer
from tests.fixtures.net import client_address, wait_until
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.proxyd import (
    PasswdEntry,
    ProxydProcess,
    ProxydRunner,
    command_line,
    proxy_fields,
)
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

backend_local = ps.backend_local
backend_moved = ps.backend_moved

SQL_CONF = """\
driver = sqlite
connect = {db}
default_pass_scheme = PLAIN
password_query = SELECT username AS user, password, host, port, delay_until, \\
  'Y' AS proxy FROM accounts WHERE username = '%u'
"""


def make_db(path: Path, host: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE accounts (username TEXT PRIMARY KEY, password TEXT, host TEXT NOT NULL,"
            " port INTEGER, delay_until TEXT)"
        )
        db.execute("INSERT INTO accounts VALUES ('alice', 'alicepw', ?, NULL, NULL)", (host,))
        db.execute("INSERT INTO accounts VALUES ('bob', 'bobpw', ?, NULL, NULL)", (host,))


def sql_proxyd(proxyd: ProxydRunner, host: str) -> tuple[ProxydProcess, Path]:
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    db = proxyd.workdir / "accounts.db"
    make_db(db, host)
    conf = proxyd.workdir / "dovecot-sql.conf.ext"
    conf.write_text(SQL_CONF.format(db=db))
    extra = f"passdb {{\n  driver = sql\n  args = {conf}\n}}\n"
    return ps.start(proxyd, [], extra=extra), db


def row(db: Path, user: str) -> tuple[str, str | None]:
    with sqlite3.connect(db) as conn:
        host, delay = conn.execute(
            "SELECT host, delay_until FROM accounts WHERE username = ?", (user,)
        ).fetchone()
    return host, delay


def test_move_sets_host_and_delay_kicks_and_reports(
    proxyd: ProxydRunner, backend_local: DovecotBackend, backend_moved: DovecotBackend
) -> None:
    running, db = sql_proxyd(proxyd, backend_local.address)
    source = client_address(160)
    imap = RawImapClient(running.address(), running.port(), source_ip=source)
    pop3 = RawPop3Client(running.address("pop3"), running.port("pop3"), source_ip=source)
    try:
        assert imap.command("LOGIN alice alicepw").status == "OK"
        pop3.command("USER alice")
        assert pop3.command("PASS alicepw").startswith("+OK")
        backend_local.wait_for_log(r"pop3-login: Info: Login: user=<alice>")
        argv, env = command_line("proxyctl")
        moved_at = time.time()
        move = subprocess.Popen(
            [*argv, "-c", str(running.config_path), "move", "alice", backend_moved.address,
             "--delay", "3", "--wait", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        # both sessions are kicked: the clients just see the connection close
        assert imap.read_until_closed() == []
        assert pop3.is_closed_by_peer(10)
        host, delay = row(db, "alice")
        assert host == backend_moved.address
        assert delay is not None
        assert abs(int(delay) - (moved_at + 3)) <= 2
        # the client comes back at once: its login waits for delay_until, then lands on the new host
        started = time.monotonic()
        with RawImapClient(running.address(), running.port(), source_ip=source) as again:
            assert again.command("LOGIN alice alicepw").status == "OK"
            assert time.monotonic() - started > 1.0
            out, err = move.communicate(timeout=30)
            assert again.command("SELECT INBOX").status == "OK"
        assert move.returncode == 0, (out, err)
        assert "2 connections kicked" in out
        assert f"alice: host={backend_moved.address} delay_until={delay} set in one update" in out
        assert re.search(rf"alice logged in on {re.escape(backend_moved.address)}( \(\S+\))? \d+ s after the move", out), out
        backend_moved.wait_for_log(
            rf"imap-login: Info: Login: user=<alice>, method=PLAIN, rip={source},"
        )
        # bob was not touched
        assert row(db, "bob") == (backend_local.address, None)
    finally:
        imap.close()
        pop3._sock.close()


def test_move_with_spread_and_without_running_proxyd(
    proxyd: ProxydRunner, backend_local: DovecotBackend
) -> None:
    running, db = sql_proxyd(proxyd, backend_local.address)
    running.stop()
    result = proxyd.proxyctl(
        "-c", str(running.config_path), "move", "Bob", "10.0.0.9", "--delay", "40", "--spread", "5"
    )
    assert result.returncode == 0, result
    host, delay = row(db, "bob")
    assert host == "10.0.0.9"
    assert delay is not None
    stamp, _, spread = delay.partition("+")
    assert spread == "5"
    assert abs(int(stamp) - (time.time() + 40)) <= 3
    assert "nothing to kick" in result.stderr
    assert "new logins of bob wait until" in result.stdout


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [(["--delay", "301"], "--delay must be 0..300 seconds"), (["--spread", "-1"], "--spread")],
)
def test_move_argument_checks(proxyd: ProxydRunner, extra_args: list[str], message: str) -> None:
    running = ps.start(proxyd, [])
    result = proxyd.proxyctl(
        "-c", str(running.config_path), "move", "alice", "10.0.0.9", *extra_args
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_without_a_writable_sql_passdb_the_manual_steps_are_printed(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))
    ]
    running = ps.start(proxyd, entries)
    result = proxyd.proxyctl(
        "-c", str(running.config_path), "move", "alice", "127.0.0.3", "--delay", "31"
    )
    assert result.returncode == 1
    assert "cannot move alice here: no passdb uses the sql driver" in result.stderr
    assert "in one atomic update: host=127.0.0.3 delay_until=" in result.stdout
    assert f"proxyctl -c {running.config_path} kick alice" in result.stdout


def test_a_query_without_delay_until_cannot_be_moved(proxyd: ProxydRunner) -> None:
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    db = proxyd.workdir / "plain.db"
    make_db(db, "127.0.0.2")
    conf = proxyd.workdir / "plain-sql.conf.ext"
    conf.write_text(
        f"driver = sqlite\nconnect = {db}\ndefault_pass_scheme = PLAIN\n"
        "password_query = SELECT username AS user, password, host, 'Y' AS proxy "
        "FROM accounts WHERE username = '%u'\n"
    )
    running = ps.start(proxyd, [], extra=f"passdb {{\n  driver = sql\n  args = {conf}\n}}\n")
    result = proxyd.proxyctl("-c", str(running.config_path), "move", "alice", "127.0.0.3")
    assert result.returncode == 1
    assert "the password_query returns no delay_until field" in result.stderr
    assert row(db, "alice") == ("127.0.0.2", None)  # nothing was written


# -- PostgreSQL and MariaDB: the sql driver's own connections --------------------------------------


def _server_move(
    proxyd: ProxydRunner, server: PostgresServer | MariadbServer, driver: str, table: str
) -> None:
    conf = proxyd.workdir / f"{driver}-sql.conf.ext"
    proxyd.workdir.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        f"driver = {driver}\nconnect = {server.connect_string()}\n"
        "default_pass_scheme = PLAIN\n"
        f"password_query = SELECT username AS user, password, host, delay_until, 'Y' AS proxy "
        f"FROM {table} WHERE username = '%u'\n"
    )
    running = ps.start(proxyd, [], extra=f"passdb {{\n  driver = sql\n  args = {conf}\n}}\n")
    result = proxyd.proxyctl(
        "-c",
        str(running.config_path),
        "move",
        "carol",
        "10.0.0.77",
        "--delay",
        "20",
        "--spread",
        "3",
    )
    assert result.returncode == 0, result
    assert f"set in one update of {table} ({driver}," in result.stdout
    assert "0 connections kicked" in result.stdout


def test_move_wait_sees_a_session_that_began_and_ended_meanwhile(
    proxyd: ProxydRunner, backend_local: DovecotBackend, backend_moved: DovecotBackend
) -> None:
    """``--wait`` reports the first login sent to the new host even when its session was
    over before ``who`` could see it (the auth process remembers where logins went)."""
    running, db = sql_proxyd(proxyd, backend_local.address)
    argv, env = command_line("proxyctl")
    move = subprocess.Popen(
        [*argv, "-c", str(running.config_path), "move", "bob", backend_moved.address,
         "--delay", "1", "--wait", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    wait_until(lambda: row(db, "bob")[0] == backend_moved.address, timeout=20, what="the move's update")
    with RawImapClient(running.address(), running.port(), source_ip=client_address(165)) as bob:
        assert bob.command("LOGIN bob bobpw").status == "OK"  # waits for delay_until, lands, leaves
        bob.command("LOGOUT")
    out, err = move.communicate(timeout=30)
    assert move.returncode == 0, (out, err)
    assert re.search(rf"bob logged in on {re.escape(backend_moved.address)} \d+ s after the move", out), out


def test_move_in_postgresql(proxyd: ProxydRunner, postgres: PostgresServer) -> None:
    table = f"move_accounts_{os.getpid()}"
    postgres.sql(
        f"DROP TABLE IF EXISTS {table}; "
        f"CREATE TABLE {table} (username text PRIMARY KEY, password text, host text, delay_until text); "
        f"INSERT INTO {table} VALUES ('carol', 'carolpw', '127.0.0.2', NULL); "
        f"GRANT ALL ON {table} TO dovecot;"
    )
    _server_move(proxyd, postgres, "pgsql", table)
    host, delay = postgres.sql(f"SELECT host, delay_until FROM {table}").strip().split("|")
    assert host == "10.0.0.77"
    stamp, _, spread = delay.partition("+")
    assert spread == "3"
    assert abs(int(stamp) - (time.time() + 20)) <= 3


def test_move_in_mariadb(proxyd: ProxydRunner, mariadb: MariadbServer) -> None:
    table = f"move_accounts_{os.getpid()}"
    mariadb.sql(
        f"DROP TABLE IF EXISTS {table}; "
        f"CREATE TABLE {table} (username varchar(64) PRIMARY KEY, password varchar(64), "
        "host varchar(64), delay_until varchar(32)); "
        f"INSERT INTO {table} VALUES ('carol', 'carolpw', '127.0.0.2', NULL);"
    )
    _server_move(proxyd, mariadb, "mysql", table)
    host, delay = mariadb.sql(f"SELECT host, delay_until FROM {table}").strip().split("\t")
    assert host == "10.0.0.77"
    assert delay.endswith("+3")
