"""The sql passdb on a real PostgreSQL: types, failover, outages, injection, the auth cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from passdb_drivers import sql as sql_driver
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from tests.auth.util import make_request
from tests.fixtures.postgres import PostgresFactory, PostgresServer
from tests.passdb_drivers.util import DEAD_ADDRESS, authenticator, passdb, sample_args, write_args

# Dovecot's forwarding example for PostgreSQL, where "user" must be quoted
FORWARDING = (
    "SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy "
    "FROM proxy WHERE \"user\" = '%u'"
)


def conf(tmp_path: Path, server: PostgresServer, query: str, **connect: str) -> Path:
    return write_args(
        tmp_path,
        f"driver = pgsql\nconnect = {server.connect_string(**connect)}\npassword_query = {query}\n",
    )


async def test_forwarding_lookup_with_a_dead_first_host(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    path = write_args(
        tmp_path,
        "driver = pgsql\n"
        f"connect = host={DEAD_ADDRESS} host={postgres.address} port={postgres.port} "
        "dbname=mail user=dovecot password=secret\n"
        f"password_query = {FORWARDING}\n",
    )
    async with authenticator([passdb("sql", path)]) as auth:
        joe = await auth.authenticate(make_request("joe", "anything"))
    assert joe.status is AuthStatus.OK
    assert joe.fields == {
        "proxy": "",
        "host": "192.168.0.2",
        "destuser": "joe@example.com",
        "pass": "anything",
    }


async def test_wrong_database_password_is_a_temporary_failure(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    path = conf(tmp_path, postgres, FORWARDING, password="wrong")
    async with authenticator([passdb("sql", path)]) as auth:
        reply = await auth.authenticate(make_request("joe", "x"))
    assert (reply.status, reply.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)


async def test_parameters_take_the_type_the_server_infers(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """'%n' compared with an integer column is converted, as a quoted literal would be;
    an untyped '%n@%d' in the select list is text; a value that does not convert is the
    database's error, a temporary failure."""
    postgres.sql(
        "INSERT INTO proxy_accounts (username, password, host, port) "
        "VALUES ('p_typed', '{PLAIN}pw', '10.2.2.2', 4143) ON CONFLICT DO NOTHING"
    )
    query = (
        "SELECT password, host, port, '%n@%d' AS full_name, true AS flag FROM proxy_accounts "
        "WHERE username = '%n' AND port > %{passdb:min:0}"
    )
    async with authenticator([passdb("sql", conf(tmp_path, postgres, query))]) as auth:
        reply = await auth.authenticate(make_request("p_typed@example.com", "pw"))
    assert reply.status is AuthStatus.OK
    assert reply.fields["port"] == "4143"
    assert reply.fields["full_name"] == "p_typed@example.com"
    assert reply.fields["flag"] == "t"
    by_port = "SELECT password, host FROM proxy_accounts WHERE port = '%n'"
    async with authenticator([passdb("sql", conf(tmp_path, postgres, by_port))]) as auth:
        assert (await auth.authenticate(make_request("4143", "pw"))).status is AuthStatus.OK
        failed = await auth.authenticate(make_request("abc", "pw"))
    assert failed.status is AuthStatus.TEMPFAIL


@pytest.mark.parametrize(
    "user",
    ["x' OR '1'='1", "joe'--", "joe\\", "joe$1", "' UNION SELECT NULL,NULL,NULL,NULL,NULL--"],
)
async def test_injection_attempts_are_only_values(
    tmp_path: Path, postgres: PostgresServer, user: str
) -> None:
    async with sql_driver.create(passdb("sql", conf(tmp_path, postgres, FORWARDING))) as db:
        assert (await db.lookup(make_request(user, "pw"))).result is PassdbResult.USER_UNKNOWN
        assert (await db.lookup(make_request("joe", "pw"))).result is PassdbResult.OK


async def test_statement_timeout_from_options(tmp_path: Path, postgres: PostgresServer) -> None:
    """``options='-c statement_timeout=500'``: the server cancels a slow query; a tempfail."""
    query = f"SELECT pg_sleep(5) AS x, {FORWARDING.removeprefix('SELECT ')}"
    path = conf(tmp_path, postgres, query, options="'-c statement_timeout=500'")
    async with sql_driver.create(passdb("sql", path)) as db:
        started = time.monotonic()
        with pytest.raises(PassdbTempFail, match=r"QueryCanceled|statement timeout"):
            await db.lookup(make_request("joe", "pw"))
        assert time.monotonic() - started < 2
        # the connection is still good for the next query
        fast = conf(tmp_path, postgres, FORWARDING, options="'-c statement_timeout=500'")
    async with sql_driver.create(passdb("sql", fast)) as db:
        assert (await db.lookup(make_request("joe", "pw"))).result is PassdbResult.OK


