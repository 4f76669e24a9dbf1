"""Two proxyds in a row (spec §5.1 and §11 "Chains and loops").

Front proxyd A listens on 127.0.0.1, proxyd B on 127.0.0.5; B (and A) have
``login_trusted_networks = 127.0.0.0/8``, so B takes the client's address,
the address the client connected to, the session id, the TTL and forwarded
fields from A's ID / XCLIENT, and passes them on.  The backend behind B then
logs the original client IP.
"""

from __future__ import annotations

import base64
import re
import time

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_backend_wire import id_pairs
from tests.e2e.test_pop3_backend_wire import Pop3Script, RecordingPop3Backend
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import PROXYD_OTHER_ADDRESS, client_address, free_ports
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydConfig,
    ProxydProcess,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e

TRUSTED = "127.0.0.0/8"


def two_configs(runner: ProxydRunner, **a_settings: str) -> tuple[ProxydConfig, ProxydConfig]:
    a = ps.config(runner, [], name="a-users", login_trusted_networks=TRUSTED, **a_settings)
    b = ps.config(
        runner, [], address=PROXYD_OTHER_ADDRESS, name="b-users", login_trusted_networks=TRUSTED
    )
    return a, b


def chain(
    runner: ProxydRunner,
    a: ProxydConfig,
    b: ProxydConfig,
    a_entries: list[PasswdEntry],
    b_entries: list[PasswdEntry],
) -> tuple[ProxydProcess, ProxydProcess]:
    write_passwd_file(runner.workdir / "a-users", a_entries)
    write_passwd_file(runner.workdir / "b-users", b_entries)
    second = runner.start(b)
    first = runner.start(a)
    return first, second


def to_b(b: ProxydConfig, protocol: str, **fields: str) -> dict[str, str | None]:
    listener = b.listener(protocol)
    return proxy_fields(listener.address, listener.port, **fields)


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_backend_behind_two_proxies_logs_the_original_client(
    proxyd: ProxydRunner, backend_b: DovecotBackend, protocol: str
) -> None:
    a, b = two_configs(proxyd)
    port = ps.backend_port(backend_b, protocol)
    first, second = chain(
        proxyd,
        a,
        b,
        [PasswdEntry("bob", "{PLAIN}bobpw", to_b(b, protocol))],
        [PasswdEntry("bob", "{PLAIN}bobpw", proxy_fields(backend_b.address, port))],
    )
    source = client_address(50)
    probe = "STAT" if protocol == "pop3" else "SELECT INBOX"
    answer = ps.login(first, protocol, "bob", "bobpw", source_ip=source, then=probe)
    assert answer.ok, answer
    lines = backend_b.wait_for_log(
        rf"{protocol}-login: Info: Login: user=<bob>, method=\S+, rip={re.escape(source)}, "
    )
    # B logged the client too; IMAP's ID also carries the address the client
    # connected to at A, POP3's XCLIENT has no such attribute
    lip = a.listener(protocol).address if protocol == "imap" else b.listener(protocol).address
    # (proxyd and Dovecot: "proxy(bob,IP:PORT): Started proxying to <IP> (N secs): user=<bob>, ...")
    second.wait_for_log(
        rf"proxy\(bob,{re.escape(backend_b.address)}:\d+\): Started proxying to <{re.escape(backend_b.address)}> .*"
        rf"rip={re.escape(source)}, lip={re.escape(lip)}"
    )
    # the session id A gave the connection reaches the backend
    session = re.search(r"session=<([^>]+)>", lines[-1])
    assert session, lines[-1]
    first.wait_for_log(rf"user=<bob>.*session=<{re.escape(session.group(1))}>")


