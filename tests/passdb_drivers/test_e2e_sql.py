"""``proxyd -c FILE`` with the pgsql passdb in front of real Dovecot backends."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.postgres import PostgresFactory, PostgresServer
from tests.fixtures.proxyd import ProxydProcess, ProxydRunner
from tests.helpers.clients import IMAP4, RawImapClient, fetch_subjects

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

# the demo table with the demo query (sql/dovecot-sql-pgsql.conf.ext)
QUERY = (
    "SELECT username AS user, password, host, port, destuser, nologin, reason, \\\n"
    "  CASE WHEN nologin IS NULL THEN 'Y' END AS proxy \\\n"
    "  FROM proxy_accounts WHERE username = '%u'"
)
TEMPFAIL = re.compile(
    r"^NO \[UNAVAILABLE\] Temporary authentication failure\. \[[^:\]]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]$"
)


def start_proxyd(proxyd: ProxydRunner, server: PostgresServer, **settings: str) -> ProxydProcess:
    sql_conf = proxyd.workdir / "dovecot-sql.conf.ext"
    sql_conf.write_text(
        "driver = pgsql\n"
        f"connect = {server.connect_string(connect_timeout='1')}\n"
        "default_pass_scheme = PLAIN\n"
        f"password_query = {QUERY}\n"
    )
    config = proxyd.config(**settings)
    config.passdbs.append({"driver": "sql", "args": str(sql_conf)})
    return proxyd.start(config)


def route(server: PostgresServer, user: str, backend: DovecotBackend, destuser: str) -> None:
    server.sql(
        "INSERT INTO proxy_accounts (username, password, host, port, destuser) "
        f"VALUES ('{user}', '{destuser}pw', '{backend.address}', {backend.imap_port}, '{destuser}') "
        "ON CONFLICT (username) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port"
    )


def test_login_routed_by_the_database_and_cached(
    proxyd: ProxydRunner,
    postgres: PostgresServer,
    backend_a: DovecotBackend,
    backend_b: DovecotBackend,
) -> None:
    route(postgres, "e_alice", backend_a, "alice")
    route(postgres, "e_bob", backend_b, "bob")
    running = start_proxyd(proxyd, postgres, auth_cache_size="1M", auth_cache_ttl="1 hour")
    for user, backend, destuser in (("e_alice", backend_a, "alice"), ("e_bob", backend_b, "bob")):
        with IMAP4(running.address(), running.port()) as client:
            assert client.login(user, f"{destuser}pw")[0] == "OK"
            assert fetch_subjects(client) == [backend.subject_for(destuser)]
            client.logout()
    # the row changes; within auth_cache_ttl the cached answer still routes
    route(postgres, "e_alice", backend_b, "alice")
    with IMAP4(running.address(), running.port()) as client:
        client.login("e_alice", "alicepw")
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()


def test_database_down_gives_the_temporary_failure_text(
    proxyd: ProxydRunner, postgres_factory: PostgresFactory, backend_a: DovecotBackend
) -> None:
    server = postgres_factory.create()
    route(server, "e_carl", backend_a, "alice")
    running = start_proxyd(proxyd, server)
    with RawImapClient(running.address(), running.port(), source_ip=client_address(40)) as client:
        assert client.command("LOGIN e_carl alicepw").status == "OK"
    server.stop("immediate")
    with RawImapClient(running.address(), running.port(), source_ip=client_address(41)) as client:
        reply = client.command("LOGIN e_carl alicepw")
        assert TEMPFAIL.match(reply.tagged), reply
        # the client stays connected
        assert client.command("NOOP").tagged == "OK NOOP completed."
    server.start()
