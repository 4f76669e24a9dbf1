"""The sql passdb on a real MariaDB: Dovecot's examples as written, failover, outages, injection."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from passdb_drivers import sql as sql_driver
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from tests.auth.util import make_request
from tests.fixtures.mariadb import MariadbFactory, MariadbServer
from tests.fixtures.net import free_ports
from tests.passdb_drivers.util import DEAD_ADDRESS, authenticator, passdb, sample_args, write_args

# Dovecot's Proxying page, "Example password forwarding SQL configuration", with
# only the connect line pointing at the test servers: the first host is dead,
# so the lookups also show failover to the second host= (sqlhost1, sqlhost2).
SEED_FORWARDING = """\
driver = mysql
connect = host={dead} host={address} port={port} dbname=mail user=dovecot password=secret
password_query = SELECT NULL AS password, 'Y' as nopassword, host, destuser,
'Y' AS proxy FROM proxy WHERE user = '%u'
"""

# "Example proxy_maybe SQL configuration", plus the connect line it lacks.
SEED_MAYBE = """\
driver = mysql
connect = {connect}

password_query = \\
  SELECT concat(user, '@', domain) AS user, password, host, 'Y' AS proxy_maybe
\\
  FROM users WHERE user = '%n' AND domain = '%d'

user_query = SELECT user AS username, domain, home \\
  FROM users WHERE user = '%n' AND domain = '%d'
"""


def conf(tmp_path: Path, server: MariadbServer, query: str, **connect: str) -> Path:
    return write_args(
        tmp_path,
        f"driver = mysql\nconnect = {server.connect_string(**connect)}\npassword_query = {query}\n",
    )


async def test_seed_password_forwarding_example(tmp_path: Path, mariadb: MariadbServer) -> None:
    """The wiki's rows (sql/mysql.sql): joe → 192.168.0.2 as joe@example.com, any password."""
    path = write_args(
        tmp_path,
        SEED_FORWARDING.format(dead=DEAD_ADDRESS, address=mariadb.address, port=mariadb.port),
    )
    async with authenticator([passdb("sql", path)]) as auth:
        joe = await auth.authenticate(make_request("joe", "whatever"))
        assert joe.status is AuthStatus.OK
        assert joe.fields == {
            "proxy": "",
            "host": "192.168.0.2",
            "destuser": "joe@example.com",
            "pass": "whatever",
        }
        john = await auth.authenticate(make_request("john", "other"))
        assert john.status is AuthStatus.OK
        assert john.fields["host"] == "192.168.0.1"
        assert john.fields["destuser"] == ""  # NOT NULL default '': present, empty
        unknown = await auth.authenticate(make_request("jim", "x"))
        assert (unknown.status, unknown.fail_code) == (AuthStatus.FAIL, FailCode.AUTH_FAILED)


async def test_seed_proxy_maybe_example(tmp_path: Path, mariadb: MariadbServer) -> None:
    """joe@example.com / joepw (MD5-CRYPT, the default MD5 scheme); the user becomes user@domain."""
    path = write_args(tmp_path, SEED_MAYBE.format(connect=mariadb.connect_string()))
    async with sql_driver.create(passdb("sql", path)) as db:
        found = await db.lookup(make_request("joe@example.com"))
    assert dict(found.fields) == {
        "user": "joe@example.com",
        "password": "$1$Z9iG5ldI$G1Cb4.aAZ4MEXfx2n/vzk/",
        "host": "127.0.0.2",
        "proxy_maybe": "Y",
    }
    async with authenticator([passdb("sql", path)]) as auth:
        reply = await auth.authenticate(make_request("Joe@Example.com", "joepw"))
        assert reply.status is AuthStatus.OK
        assert reply.user == "joe@example.com"
        assert reply.fields["host"] == "127.0.0.2"
        wrong = await auth.authenticate(make_request("joe@example.com", "nope"))
        assert wrong.status is AuthStatus.FAIL
        other_domain = await auth.authenticate(make_request("joe@example.org", "joepw"))
        assert other_domain.status is AuthStatus.FAIL


@pytest.mark.parametrize(
    "user",
    [
        "x' OR '1'='1",
        "joe' -- ",
        "joe'; DROP TABLE proxy; --",
        "joe\\",
        "%",
        "' UNION SELECT 1,2,3,4,5 -- ",
    ],
)
async def test_injection_attempts_are_only_values(
    tmp_path: Path, mariadb: MariadbServer, user: str
) -> None:
    path = write_args(
        tmp_path,
        SEED_FORWARDING.format(dead=DEAD_ADDRESS, address=mariadb.address, port=mariadb.port),
    )
    async with sql_driver.create(passdb("sql", path)) as db:
        reply = await db.lookup(make_request(user, "pw"))
        assert reply.result is PassdbResult.USER_UNKNOWN
    assert mariadb.sql("SELECT count(*) FROM proxy").strip() == "2"


