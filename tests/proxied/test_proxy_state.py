"""Per-process proxy state (proxyd.proxied.proxystate) and the passdb field parser (proxyfields).

The disconnect pacing follows Dovecot's ``login_proxy_delay_disconnect()``
(spec §5.3); times run on trio's autojump clock.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from proxyd.login.proxyfields import (
    ProxyFieldError,
    is_ourself,
    parse_proxy_target,
    parse_referral,
)
from proxyd.protocols.imap.plugin import referral_url
from proxyd.proxied.proxystate import BackendRecord, ProxyState

# -- login_source_ips ------------------------------------------------------------------------


def test_source_ips_round_robin_from_a_random_start() -> None:
    state = ProxyState(source_ips=("10.0.0.1", "10.0.0.2", "10.0.0.3"), rng=random.Random(7))
    picked = [state.next_source_ip() for _ in range(7)]
    start = picked[0]
    order = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    i = order.index(start)
    assert picked == [order[(i + n) % 3] for n in range(7)]
    starts = {ProxyState(source_ips=tuple(order)).next_source_ip() for _ in range(60)}
    assert len(starts) > 1  # the start is random per process


def test_passdb_source_ip_wins_and_does_not_advance_the_rotation() -> None:
    state = ProxyState(source_ips=("10.0.0.1", "10.0.0.2"), rng=random.Random(1))
    first = state.next_source_ip()
    assert state.next_source_ip("192.0.2.1") == "192.0.2.1"
    assert state.next_source_ip() != first
    assert ProxyState().next_source_ip() == ""


# -- "Host is down" ------------------------------------------------------------------------------


async def test_host_is_down_only_after_failing_longer_than_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state = ProxyState()
    record = state.record("192.0.2.1", 143)
    record.num_waiting_connections = 2
    assert not state.host_is_down(record, 30)  # first use: last_success = now - 1
    await trio.sleep(40)
    state.connect_failed(record)
    assert state.host_is_down(record, 30)
    # but not when this is the only connection waiting, nor with the check off
    record.num_waiting_connections = 1
    assert not state.host_is_down(record, 30)
    record.num_waiting_connections = 2
    assert not state.host_is_down(record, 0)
    state.connected(record)
    assert not state.host_is_down(record, 30)


# -- disconnect pacing ------------------------------------------------------------------------------


async def test_no_delay_when_disabled(autojump_clock: trio.testing.MockClock) -> None:
    state = ProxyState(max_disconnect_delay=0)
    record = BackendRecord(num_proxying_connections=100)
    assert [state.disconnect_delay(record) for _ in range(100)] == [0.0] * 100


async def test_disconnects_of_a_dead_backend_are_spread_over_max_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """100 sessions, 10 s: the first 10 go at once, the rest on a 100 ms grid up to 10 s."""
    state = ProxyState(max_disconnect_delay=10, rng=random.Random(3))
    record = BackendRecord()
    for _ in range(100):
        state.connected(record)
    delays = []
    for _ in range(100):
        state.disconnected(record)
        delays.append(state.disconnect_delay(record))
    assert delays[:10] == [0.0] * 10
    assert all(d > 0 for d in delays[10:])
    assert delays == sorted(delays)
    assert max(delays) <= 10.1
    assert max(delays) >= 9.9
    # each slot is on the 100 ms grid from the (randomised) start
    start = delays[10] - 1.1
    for delay in delays[10:]:
        assert round((delay - start) * 10, 6) == pytest.approx(round((delay - start) * 10))
    assert record.num_delayed_client_disconnects == 90
    for _ in range(90):
        state.delayed_disconnect_done(record)
    # the last delayed disconnect resets the count: a new wave starts fresh
    assert record.num_disconnects_since_ts == 0


async def test_a_few_disconnects_go_at_once(autojump_clock: trio.testing.MockClock) -> None:
    state = ProxyState(max_disconnect_delay=10)
    record = BackendRecord()
    for _ in range(5):
        state.connected(record)
    state.disconnected(record)
    assert state.disconnect_delay(record) == 0.0


# -- passdb fields -------------------------------------------------------------------------------


def target(**fields: str):  # type: ignore[no-untyped-def]
    base = {"proxy": "", "host": "192.0.2.5", "pass": "pw"}
    return parse_proxy_target("alice", base | fields, default_port=143, default_ssl_port=993)


def test_source_ip_and_failure_after() -> None:
    t = target(source_ip="127.0.0.9", proxy_host_immediate_failure_after="5s")
    assert (t.source_ip, t.host_immediate_failure_after) == ("127.0.0.9", 5.0)
    assert target(source_ip="not-an-ip").source_ip == ""
    assert target().host_immediate_failure_after == 30.0


def test_warnings_instead_of_failures() -> None:
    t = target(port="99999", proxy_timeout="soon", proxy_host_immediate_failure_after="x")
    assert t.port == 143
    assert t.timeout is None
    assert t.warnings == (
        "Auth service returned invalid port number: 99999",
        "BUG: Auth service returned invalid proxy_timeout value 'soon'",
        "BUG: Auth service returned invalid proxy_host_immediate_failure_after value 'x'",
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"host": "mail.example"},
            "BUG: host mail.example is not an IP (auth should have changed it)",
        ),
        ({"hostip": "x"}, "Invalid hostip x"),
        ({"host": ""}, "host not given"),
        ({"proxy_mech": "cram-md5"}, "Unsupported SASL mechanism cram-md5"),
    ],
)
def test_refusals(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ProxyFieldError) as info:
        target(**fields)
    assert str(info.value) == message


def test_host_name_with_hostip_and_fields_acted_on_elsewhere() -> None:
    t = target(host="mail.example", hostip="192.0.2.8", proxy_always="y", proxy_refresh="60")
    assert (t.host, t.ip) == ("mail.example", "192.0.2.8")
    assert target(proxy_mech="xoauth2").mech == "XOAUTH2"


def test_is_ourself_needs_ip_port_and_user() -> None:
    t = target(host="127.0.0.1", port="143")
    assert is_ourself(t, user="alice", local_ip="127.0.0.1", local_port=143)
    assert not is_ourself(t, user="alice", local_ip="127.0.0.1", local_port=993)
    assert not is_ourself(t, user="alice", local_ip="127.0.0.2", local_port=143)
    assert not is_ourself(
        target(host="127.0.0.1", port="143", destuser="bob"),
        user="alice",
        local_ip="127.0.0.1",
        local_port=143,
    )
    named = target(host="localhost", hostip="127.0.0.1", port="143")
    assert not is_ourself(named, user="alice", local_ip="127.0.0.1", local_port=143)


def test_referral() -> None:
    r = parse_referral(
        "alice", {"nologin": "", "host": "imap2.example", "port": "1143"}, default_port=143
    )
    assert r is not None
    assert (r.host, r.port, r.destuser, r.reason) == (
        "imap2.example",
        1143,
        "alice",
        "Try this server instead.",
    )
    r = parse_referral(
        "alice", {"host": "h", "destuser": "a@b", "reason": "Moved"}, default_port=143
    )
    assert r is not None
    assert (r.port, r.destuser, r.reason) == (143, "a@b", "Moved")
    assert parse_referral("alice", {"nologin": ""}, default_port=143) is None


@pytest.mark.parametrize(
    ("user", "mech", "host", "port", "url"),
    [
        ("alice", "PLAIN", "imap2.example", 143, "imap://alice;AUTH=PLAIN@imap2.example/"),
        ("alice", "PLAIN", "192.0.2.5", 1143, "imap://alice;AUTH=PLAIN@192.0.2.5:1143/"),
        ("a@b;c:d e", "LOGIN", "h", 143, "imap://a%40b%3bc%3ad%20e;AUTH=LOGIN@h/"),
        ("bob", "PLAIN", "2001:db8::1", 143, "imap://bob;AUTH=PLAIN@[2001:db8::1]/"),
    ],
)
def test_referral_url_is_dovecots(user: str, mech: str, host: str, port: int, url: str) -> None:
    assert referral_url(user, mech, host, port) == url
