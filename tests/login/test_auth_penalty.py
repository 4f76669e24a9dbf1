"""The per-IP auth penalty (proxyd.auth.penalty) and how the Authenticator applies it.

Timing runs on trio's autojump clock: a 15 s penalty costs nothing here.
Reference: Dovecot's auth-penalty.c and anvil's penalty.c (spec §1.6), and §11:
"after a failed login the next login from that IP is delayed, doubling up to
15 s, even with auth_failure_delay = 0".
"""

from __future__ import annotations

import zlib

import pytest
import trio
import trio.testing

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.penalty import (
    EXPIRE_SECS,
    AuthPenalty,
    penalty_ident,
    penalty_to_secs,
    userpass_checksum,
)
from proxyd.auth.request import AuthStatus
from tests.auth.fakes import FakePassdb, make_chain
from tests.auth.util import make_request

IP = "192.0.2.10"


def test_penalty_to_secs() -> None:
    assert [penalty_to_secs(n) for n in range(6)] == [2, 4, 8, 15, 15, 15]


def test_ident_masks_ipv6_to_48_bits() -> None:
    assert penalty_ident("192.0.2.1") == "192.0.2.1"
    assert penalty_ident("2001:db8:1:2:3::4") == "2001:db8:1::"
    assert penalty_ident("2001:db8:1:ffff::1") == penalty_ident("2001:db8:1:2::9")
    assert penalty_ident("") is None


def test_checksum_is_crc32_of_password_continued_with_user() -> None:
    assert userpass_checksum("bob", "pw") == zlib.crc32(b"bob", zlib.crc32(b"pw"))
    assert userpass_checksum("bob", None) == 0


async def test_each_failure_doubles_the_wait_up_to_15s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    penalty = AuthPenalty()
    ident = penalty_ident(IP)
    waits = []
    for attempt in range(6):
        last, wait = penalty.delay(ident)
        waits.append(wait)
        await trio.sleep(wait)
        penalty.failed(ident, last, checksum=1000 + attempt)  # a different password each time
    assert waits == [0, 4, 8, 15, 15, 15]


async def test_penalty_fades_after_15_quiet_seconds(autojump_clock: trio.testing.MockClock) -> None:
    penalty = AuthPenalty()
    penalty.failed(IP, 0, 1)
    penalty.failed(IP, 1, 2)
    assert penalty.current(IP) == 2
    await trio.sleep(14.9)
    assert penalty.current(IP) == 2
    await trio.sleep(0.2)
    assert penalty.current(IP) == 0


async def test_repeating_the_same_wrong_password_does_not_raise_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    penalty = AuthPenalty()
    for _ in range(5):
        last = penalty.current(IP)
        penalty.failed(IP, last, checksum=42)
    assert penalty.current(IP) == 1


async def test_success_resets_and_records_expire(autojump_clock: trio.testing.MockClock) -> None:
    penalty = AuthPenalty()
    penalty.failed(IP, 0, 1)
    penalty.succeeded(IP, 1)
    assert penalty.current(IP) == 0
    penalty.failed("192.0.2.11", 0, 1)
    assert len(penalty) == 2
    await trio.sleep(EXPIRE_SECS + 1)
    assert len(penalty) == 0


# -- through the Authenticator --------------------------------------------------------------


def authenticator(passdb: FakePassdb) -> Authenticator:
    return Authenticator(make_chain(passdb), failure_delay=0, penalty=AuthPenalty())


async def timed(
    auth: Authenticator, user: str, password: str, ip: str = IP
) -> tuple[AuthStatus, float]:
    start = trio.current_time()
    reply = await auth.authenticate(make_request(user, password, remote_ip=ip))
    return reply.status, trio.current_time() - start


async def test_a_failure_delays_the_next_login_from_that_ip_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    auth = authenticator(FakePassdb({"alice": [("password", "secret")]}))
    assert await timed(auth, "alice", "wrong") == (AuthStatus.FAIL, 0)
    # even the right password waits 4 s; afterwards the penalty is gone
    assert await timed(auth, "alice", "secret") == (AuthStatus.OK, pytest.approx(4))
    assert await timed(auth, "alice", "secret") == (AuthStatus.OK, 0)
    await timed(auth, "alice", "wrong")
    assert await timed(auth, "alice", "secret", ip="192.0.2.99") == (AuthStatus.OK, 0)


async def test_nodelay_failures_do_not_count(autojump_clock: trio.testing.MockClock) -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("nodelay", "y")]})
    auth = Authenticator(
        make_chain((passdb, {"result_success": "return-fail"})),
        failure_delay=2,
        penalty=AuthPenalty(),
    )
    for _ in range(3):
        assert await timed(auth, "alice", "secret") == (AuthStatus.FAIL, 0)


async def test_the_forwarded_client_ip_is_penalised(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({}))
    request = make_request("x", "y", remote_ip="198.51.100.7", real_remote_ip="127.0.0.1")
    await auth.authenticate(request)
    assert await timed(auth, "x", "z", ip="198.51.100.7") == (AuthStatus.FAIL, pytest.approx(4))
    assert await timed(auth, "x", "z", ip="127.0.0.1") == (AuthStatus.FAIL, 0)