async def test_columns_become_fields_null_skipped_presence_booleans(
    tmp_path: Path, mariadb: MariadbServer
) -> None:
    mariadb.sql(
        "INSERT INTO proxy_accounts (username, password, host, port) VALUES ('m_bool', '{PLAIN}pw', '10.1.1.1', 1143)"
    )
    query = (
        "SELECT password, host, port, destuser, 'no' AS `ssl`, NULL AS starttls, "
        "'' AS proxy, 7 AS proxy_timeout FROM proxy_accounts WHERE username = '%u'"
    )
    async with authenticator([passdb("sql", conf(tmp_path, mariadb, query))]) as auth:
        reply = await auth.authenticate(make_request("m_bool", "pw"))
    assert reply.status is AuthStatus.OK
    assert reply.fields == {
        "host": "10.1.1.1",
        "port": "1143",
        "ssl": "no",  # present, so TLS is on: any non-NULL value enables a boolean
        "proxy": "",
        "proxy_timeout": "7",
        "pass": "pw",
    }


async def test_nologin_from_a_column(tmp_path: Path, mariadb: MariadbServer) -> None:
    """The demo's carol (sql/mysql.sql): nologin 'Y' with a reason."""
    query = "SELECT password, nologin, reason FROM proxy_accounts WHERE username = '%u'"
    path = write_args(
        tmp_path,
        "driver = mysql\n"
        f"connect = {mariadb.connect_string()}\n"
        "default_pass_scheme = SHA512-CRYPT\n"
        f"password_query = {query}\n",
    )
    async with authenticator([passdb("sql", path)]) as auth:
        reply = await auth.authenticate(make_request("carol", "carolpw"))
    assert (reply.status, reply.fail_code) == (AuthStatus.FAIL, FailCode.LOGIN_DISABLED)
    assert reply.reason == "Mailbox is being moved, try again in an hour"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "SELECT password, host FROM proxy_accounts WHERE username LIKE '%u%%'",
            "multiple matches",
        ),
        (
            "SELECT host FROM proxy_accounts WHERE username = '%u'",
            "must return a field named 'password'",
        ),
        ("SELECT password FROM no_such_table WHERE username = '%u'", "Password query failed"),
    ],
)
async def test_bad_results_are_temporary_failures(
    tmp_path: Path, mariadb: MariadbServer, query: str, message: str
) -> None:
    mariadb.sql(
        "INSERT IGNORE INTO proxy_accounts (username, password, host) VALUES "
        "('m_dup1', 'x', 'h'), ('m_dup2', 'x', 'h')"
    )
    user = "m_dup" if "LIKE" in query else "alice"
    async with sql_driver.create(passdb("sql", conf(tmp_path, mariadb, query))) as db:
        with pytest.raises(PassdbTempFail, match=message):
            await db.lookup(make_request(user, "pw"))


async def test_pool_is_bounded_by_maxconns(tmp_path: Path, mariadb: MariadbServer) -> None:
    query = "SELECT password, host FROM proxy_accounts WHERE username = '%u'"
    path = conf(tmp_path, mariadb, query, maxconns="2")
    results: list[PassdbResult] = []
    async with sql_driver.create(passdb("sql", path)) as db:
        assert isinstance(db, sql_driver.SqlPassdb)

        async def one() -> None:
            results.append((await db.lookup(make_request("alice", "pw"))).result)

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
        assert results == [PassdbResult.OK] * 12
        (pool,) = db.backend.pools
        assert pool.idle_connections == 2


async def test_slow_query_is_cut_at_read_timeout(tmp_path: Path, mariadb: MariadbServer) -> None:
    query = "SELECT SLEEP(5) AS x, password FROM proxy_accounts WHERE username = '%u'"
    path = conf(tmp_path, mariadb, query, read_timeout="1")
    async with authenticator([passdb("sql", path)]) as auth:
        started = time.monotonic()
        reply = await auth.authenticate(make_request("alice", "alicepw"))
        elapsed = time.monotonic() - started
    assert (reply.status, reply.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)
    assert 0.9 < elapsed < 3


