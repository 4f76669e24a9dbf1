"""Loops and "is this host me?": proxy to itself, proxy_maybe, auth_proxy_self, proxy_always,
proxyd_local_backend, hostip and host names (spec §4, §11 "Chains and loops").

proxyd listens on 127.0.0.1.  ``backend-local`` (an address of its own) stands for the
mail store on this node: it listens on the default ports 143 and 110 as well,
so one port-less ``proxyd_local_backend = <its address>`` serves IMAP and POP3.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields, write_passwd_file
from tests.helpers.clients import RawImapClient
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

backend_local = ps.backend_local  # the fixture


def pw(user: str) -> str:
    return f"{{PLAIN}}{user}pw"


def subject_line(answer: ps.Answer) -> str:
    return "\n".join(answer.untagged)


# -- proxy to ourselves ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_proxy_to_our_own_address_and_port_is_refused(proxyd: ProxydRunner, protocol: str) -> None:
    """``proxy host=<our IP> port=<our port>``: "Proxying loops to itself", the client gets
    the generic temporary failure and stays connected."""
    cfg = ps.config(proxyd, [])
    own = cfg.listener(protocol)
    write_passwd_file(
        proxyd.workdir / "users",
        [PasswdEntry("alice", pw("alice"), proxy_fields(own.address, own.port))],
    )
    running = proxyd.start(cfg)
    answer = ps.login(running, protocol, "alice", "alicepw", source_ip=client_address(40))
    assert answer.line == ps.unavailable(protocol)
    running.wait_for_log(r"proxy\(alice\): Proxying loops to itself")


# -- proxy_maybe ------------------------------------------------------------------------------------


@pytest.fixture
def maybe_entries(backend_a: DovecotBackend, backend_local: DovecotBackend) -> list[PasswdEntry]:
    a = backend_a
    return [
        # host is this node (proxyd's own 127.0.0.1): logged in "locally"
        PasswdEntry("alice", pw("alice"), {"proxy_maybe": "y", "host": "127.0.0.1"}),
        # host is an auth_proxy_self address: also this node
        PasswdEntry("bob", pw("bob"), {"proxy_maybe": "y", "host": "127.0.0.77"}),
        # host is another node: proxied there (the port makes 127.0.0.2 "not us" below)
        PasswdEntry("dave", pw("dave"), {"proxy_maybe": "y", "host": a.address, "port": "{port}"}),
        # a name that resolves to this node (/etc/hosts)
        PasswdEntry(
            "localuser",
            pw("localuser"),
            {"proxy_maybe": "y", "host": "localhost", "destuser": "alice"},
        ),
        # proxy_always + self: Dovecot leaves the host to a director; proxyd has none
        PasswdEntry(
            "director",
            pw("director"),
            {"proxy_maybe": "y", "proxy_always": "y", "host": "127.0.0.1"},
        ),
    ]


def write_maybe(
    proxyd: ProxydRunner, entries: list[PasswdEntry], backend_a: DovecotBackend, protocol: str
) -> None:
    port = str(ps.backend_port(backend_a, protocol))
    fixed = [
        PasswdEntry(
            e.user, e.password, {k: (v.format(port=port) if v else v) for k, v in e.fields.items()}
        )
        for e in entries
    ]
    write_passwd_file(proxyd.workdir / "users", fixed)


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_proxy_maybe(
    proxyd: ProxydRunner,
    maybe_entries: list[PasswdEntry],
    backend_a: DovecotBackend,
    backend_local: DovecotBackend,
    protocol: str,
) -> None:
    cfg = ps.config(
        proxyd,
        [],
        auth_proxy_self="127.0.0.77 127.0.0.2",
        proxyd_local_backend=backend_local.address,
        auth_verbose="yes",  # the backends' refusals below are logged only then
    )
    write_maybe(proxyd, maybe_entries, backend_a, protocol)
    running = proxyd.start(cfg)
    source = client_address(41)
    probe = "STAT" if protocol == "pop3" else None

    # alice: host=127.0.0.1 is where the client connected: local backend, default port
    answer = ps.login(running, protocol, "alice", "alicepw", source_ip=source, then=probe)
    assert answer.ok, answer
    default_port = 143 if protocol == "imap" else 110
    local = re.escape(backend_local.address)
    running.wait_for_log(rf"proxy\(alice,{local}:{default_port}\): Started proxying to <{local}> ")
    backend_local.wait_for_log(
        rf"{protocol}-login: Info: Login: user=<alice>.*rip={re.escape(source)}"
    )

    # bob: auth_proxy_self
    assert ps.login(running, protocol, "bob", "bobpw", source_ip=source).ok
    running.wait_for_log(rf"proxy\(bob,{local}:{default_port}\): Started proxying to <{local}> ")

    # dave: 127.0.0.2 is in auth_proxy_self, but the passdb port is not ours: proxied
    assert ps.login(running, protocol, "dave", "davepw", source_ip=source).ok is False
    # (dave's password on the backends is carolpw: the backend refused him, so he was proxied)
    running.wait_for_log(rf"proxy\(dave,{re.escape(backend_a.address)}:\d+\): Login failed: ")

    # localuser: host=localhost resolves to 127.0.0.1 in the auth process: self;
    # destuser is dropped with the other proxy fields, so the local login is localuser's
    assert not ps.login(running, protocol, "localuser", "localuserpw", source_ip=source).ok
    running.wait_for_log(rf"proxy\(localuser,{local}:{default_port}\): Login failed: ")

    # director: proxy_always + self gives a bare "proxy" without host
    answer = ps.login(running, protocol, "director", "directorpw", source_ip=source)
    assert answer.line == ps.unavailable(protocol)
    running.wait_for_log(r"proxy\(director\): host not given")


def test_proxy_maybe_self_without_a_local_backend_is_refused(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    entries = [PasswdEntry("alice", pw("alice"), {"proxy_maybe": "y", "host": "127.0.0.1"})]
    running = ps.start(proxyd, entries)
    answer = ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(42))
    assert answer.line == ps.serverbug("imap")
    running.wait_for_log(
        r"proxy_maybe: host 127\.0\.0\.1 is this node, but .*proxyd_local_backend is not set"
    )


# -- host names and hostip ----------------------------------------------------------------------


def test_host_name_is_resolved_in_the_auth_process(proxyd: ProxydRunner) -> None:
    """``host=localhost`` (from /etc/hosts): the auth process adds ``hostip=127.0.0.1``."""
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"}), address="127.0.0.1") as rec:
        entries = [PasswdEntry("alice", pw("alice"), proxy_fields("localhost", rec.port))]
        running = ps.start(proxyd, entries)
        assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(43)).ok
        [conn] = rec.wait_for_connections(1)
        assert conn.credentials == [("", "alice", "alicepw")]
        running.wait_for_log(rf"proxy\(alice,127\.0\.0\.1:{rec.port}\): Started proxying to <127\.0\.0\.1> \(<localhost>\) ")
        result = proxyd.proxyctl("-c", str(running.config_path), "auth", "test", "alice")
        assert "hostip=127.0.0.1" in result.stdout.splitlines(), result.stdout


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_hostip_is_used_without_dns(
    proxyd: ProxydRunner, backend_b: DovecotBackend, protocol: str
) -> None:
    port = ps.backend_port(backend_b, protocol)
    entries = [
        PasswdEntry(
            "bob",
            pw("bob"),
            proxy_fields("imap.nonexistent.invalid", port, hostip=backend_b.address),
        ),
        PasswdEntry("eve", pw("eve"), proxy_fields("imap.nonexistent.invalid", port)),
    ]
    running = ps.start(proxyd, entries)
    assert ps.login(running, protocol, "bob", "bobpw", source_ip=client_address(44)).ok
    address = re.escape(backend_b.address)
    running.wait_for_log(
        rf"proxy\(bob,{address}:{port}\): Started proxying to <{address}> \(<imap\.nonexistent\.invalid>\) "
    )
    # a name that does not resolve: the auth process fails the login temporarily
    answer = ps.login(running, protocol, "eve", "evepw", source_ip=client_address(45))
    expected = (
        "NO [UNAVAILABLE] Temporary authentication failure."
        if protocol == "imap"
        else "-ERR [SYS/TEMP] Temporary authentication failure."
    )
    assert answer.line.startswith(expected), answer
    running.wait_for_log(r"DNS lookup for imap\.nonexistent\.invalid failed")


def test_ttl_reached_zero_is_a_serverbug(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """A trusted peer that says ``x-proxy-ttl 1``: proxyd refuses to go on (spec §4.1)."""
    entries = [
        PasswdEntry("alice", pw("alice"), proxy_fields(backend_a.address, backend_a.imap_port))
    ]
    running = ps.start(proxyd, entries, login_trusted_networks="127.0.0.0/8")
    with RawImapClient(running.address(), running.port(), source_ip=client_address(46)) as client:
        assert client.command('ID ("x-proxy-ttl" "1")').status == "OK"
        reply = client.command("LOGIN alice alicepw")
        assert reply.tagged == ps.serverbug("imap")
    running.wait_for_log(
        rf"proxy\(alice,{re.escape(backend_a.address)}:{backend_a.imap_port}\): "
        r"Aborting due to remote server: TTL reached zero - proxies appear to be looping\?"
    )
    # with a TTL left the same login works
    started = time.monotonic()
    assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(47)).ok
    assert time.monotonic() - started < 5
