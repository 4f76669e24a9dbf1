"""Authenticator: failure delay (with trio's autojump clock), delay_until, opening passdbs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.opening import open_authenticator
from proxyd.auth.passdb import PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import ConfigError, Location
from tests.auth.fakes import FakePassdb, make_chain
from tests.auth.util import make_request


def authenticator(passdb: FakePassdb, delay: float = 2.0) -> Authenticator:
    return Authenticator(make_chain(passdb), failure_delay=delay)


async def timed(coro_fn, *args):
    start = trio.current_time()
    result = await coro_fn(*args)
    return result, trio.current_time() - start


async def test_failure_is_delayed(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({"alice": [("password", "secret")]}))
    reply, elapsed = await timed(auth.authenticate, make_request("alice", "wrong"))
    assert reply.status is AuthStatus.FAIL
    assert elapsed == pytest.approx(2.0)
    reply, elapsed = await timed(auth.authenticate, make_request("nobody", "x"))
    assert reply.status is AuthStatus.FAIL
    assert elapsed == pytest.approx(2.0)


async def test_configured_delay(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({}), delay=0.5)
    _reply, elapsed = await timed(auth.authenticate, make_request("alice", "x"))
    assert elapsed == pytest.approx(0.5)


async def test_tempfail_is_delayed(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb(error=PassdbTempFail("down")))
    reply, elapsed = await timed(auth.authenticate, make_request("alice", "x"))
    assert reply.status is AuthStatus.TEMPFAIL
    assert elapsed == pytest.approx(2.0)


async def test_success_is_immediate(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({"alice": [("password", "secret")]}))
    reply, elapsed = await timed(auth.authenticate, make_request("alice", "secret"))
    assert reply.status is AuthStatus.OK
    assert elapsed == 0


async def test_nodelay(autojump_clock: trio.testing.MockClock) -> None:
    # nodelay must survive the failure: here the passdb succeeds but refuses with return-fail
    passdb = FakePassdb({"alice": [("password", "secret"), ("nodelay", "y")]})
    auth = Authenticator(make_chain((passdb, {"result_success": "return-fail"})), failure_delay=2)
    reply, elapsed = await timed(auth.authenticate, make_request("alice", "secret"))
    assert reply.status is AuthStatus.FAIL
    assert elapsed == 0


async def test_nologin_refusal_is_immediate(autojump_clock: trio.testing.MockClock) -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("nologin", ""), ("reason", "Gone")]})
    reply, elapsed = await timed(
        authenticator(passdb).authenticate, make_request("alice", "secret")
    )
    assert reply.fail_code is FailCode.LOGIN_DISABLED
    assert elapsed == 0


async def test_delay_until_delays_success(autojump_clock: trio.testing.MockClock) -> None:
    stamp = int(time.time()) + 10
    passdb = FakePassdb({"alice": [("password", "secret"), ("delay_until", str(stamp))]})
    reply, elapsed = await timed(
        authenticator(passdb).authenticate, make_request("alice", "secret")
    )
    assert reply.status is AuthStatus.OK
    assert 8 <= elapsed <= 11


async def test_lookup_is_never_delayed(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({}))
    reply, elapsed = await timed(auth.lookup, make_request("nobody"))
    assert reply.status is AuthStatus.FAIL
    assert elapsed == 0


async def test_concurrent_failures_wait_in_parallel(autojump_clock: trio.testing.MockClock) -> None:
    auth = authenticator(FakePassdb({}))
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(auth.authenticate, make_request(f"user{i}", "x"))
    assert trio.current_time() - start == pytest.approx(2.0)


# -- open_authenticator with real drivers through the entry points ----------------------------------


def settings_with(*passdbs: PassdbSettings, **kw: object) -> Settings:
    return Settings(passdbs=passdbs, **kw)


async def test_open_authenticator_with_static_driver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = settings_with(
        PassdbSettings(driver="static", args="password=pw proxy=y host=10.0.0.%Ln hostip=10.0.0.7"),
        auth_failure_delay=3.0,
    )
    async with open_authenticator(settings) as auth:
        reply = await auth.authenticate(make_request("Seven", "pw"))
        assert reply.status is AuthStatus.OK
        assert reply.fields == {
            "proxy": "",
            "host": "10.0.0.seven",
            "hostip": "10.0.0.7",
            "original_user": "Seven",
            "pass": "pw",
        }
        _reply, elapsed = await timed(auth.authenticate, make_request("seven", "bad"))
        assert elapsed == pytest.approx(3.0)
    async with open_authenticator(settings, failure_delay=0) as auth:
        _reply, elapsed = await timed(auth.authenticate, make_request("seven", "bad"))
        assert elapsed == 0


async def test_open_authenticator_chain_of_drivers(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}secret::::::host=10.0.0.1\n")
    settings = settings_with(
        PassdbSettings(driver="passwd-file", args="users", config_dir=str(tmp_path)),
        PassdbSettings(
            driver="static", args="nopassword proxy host=fallback hostip=10.0.0.9", result_success="return-ok"
        ),
        auth_failure_delay=0,
    )
    async with open_authenticator(settings) as auth:
        alice = await auth.authenticate(make_request("alice", "secret"))
        assert alice.fields == {"host": "10.0.0.1"}
        other = await auth.authenticate(make_request("bob", "whatever"))
        assert other.fields == {
            "proxy": "",
            "host": "fallback",
            "hostip": "10.0.0.9",
            "pass": "whatever",
        }


async def test_open_authenticator_unknown_driver() -> None:
    settings = settings_with(
        PassdbSettings(driver="nosuchdriver", location=Location("/etc/proxyd/proxyd.conf", 7))
    )
    with pytest.raises(ConfigError) as info:
        async with open_authenticator(settings):
            pass
    assert str(info.value).startswith(
        "/etc/proxyd/proxyd.conf:7: Unknown passdb driver 'nosuchdriver'"
    )


async def test_open_authenticator_bad_chain_settings() -> None:
    settings = settings_with(
        PassdbSettings(driver="static", args="nopassword"),
        PassdbSettings(
            driver="static", args="nopassword", skip="bogus", location=Location("f.conf", 3)
        ),
    )
    with pytest.raises(ConfigError, match=r"^f\.conf:3: "):
        async with open_authenticator(settings):
            pass


async def test_open_authenticator_without_passdbs() -> None:
    with pytest.raises(ConfigError, match="No passdbs"):
        async with open_authenticator(Settings()):
            pass