def test_imap_id_after_two_hops(proxyd: ProxydRunner) -> None:
    """B's ID to the backend: A's client and connected address, A's session id, TTL 3,
    and A's passdb ``forward_*`` fields (B forwards what it was given)."""
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec:
        a, b = two_configs(proxyd)
        first, _second = chain(
            proxyd,
            a,
            b,
            [PasswdEntry("alice", "{PLAIN}alicepw", to_b(b, "imap", forward_tenant="acme"))],
            [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(rec.address, rec.port))],
        )
        source = client_address(51)
        assert ps.login(first, "imap", "alice", "alicepw", source_ip=source).ok
        [conn] = rec.wait_for_connections(1)
        conn.closed.wait(5)
        pairs = id_pairs(conn.find("ID")[0].args[0])
        assert pairs["x-originating-ip"] == source
        assert pairs["x-connected-ip"] == a.listener("imap").address
        assert pairs["x-connected-port"] == str(a.listener("imap").port)
        assert pairs["x-proxy-ttl"] == "3"
        assert pairs["x-forward-tenant"] == "acme"
        first.wait_for_log(rf"session=<{re.escape(str(pairs['x-session-id']))}>")


def test_pop3_xclient_after_two_hops(proxyd: ProxydRunner) -> None:
    with RecordingPop3Backend(Pop3Script()) as rec:
        a, b = two_configs(proxyd)
        first, _second = chain(
            proxyd,
            a,
            b,
            [PasswdEntry("alice", "{PLAIN}alicepw", to_b(b, "pop3", forward_tenant="acme"))],
            [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(rec.address, rec.port))],
        )
        source = client_address(52)
        assert ps.login(first, "pop3", "alice", "alicepw", source_ip=source).ok
        [conn] = rec.wait_for_connections(1)
        xclient = next(line for line in conn.lines if line.startswith("XCLIENT "))
        params = dict(item.split("=", 1) for item in xclient.split()[1:])
        assert params["ADDR"] == source
        assert params["TTL"] == "3"
        assert base64.b64decode(params["FORWARD"]) == b"tenant=acme"
        first.wait_for_log(rf"session=<{re.escape(params['SESSION'])}>")


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_a_to_b_to_a_is_caught_at_b_as_a_loop(proxyd: ProxydRunner, protocol: str) -> None:
    """B is told to proxy to the address and port the client used at A.

    IMAP: B sees that through A's forwarded connected address (ID
    ``x-connected-ip``/``-port``) and refuses; A retries, then gives up.  POP3's
    XCLIENT carries no connected address, so there the TTL stops the loop.
    """
    a, b = two_configs(proxyd, login_proxy_timeout="3s")
    back = a.listener(protocol)
    first, second = chain(
        proxyd,
        a,
        b,
        [PasswdEntry("alice", "{PLAIN}alicepw", to_b(b, protocol))],
        [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(back.address, back.port))],
    )
    answer = ps.login(first, protocol, "alice", "alicepw", source_ip=client_address(53))
    if protocol == "pop3":
        assert answer.line == ps.serverbug(protocol)
        first.wait_for_log(r"TTL reached zero - proxies appear to be looping\?")
        return
    assert answer.line == ps.unavailable(protocol)
    assert len(second.wait_for_log(r"proxy\(alice\): Proxying loops to itself")) >= 2  # A retried


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_a_loop_through_another_port_runs_out_of_ttl(proxyd: ProxydRunner, protocol: str) -> None:
    """A -> B -> A (on a second port) -> B -> A: the TTL goes 5, 4, 3, 2, 1 and A refuses."""
    a, b = two_configs(proxyd)
    other_port = free_ports(a.listeners[0].address, 1)[0]
    service = "imap-login" if protocol == "imap" else "pop3-login"
    a.listeners.append(Listener(service, f"{protocol}-loop", a.listeners[0].address, other_port))
    first, _second = chain(
        proxyd,
        a,
        b,
        [PasswdEntry("alice", "{PLAIN}alicepw", to_b(b, protocol))],
        [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(a.listeners[0].address, other_port))],
    )
    started = time.monotonic()
    answer = ps.login(first, protocol, "alice", "alicepw", source_ip=client_address(54))
    assert answer.line == ps.serverbug(protocol)
    assert time.monotonic() - started < 10  # no retries: a REMOTE_CONFIG failure is final
    first.wait_for_log(r"TTL reached zero - proxies appear to be looping\?")
