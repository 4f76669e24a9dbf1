"""The auth cache: Dovecot's key, TTLs, size bound, flushing, and its use by the passdb chain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from proxyd.auth.cache import (
    NODE_OVERHEAD,
    AuthCache,
    CachedPassdb,
    expand_cache_key,
    parse_cache_key,
)
from proxyd.auth.chain import ChainEntry, PassdbChain
from proxyd.auth.expand import request_variables
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus
from tests.auth.fakes import FakePassdb, FakeVerifyingPassdb, Fields, passdb_settings
from tests.auth.util import make_request


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("SELECT * FROM t WHERE u = '%u'", "%{user}"),
        ("SELECT * FROM t WHERE u = '%Lu' AND x = '%{user}'", "%{user}"),
        # %n and %d together collapse into %u
        ("... WHERE user = '%n' AND domain = '%d'", "%{user}"),
        ("... WHERE user = '%n'", "%{username}"),
        ("... WHERE ip = '%r' AND u = '%u'", "%{user}\t%{rip}"),
        ("... '%{passdb:host}' '%{env:HOME}' '%u'", "%{user}\t%{passdb:host}"),
        ("ou=people,dc=example(&(objectClass=x)(uid=%u))", "%{user}"),
        ("SELECT 1", None),
        ("SELECT '100%%'", None),
    ],
)
def test_parse_cache_key(text: str, key: str | None) -> None:
    assert parse_cache_key(text) == key


def test_expanded_key_is_tab_escaped() -> None:
    variables = request_variables(make_request("a\tb", "pw"))
    assert expand_cache_key(2, "%{user}\t%{rip}", variables) == "P2\ta\x01tb\t192.0.2.10"


# -- the cache itself -----------------------------------------------------------------------


def entry(password: str = "{PLAIN}pw", **fields: str) -> CachedPassdb:
    return CachedPassdb(password, tuple(fields.items()))


def test_hit_miss_and_ttl() -> None:
    clock = Clock()
    cache = AuthCache(10_000, ttl=60, negative_ttl=10, clock=clock)
    assert cache.lookup("P1\talice") is None
    cache.insert("P1\talice", entry(host="a"), last_success=True)
    cache.insert("P1\tnobody", None, last_success=False)
    hit = cache.lookup("P1\talice")
    assert hit is not None
    assert not hit.expired
    assert hit.node.value == entry(host="a")
    clock.now += 30
    negative = cache.lookup("P1\tnobody")
    assert negative is not None
    assert negative.node.negative
    assert negative.expired  # negative TTL (10 s) passed
    positive = cache.lookup("P1\talice")
    assert positive is not None
    assert not positive.expired
    assert positive.negative_expired
    clock.now += 31
    late = cache.lookup("P1\talice")
    assert late is not None
    assert late.expired
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.entries, stats.negative_entries) == (2, 3, 2, 1)


def test_negative_ttl_zero_stores_no_negative_entries() -> None:
    cache = AuthCache(10_000, ttl=60, negative_ttl=0)
    cache.insert("P1\tnobody", None, last_success=False)
    assert len(cache) == 0


def test_size_bound_evicts_least_recently_used() -> None:
    one = entry(host="h")
    size = NODE_OVERHEAD + len("P1\tuserN") + 1 + one.serialized_size() + 1
    cache = AuthCache(size * 3, ttl=60, negative_ttl=60)
    for name in ("user1", "user2", "user3"):
        cache.insert(f"P1\t{name}", one, last_success=True)
    assert cache.lookup("P1\tuser1") is not None  # user1 is now the most recently used
    cache.insert("P1\tuser4", one, last_success=True)
    assert cache.lookup("P1\tuser2") is None
    assert {key for key in ("P1\tuser1", "P1\tuser3", "P1\tuser4") if cache.lookup(key)} == {
        "P1\tuser1",
        "P1\tuser3",
        "P1\tuser4",
    }
    assert cache.statistics().size_used == size * 3


def test_flush_all_or_some_users() -> None:
    cache = AuthCache(100_000, ttl=60, negative_ttl=60)
    for key in ("P1\talice", "P2\talice\t10.0.0.1", "P1\talice2", "P1\tbob", "P3+master\tbob"):
        cache.insert(key, entry(), last_success=True)
    assert cache.flush(["alice"]) == 2
    assert cache.lookup("P1\talice2") is not None
    assert cache.flush(["bob", "nobody"]) == 2
    assert cache.flush() == 1
    assert len(cache) == 0
    assert cache.statistics().size_used == 0


# -- the chain with a cache -----------------------------------------------------------------------


class CachedFake(FakePassdb):
    cache_key = "SELECT * FROM t WHERE user = '%u'"


class CachedVerifyingFake(FakeVerifyingPassdb):
    cache_key = "(uid=%u)"


def chain_with_cache(
    *passdbs: FakePassdb | tuple[FakePassdb, dict[str, Any]], clock: Clock, negative_ttl: float = 60
) -> PassdbChain:
    entries = []
    for item in passdbs:
        passdb, kw = item if isinstance(item, tuple) else (item, {})
        entries.append(ChainEntry.build(passdb_settings(**kw), passdb))
    cache = AuthCache(1 << 20, ttl=300, negative_ttl=negative_ttl, clock=clock)
    return PassdbChain(entries, verbose=True, cache=cache)


def users(host: str = "10.0.0.1", password: str = "pw") -> Mapping[str, Fields]:
    return {"alice": [("password", password), ("proxy", "Y"), ("host", host), ("destuser", None)]}


async def test_a_changed_row_does_not_change_routing_within_the_ttl() -> None:
    clock = Clock()
    passdb = CachedFake(users("10.0.0.1"))
    chain = chain_with_cache(passdb, clock=clock)
    first = (await chain.authenticate(make_request("alice", "pw"))).reply
    assert first.fields["host"] == "10.0.0.1"
    passdb.users = dict(users("10.0.0.2"))
    second = (await chain.authenticate(make_request("alice", "pw"))).reply
    assert second.status is AuthStatus.OK
    assert second.fields["host"] == "10.0.0.1"
    assert second.fields["pass"] == "pw"
    assert passdb.calls == ["alice"]
    clock.now += 301
    third = (await chain.authenticate(make_request("alice", "pw"))).reply
    assert third.fields["host"] == "10.0.0.2"
    assert passdb.calls == ["alice", "alice"]


async def test_wrong_password_after_a_success_asks_the_passdb_again() -> None:
    """The password may have been changed: a mismatch against a good entry is a miss."""
    clock = Clock()
    passdb = CachedFake(users(password="old"))
    chain = chain_with_cache(passdb, clock=clock)
    assert (await chain.authenticate(make_request("alice", "old"))).reply.status is AuthStatus.OK
    passdb.users = dict(users(password="new"))
    assert (await chain.authenticate(make_request("alice", "new"))).reply.status is AuthStatus.OK
    assert passdb.calls == ["alice", "alice"]
    # now the entry holds "new" and succeeded: the old password asks again, then fails
    assert (await chain.authenticate(make_request("alice", "old"))).reply.status is AuthStatus.FAIL
    assert passdb.calls == ["alice", "alice", "alice"]
    # that lookup stored a mismatch entry (last check failed): a wrong password is answered
    # from the cache until the negative TTL passes
    assert (
        await chain.authenticate(make_request("alice", "guess"))
    ).reply.status is AuthStatus.FAIL
    assert passdb.calls == ["alice", "alice", "alice"]
    assert (await chain.authenticate(make_request("alice", "new"))).reply.status is AuthStatus.OK
    assert passdb.calls == ["alice", "alice", "alice"]


async def test_unknown_users_are_cached_for_the_negative_ttl() -> None:
    clock = Clock()
    passdb = CachedFake({})
    chain = chain_with_cache(passdb, clock=clock, negative_ttl=30)
    for _ in range(2):
        reply = (await chain.authenticate(make_request("ghost", "pw"))).reply
        assert reply.status is AuthStatus.FAIL
    assert passdb.calls == ["ghost"]
    clock.now += 31
    await chain.authenticate(make_request("ghost", "pw"))
    assert passdb.calls == ["ghost", "ghost"]


async def test_temporary_failures_are_not_cached_but_fall_back_to_expired_entries() -> None:
    clock = Clock()
    passdb = CachedFake(users("10.0.0.1"))
    chain = chain_with_cache(passdb, clock=clock)
    await chain.authenticate(make_request("alice", "pw"))
    clock.now += 301
    passdb.error = PassdbTempFail("database down")
    reply = (await chain.authenticate(make_request("alice", "pw"))).reply
    assert reply.status is AuthStatus.OK  # "Falling back to expired data from cache"
    assert reply.fields["host"] == "10.0.0.1"
    # a user never seen gets the temporary failure
    missing = (await chain.authenticate(make_request("bob", "pw"))).reply
    assert missing.status is AuthStatus.TEMPFAIL


async def test_nopassword_entries_accept_any_password() -> None:
    clock = Clock()
    passdb = CachedFake(
        {"joe": [("password", None), ("nopassword", "Y"), ("proxy", "Y"), ("host", "h")]}
    )
    chain = chain_with_cache(passdb, clock=clock)
    for password in ("a", "b"):
        reply = (await chain.authenticate(make_request("joe", password))).reply
        assert reply.status is AuthStatus.OK
        assert reply.fields["pass"] == password
    assert passdb.calls == ["joe"]


async def test_user_rewrites_are_replayed_from_the_cache() -> None:
    clock = Clock()
    passdb = CachedFake({"joe": [("user", "joe@example.com"), ("password", "pw"), ("host", "h")]})
    chain = chain_with_cache(passdb, clock=clock)
    for _ in range(2):
        reply = (await chain.authenticate(make_request("joe", "pw"))).reply
        assert reply.user == "joe@example.com"
        assert reply.fields["original_user"] == "joe"
    assert passdb.calls == ["joe"]


async def test_a_passdb_that_checks_passwords_itself_caches_a_hash() -> None:
    """LDAP auth_bind: the password that worked is kept as a salted hash, then checked locally."""
    clock = Clock()
    passdb = CachedVerifyingFake({"alice": [("host", "h1")]}, {"alice": "secret"})
    chain = chain_with_cache(passdb, clock=clock)
    assert (await chain.authenticate(make_request("alice", "secret"))).reply.status is AuthStatus.OK
    assert (await chain.authenticate(make_request("alice", "secret"))).reply.status is AuthStatus.OK
    assert passdb.verify_calls == ["alice"]
    cache = chain.cache
    assert cache is not None
    hit = cache.lookup("P1\talice")
    assert hit is not None
    assert hit.node.value is not None
    password = hit.node.value.password
    assert password is not None
    assert password.startswith("{SSHA256}")
    assert "secret" not in password


async def test_entries_are_per_passdb_and_lookups_use_them_too() -> None:
    clock = Clock()
    first = CachedFake({})
    second = CachedFake(users("10.9.9.9"))
    chain = chain_with_cache(first, second, clock=clock)
    for _ in range(2):
        reply = (await chain.authenticate(make_request("alice", "pw"))).reply
        assert reply.fields["host"] == "10.9.9.9"
    looked_up = (await chain.lookup(make_request("alice"))).reply
    assert looked_up.fields["host"] == "10.9.9.9"
    assert (first.calls, second.calls) == (["alice"], ["alice"])


async def test_passdbs_without_a_cache_key_are_never_cached() -> None:
    clock = Clock()
    passdb = FakePassdb(users())
    chain = chain_with_cache(passdb, clock=clock)
    for _ in range(2):
        await chain.authenticate(make_request("alice", "pw"))
    assert passdb.calls == ["alice", "alice"]


async def test_user_disabled_is_not_cached() -> None:
    clock = Clock()
    passdb = CachedFake(users(), result=PassdbResult.USER_DISABLED)
    chain = chain_with_cache(passdb, clock=clock)
    for _ in range(2):
        assert (
            await chain.authenticate(make_request("alice", "pw"))
        ).reply.status is AuthStatus.FAIL
    assert passdb.calls == ["alice", "alice"]
