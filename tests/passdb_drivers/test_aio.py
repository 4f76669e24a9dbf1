"""One asyncio loop per process, shared by every asyncio-based passdb (passdb_drivers._aio)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio
import trio_asyncio

from passdb_drivers import _aio
from proxyd.auth.request import AuthStatus
from tests.auth.util import make_request
from tests.fixtures.mariadb import MariadbServer
from tests.fixtures.postgres import PostgresServer
from tests.passdb_drivers.util import authenticator, passdb, write_args


async def _running_loop() -> asyncio.AbstractEventLoop:
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


async def test_users_share_one_loop_and_the_opener_closes_it() -> None:
    async with _aio.open_loop() as first:
        async with _aio.open_loop() as second:
            assert second is first
            assert await first.run(_running_loop) is await second.run(_running_loop)
        assert not first.closed
    assert first.closed
    async with _aio.open_loop() as fresh:
        assert fresh is not first
        assert not fresh.closed


async def test_a_loop_opened_higher_up_is_used_and_left_open() -> None:
    async with trio_asyncio.open_loop() as outer:
        async with _aio.open_loop() as handle:
            assert await handle.run(_running_loop) is outer
        assert not outer.is_closed()


async def test_tasks_started_before_the_loop_can_use_it() -> None:
    """Session tasks of a running server were spawned before any passdb opened the loop."""
    ready = trio.Event()
    holder: list[_aio.AsyncioLoop] = []
    results: list[int] = []

    async def early_task() -> None:
        await ready.wait()

        async def answer() -> int:
            await asyncio.sleep(0)
            return 42

        results.append(await holder[0].run(answer))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(early_task)
        async with _aio.open_loop() as handle:
            holder.append(handle)
            ready.set()
            await trio.sleep(0.05)
    assert results == [42]


async def test_asyncio_side_cancellation_is_not_a_trio_cancel() -> None:
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    async with _aio.open_loop() as handle:
        with pytest.raises(_aio.AsyncioCancelledError):
            await handle.run(cancels_itself)


async def test_trio_deadline_cancels_the_asyncio_task() -> None:
    async with _aio.open_loop() as handle:
        with trio.move_on_after(0.1) as scope:
            await handle.run(asyncio.sleep, 10)
        assert scope.cancelled_caught


async def test_two_sql_passdbs_in_one_authenticator(
    tmp_path: Path, postgres: PostgresServer, mariadb: MariadbServer
) -> None:
    """pgsql first (its passdb fails over to) mysql; both run on the one loop."""
    pg = write_args(
        tmp_path,
        f"driver = pgsql\nconnect = {postgres.connect_string()}\n"
        "password_query = SELECT NULL AS password, 'Y' AS nopassword, host FROM proxy "
        "WHERE \"user\" = '%u' AND host = 'nowhere'\n",
    )
    my = write_args(
        tmp_path,
        f"driver = mysql\nconnect = {mariadb.connect_string()}\n"
        "password_query = SELECT NULL AS password, 'Y' AS nopassword, host FROM proxy "
        "WHERE user = '%u'\n",
    )
    async with authenticator([passdb("sql", pg), passdb("sql", my)]) as auth:
        reply = await auth.authenticate(make_request("joe", "x"))
        assert reply.status is AuthStatus.OK
        assert reply.fields["host"] == "192.168.0.2"
