"""The master's end of the zygote socket, against a scripted zygote on a real socketpair."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from proxyd.master.zygote import ZygoteHandle


@contextmanager
def _pair() -> Iterator[tuple[ZygoteHandle, trio.socket.SocketType]]:
    master_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = ZygoteHandle(master_end, pid=0)
    try:
        with trio.socket.from_stdlib_socket(zygote_end) as zygote:
            yield handle, zygote
    finally:
        handle.close()


async def test_a_late_reply_is_not_taken_for_the_next_request() -> None:
    with _pair() as (handle, zygote):
        async with trio.open_nursery() as nursery:
            await nursery.start(handle.run)
            with trio.move_on_after(0.2):  # the caller gives up; its reply comes later
                await handle.reload()
            first = json.loads(await zygote.recv(4096))
            await zygote.send(json.dumps({"error": "too late", "seq": first["seq"]}).encode())

            async def zygote_answers() -> None:
                second = json.loads(await zygote.recv(4096))
                await zygote.send(json.dumps({"ok": True, "seq": second["seq"]}).encode())

            nursery.start_soon(zygote_answers)
            with trio.fail_after(5):
                await handle.reload()  # would raise ConfigError("too late") if it took the old reply
            nursery.cancel_scope.cancel()


async def test_exit_events_reach_their_waiters_in_any_order() -> None:
    with _pair() as (handle, zygote):
        async with trio.open_nursery() as nursery:
            await nursery.start(handle.run)
            await zygote.send(json.dumps({"ev": "exit", "pid": 41, "status": 256}).encode())
            with trio.fail_after(5):
                waiter_status: list[int | None] = []

                async def wait_42() -> None:
                    waiter_status.append(await handle.wait_exit(42))

                nursery.start_soon(wait_42)
                await trio.sleep(0.05)
                await zygote.send(json.dumps({"ev": "exit", "pid": 42, "status": 9}).encode())
                assert await handle.wait_exit(41) == 256  # reported before anyone waited
                while not waiter_status:
                    await trio.sleep(0.01)
                assert waiter_status == [9]
            zygote.close()  # the zygote dies: waiters learn there is no status to come
            with trio.fail_after(5):
                await handle.dead.wait()
                assert await handle.wait_exit(43) is None
            nursery.cancel_scope.cancel()


async def test_when_exited_wakes_once_the_exit_is_reported_or_the_zygote_dies() -> None:
    """The master's one task per child reads its reports until this cancels the reading."""
    with _pair() as (handle, zygote):
        async with trio.open_nursery() as nursery:
            await nursery.start(handle.run)
            woken: list[int] = []
            handle.when_exited(51, lambda: woken.append(51))
            handle.when_exited(52, lambda: woken.append(52))
            await zygote.send(json.dumps({"ev": "exit", "pid": 51, "status": 0}).encode())
            with trio.fail_after(5):
                while not woken:
                    await trio.sleep(0.01)
            assert woken == [51]
            handle.when_exited(51, lambda: woken.append(-51))  # already exited: at once
            assert woken == [51, -51]
            assert await handle.wait_exit(51) == 0  # the status is still there to collect
            zygote.close()  # the zygote dies: every waker is called, later ones at once
            with trio.fail_after(5):
                await handle.dead.wait()
            assert woken == [51, -51, 52]
            handle.when_exited(53, lambda: woken.append(53))
            assert woken[-1] == 53
            nursery.cancel_scope.cancel()
