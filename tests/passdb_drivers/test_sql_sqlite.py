"""The sql passdb on SQLite: the repository schema, read-only access, threads, failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from passdb_drivers import sql as sql_driver
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus
from tests.auth.util import make_request
from tests.passdb_drivers.util import SQL_DIR, authenticator, passdb, sample_args, write_args


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """sql/sqlite.sql loaded into a file."""
    path = tmp_path / "mail.db"
    db = sqlite3.connect(path)
    db.executescript((SQL_DIR / "sqlite.sql").read_text())
    db.close()
    return path


def conf(tmp_path: Path, database: Path, query: str | None = None) -> Path:
    if query is None:  # the sample configuration
        return sample_args(tmp_path, "dovecot-sql-sqlite.conf.ext", database.name)
    return write_args(
        tmp_path,
        f"driver = sqlite\nconnect = {database.name}\ndefault_pass_scheme = SHA512-CRYPT\n"
        f"password_query = {query}\n",
    )


async def test_demo_accounts(tmp_path: Path, database: Path) -> None:
    """sql/dovecot-sql-sqlite.conf.ext over sql/sqlite.sql."""
    async with authenticator([passdb("sql", conf(tmp_path, database))]) as auth:
        alice = await auth.authenticate(make_request("alice", "alicepw"))
        assert alice.status is AuthStatus.OK
        assert alice.fields == {
            "host": "127.0.0.2",
            "port": "10143",
            "proxy": "",
            "pass": "alicepw",
        }
        assert (await auth.authenticate(make_request("alice", "bobpw"))).status is AuthStatus.FAIL
        carol = await auth.authenticate(make_request("carol", "carolpw"))
        assert carol.reason == "Mailbox is being moved, try again in an hour"


async def test_concurrent_lookups_share_five_connections(tmp_path: Path, database: Path) -> None:
    results: list[PassdbResult] = []
    async with sql_driver.create(passdb("sql", conf(tmp_path, database))) as db:
        assert isinstance(db, sql_driver.SqlPassdb)

        async def one(user: str) -> None:
            results.append((await db.lookup(make_request(user, "pw"))).result)

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(one, ("alice", "bob", "nobody", "x' OR 1=1 --")[index % 4])
        (pool,) = db.backend.pools
        assert 1 <= pool.idle_connections <= 5
    assert results.count(PassdbResult.OK) == 10
    assert results.count(PassdbResult.USER_UNKNOWN) == 10


async def test_database_is_opened_read_only(tmp_path: Path, database: Path) -> None:
    query = "DELETE FROM proxy_accounts WHERE username = '%u' RETURNING password"
    async with sql_driver.create(passdb("sql", conf(tmp_path, database, query))) as db:
        with pytest.raises(PassdbTempFail, match="readonly"):
            await db.lookup(make_request("alice", "pw"))
    check = sqlite3.connect(database)
    assert check.execute("SELECT count(*) FROM proxy_accounts").fetchone() == (3,)
    check.close()


async def test_missing_file_is_a_temporary_failure_until_it_appears(tmp_path: Path) -> None:
    missing = tmp_path / "later.db"
    async with sql_driver.create(passdb("sql", conf(tmp_path, missing))) as db:
        with pytest.raises(PassdbTempFail, match="unable to open"):
            await db.lookup(make_request("alice", "pw"))
        created = sqlite3.connect(missing)
        created.executescript((SQL_DIR / "sqlite.sql").read_text())
        created.close()
        await trio.sleep(1.1)  # the failed "host" is skipped for a second
        assert (await db.lookup(make_request("alice", "pw"))).result is PassdbResult.OK


async def test_a_query_sees_the_fields_of_earlier_passdbs(tmp_path: Path, database: Path) -> None:
    """``%{passdb:NAME}`` in a query is a bound parameter with the value an earlier
    passdb of the chain set (here a static one naming the backend to look in)."""
    static_args = "nopassword backend_host=127.0.0.3"
    query = (
        "SELECT NULL AS password, 'Y' AS nopassword, host, 'Y' AS proxy FROM proxy_accounts "
        "WHERE username = '%u' AND host = '%{passdb:backend_host}'"
    )
    chain = [passdb("static", static_args, result_success="continue"), passdb("sql", conf(tmp_path, database, query))]
    async with authenticator(chain) as auth:
        bob = await auth.authenticate(make_request("bob", "pw"))
        alice = await auth.authenticate(make_request("alice", "pw"))
    assert (bob.status, bob.fields.get("host")) == (AuthStatus.OK, "127.0.0.3")
    assert alice.status is AuthStatus.FAIL  # alice's row names 127.0.0.2