async def test_cache_keeps_routing_until_flushed(tmp_path: Path, postgres: PostgresServer) -> None:
    """auth_cache_size: a changed row does not change routing within the TTL."""
    postgres.sql(
        "INSERT INTO proxy (\"user\", host, destuser) VALUES ('p_cached', '10.0.0.1', '') "
        "ON CONFLICT (\"user\") DO UPDATE SET host = '10.0.0.1'"
    )
    path = conf(tmp_path, postgres, FORWARDING)
    async with authenticator([passdb("sql", path)], auth_cache_size=1 << 20) as auth:
        first = await auth.authenticate(make_request("p_cached", "pw"))
        assert first.fields["host"] == "10.0.0.1"
        postgres.sql("UPDATE proxy SET host = '10.0.0.2' WHERE \"user\" = 'p_cached'")
        cached = await auth.authenticate(make_request("p_cached", "pw"))
        assert cached.fields["host"] == "10.0.0.1"
        assert auth.cache is not None
        stats = auth.cache.statistics()
        assert stats.hits == 1
        assert auth.flush_cache(["p_cached"]) == 1
        fresh = await auth.authenticate(make_request("p_cached", "pw"))
        assert fresh.fields["host"] == "10.0.0.2"
    async with authenticator([passdb("sql", path)]) as uncached:
        assert (await uncached.authenticate(make_request("p_cached", "pw"))).fields[
            "host"
        ] == "10.0.0.2"
        postgres.sql("UPDATE proxy SET host = '10.0.0.3' WHERE \"user\" = 'p_cached'")
        assert (await uncached.authenticate(make_request("p_cached", "pw"))).fields[
            "host"
        ] == "10.0.0.3"
        assert uncached.flush_cache() == 0


@pytest.fixture
def private_postgres(postgres_factory: PostgresFactory) -> PostgresServer:
    """A server of this test's own, to stop or pause."""
    return postgres_factory.create()


async def test_database_killed_mid_run_then_back(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    server = private_postgres
    path = conf(tmp_path, server, FORWARDING, connect_timeout="1")
    async with authenticator([passdb("sql", path)]) as auth:
        assert (await auth.authenticate(make_request("joe", "x"))).status is AuthStatus.OK
        server.stop("immediate")
        started = time.monotonic()
        down = await auth.authenticate(make_request("joe", "x"))
        assert (down.status, down.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)
        assert time.monotonic() - started < 3
        server.start()
        await trio.sleep(1.1)  # the failed host is skipped for a second
        back = await auth.authenticate(make_request("joe", "x"))
        assert back.status is AuthStatus.OK


async def test_hanging_server_is_cut_by_the_deadlines(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    server = private_postgres
    path = conf(
        tmp_path, server, FORWARDING, connect_timeout="1", options="'-c statement_timeout=500'"
    )
    async with authenticator([passdb("sql", path)]) as auth:
        assert (await auth.authenticate(make_request("joe", "x"))).status is AuthStatus.OK
        pid = server.pause()
        try:
            started = time.monotonic()
            reply = await auth.authenticate(make_request("joe", "x"))
            elapsed = time.monotonic() - started
        finally:
            server.resume(pid)
    assert reply.status is AuthStatus.TEMPFAIL
    # kept connection: statement_timeout + 1 s; the retry's connect: connect_timeout
    assert elapsed < 4


async def test_sample_configuration(tmp_path: Path, postgres: PostgresServer) -> None:
    """sql/dovecot-sql-pgsql.conf.ext over sql/pgsql.sql: the demo accounts."""
    path = sample_args(tmp_path, "dovecot-sql-pgsql.conf.ext", postgres.connect_string())
    async with authenticator([passdb("sql", path)]) as auth:
        bob = await auth.authenticate(make_request("bob", "bobpw"))
        assert bob.status is AuthStatus.OK
        assert bob.fields == {"host": "127.0.0.3", "port": "10143", "proxy": "", "pass": "bobpw"}
        carol = await auth.authenticate(make_request("carol", "carolpw"))
        assert (carol.fail_code, carol.reason) == (
            FailCode.LOGIN_DISABLED,
            "Mailbox is being moved, try again in an hour",
        )


async def test_table_changed_under_a_kept_statement(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Statements are prepared once per connection; a changed table prepares them again."""
    postgres.sql(
        "DROP TABLE IF EXISTS p_alter; "
        "CREATE TABLE p_alter (username text PRIMARY KEY, password text, host text); "
        "GRANT ALL ON p_alter TO dovecot; "
        "INSERT INTO p_alter VALUES ('p_alt', '{PLAIN}pw', '10.5.5.5')"
    )
    path = conf(tmp_path, postgres, "SELECT * FROM p_alter WHERE username = '%u'")
    async with sql_driver.create(passdb("sql", path)) as db:
        first = await db.lookup(make_request("p_alt"))
        assert dict(first.fields)["host"] == "10.5.5.5"
        postgres.sql("ALTER TABLE p_alter ADD COLUMN port integer DEFAULT 1143")
        second = await db.lookup(make_request("p_alt"))
        assert dict(second.fields) == {
            "username": "p_alt",
            "password": "{PLAIN}pw",
            "host": "10.5.5.5",
            "port": "1143",
        }


async def test_errors_never_carry_the_password(
    tmp_path: Path, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A query that sends %w and fails: the error text names no password."""
    for query in (
        "SELECT password FROM proxy_accounts WHERE username = '%u' AND '%w'::date IS NOT NULL",
        "SELECT password FROM proxy_accounts WHERE username = '%u' AND port = '%w'",
    ):
        async with authenticator([passdb("sql", conf(tmp_path, postgres, query))]) as auth:
            reply = await auth.authenticate(make_request("alice", "Secret-7x"))
        assert reply.status is AuthStatus.TEMPFAIL
    assert "Password query failed" in caplog.text
    assert "Secret-7x" not in caplog.text