@pytest.fixture
def private_mariadb(mariadb_factory: MariadbFactory) -> MariadbServer:
    """A server of this test's own, to stop, kill or pause."""
    return mariadb_factory.create()


async def test_server_killed_mid_run_then_back(
    tmp_path: Path, private_mariadb: MariadbServer
) -> None:
    """A dead database is a temporary failure, the next passdb is tried, and no restart is needed."""
    server = private_mariadb
    query = "SELECT NULL AS password, 'Y' AS nopassword, host FROM proxy WHERE user = '%u'"
    sql_passdb = passdb("sql", conf(tmp_path, server, query, connect_timeout="1"))
    fallback = passdb("static", "nopassword=y host=fallback.example")
    async with (
        authenticator([sql_passdb]) as alone,
        authenticator([sql_passdb, fallback]) as chained,
    ):
        assert (await alone.authenticate(make_request("joe", "x"))).fields["host"] == "192.168.0.2"
        server.kill()
        started = time.monotonic()
        down = await alone.authenticate(make_request("joe", "x"))
        assert (down.status, down.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)
        assert time.monotonic() - started < 3
        # result_internalfail = continue (the default): the static passdb answers
        assert (await chained.authenticate(make_request("joe", "x"))).fields[
            "host"
        ] == "fallback.example"
        server.start()
        await trio.sleep(1.1)  # the failed host is skipped for a second
        back = await alone.authenticate(make_request("joe", "x"))
        assert back.status is AuthStatus.OK
        assert back.fields["host"] == "192.168.0.2"


async def test_hanging_server_is_a_temporary_failure_within_the_timeouts(
    tmp_path: Path, private_mariadb: MariadbServer
) -> None:
    server = private_mariadb
    query = "SELECT NULL AS password, 'Y' AS nopassword, host FROM proxy WHERE user = '%u'"
    path = conf(tmp_path, server, query, connect_timeout="1", read_timeout="1")
    async with authenticator([passdb("sql", path)]) as auth:
        assert (await auth.authenticate(make_request("joe", "x"))).status is AuthStatus.OK
        server.pause()
        try:
            started = time.monotonic()
            reply = await auth.authenticate(make_request("joe", "x"))
            elapsed = time.monotonic() - started
        finally:
            server.resume()
    assert reply.status is AuthStatus.TEMPFAIL
    # the kept connection hangs for read_timeout, the retry on a new one for connect_timeout
    assert elapsed < 4


async def test_failover_between_two_live_servers(
    tmp_path: Path, mariadb_factory: MariadbFactory
) -> None:
    """host=A host=B: A answers while it is up; when it dies B does; A is preferred again later."""
    port = free_ports("127.0.0.10", 1)[0]
    first = mariadb_factory.create(address="127.0.0.10", port=port)
    second = mariadb_factory.create(address="127.0.0.11", port=port)
    for server, name in ((first, "first"), (second, "second")):
        server.sql(f"UPDATE proxy SET host = '{name}' WHERE user = 'joe'")
    path = write_args(
        tmp_path,
        "driver = mysql\n"
        f"connect = host=127.0.0.10 host=127.0.0.11 port={port} dbname=mail user=dovecot "
        "password=secret connect_timeout=1\n"
        "password_query = SELECT NULL AS password, 'Y' AS nopassword, host FROM proxy "
        "WHERE user = '%u'\n",
    )

    async def host(db: object) -> str:
        reply = await db.lookup(make_request("joe", "x"))  # type: ignore[attr-defined]
        return dict(reply.fields)["host"]  # type: ignore[no-any-return]

    async with sql_driver.create(passdb("sql", path)) as db:
        assert await host(db) == "first"
        first.kill()
        assert await host(db) == "second"
        assert await host(db) == "second"
        first.start()
        await trio.sleep(1.1)
        assert await host(db) == "first"


async def test_sample_configuration(tmp_path: Path, mariadb: MariadbServer) -> None:
    """sql/dovecot-sql-mysql.conf.ext over sql/mysql.sql: the demo accounts."""
    path = sample_args(tmp_path, "dovecot-sql-mysql.conf.ext", mariadb.connect_string())
    async with authenticator([passdb("sql", path)]) as auth:
        alice = await auth.authenticate(make_request("alice", "alicepw"))
        assert alice.status is AuthStatus.OK
        assert alice.fields == {
            "host": "127.0.0.2",
            "port": "10143",
            "proxy": "",
            "pass": "alicepw",
        }
        assert (await auth.authenticate(make_request("alice", "bobpw"))).status is AuthStatus.FAIL
