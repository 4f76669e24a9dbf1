"""How proxyd logs in to the backend: proxy_mech, master users, nopassword, pipelining,
reconnects, OAuth2 token forwarding, and nologin+host referrals (spec §2, §3).

Real Dovecot backends where the backend's verdict matters (its log says which
mechanism and user it saw); the recording backends where the exact bytes do.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_pop3 import RawPop3Client
from tests.e2e.test_pop3_backend_wire import Pop3Script, RecordingPop3Backend
from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend
from tests.fixtures.net import RECORDING_BACKEND_ADDRESS, client_address, free_port
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e



def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PortPop3Backend(RecordingPop3Backend):
    """The recording POP3 server on a given port."""

    def __init__(self, script: Pop3Script, port: int) -> None:
        super().__init__(script)
        self._server.close()
        self._server = socket.create_server((self.address, port))
        self._server.settimeout(0.1)
        self.port = port


# -- proxy_mech, master users, destuser ---------------------------------------------------------


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_backend_logins_seen_by_dovecot(
    proxyd: ProxydRunner, backend_a: DovecotBackend, protocol: str
) -> None:
    a = backend_a
    port = str(ps.backend_port(a, protocol))
    entries = [
        # proxy_mech=login: SASL LOGIN instead of the LOGIN command / USER+PASS
        PasswdEntry(
            "alice", "{PLAIN}alicepw", proxy_fields(a.address, int(port), proxy_mech="login")
        ),
        # master + pass: AUTHENTICATE PLAIN alice\0proxymaster\0masterpw
        PasswdEntry(
            "bob",
            "{PLAIN}proxy-side-pw",
            proxy_fields(a.address, int(port), master=MASTER_USER, **{"pass": MASTER_PASSWORD}),
        ),
        # destuser=user*master: the backend's auth_master_user_separator does the rest
        PasswdEntry(
            "carol",
            "{PLAIN}carolpw",
            proxy_fields(
                a.address,
                int(port),
                destuser=f"dave*{MASTER_USER}",
                **{"pass": MASTER_PASSWORD},
            ),
        ),
    ]
    running = ps.start(proxyd, entries)
    source = client_address(60)
    assert ps.login(running, protocol, "alice", "alicepw", source_ip=source).ok
    a.wait_for_log(rf"{protocol}-login: Info: Login: user=<alice>, method=LOGIN, rip={source},")
    # bob's backend password is bobpw: only the master login can have worked
    assert ps.login(running, protocol, "bob", "proxy-side-pw", source_ip=source).ok
    a.wait_for_log(rf"{protocol}-login: Info: Login: user=<bob>, method=PLAIN, rip={source},")
    # proxyd and Dovecot: "proxy(bob,IP:PORT): Started proxying to <IP> (master M) (N secs): ..."
    address = re.escape(a.address)
    running.wait_for_log(
        rf"proxy\(bob,{address}:\d+\): Started proxying to <{address}> \(master {MASTER_USER}\) \("
    )
    assert ps.login(running, protocol, "carol", "carolpw", source_ip=source).ok
    a.wait_for_log(rf"{protocol}-login: Info: Login: user=<dave>, method=PLAIN, rip={source},")
    running.wait_for_log(
        rf"proxy\(carol,{address}:\d+\): Started proxying to <{address}> as user dave\*{MASTER_USER} \("
    )


def test_master_user_login_to_proxyd_needs_master_passdbs(proxyd: ProxydRunner) -> None:
    """``auth_master_user_separator = *`` splits ``alice*admin`` like Dovecot; proxyd has
    no master passdbs, so such a login is refused with Dovecot's log text."""
    entries = [PasswdEntry("admin", "{PLAIN}adminpw", proxy_fields("127.0.0.2", 143))]
    running = ps.start(proxyd, entries, auth_master_user_separator="*", auth_verbose="yes")
    answer = ps.login(running, "imap", "alice*admin", "adminpw", source_ip=client_address(61))
    assert answer.line == ps.auth_failed("imap")
    running.wait_for_log(r"Master user login attempted without master passdbs")


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_nopassword_leaves_the_password_check_to_the_backend(
    proxyd: ProxydRunner, backend_b: DovecotBackend, protocol: str
) -> None:
    """Password forwarding: an empty password with ``nopassword``; the backend decides."""
    port = ps.backend_port(backend_b, protocol)
    entries = [PasswdEntry("bob", "", proxy_fields(backend_b.address, port, nopassword="y"))]
    # the backend's refusal is logged only with auth_verbose (client_proxy_log_failure())
    running = ps.start(proxyd, entries, auth_verbose="yes")
    assert ps.login(running, protocol, "bob", "bobpw", source_ip=client_address(62)).ok
    answer = ps.login(running, protocol, "bob", "not-bobs", source_ip=client_address(63))
    assert answer.line == ps.auth_failed(protocol)
    address = re.escape(backend_b.address)
    running.wait_for_log(rf"proxy\(bob,{address}:{port}\): Login failed: ")


# -- pipelining and reconnects -------------------------------------------------------------------


def test_proxy_nopipelining_waits_for_each_reply(proxyd: ProxydRunner) -> None:
    """With ``proxy_nopipelining`` nothing follows the ID until its tagged reply; a backend
    that never completes the ID therefore never sees the LOGIN (without it, it does)."""
    script = ImapScript(
        users={"alice": "alicepw", "bob": "bobpw"}, replies={"ID": ['* ID ("name" "stuck")']}
    )
    with RecordingImapBackend(script) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, proxy_nopipelining="y", proxy_timeout="2"),
            ),
            PasswdEntry(
                "bob", "{PLAIN}bobpw", proxy_fields(rec.address, rec.port, proxy_timeout="2")
            ),
        ]
        running = ps.start(proxyd, entries)
        answer = ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(64))
        assert answer.line == ps.unavailable("imap")
        # the local address is asked of the socket only now, for this line
        running.wait_for_log(r"Login timed out in state=id/banner \(after \d+ secs, local=[\d.]+:[1-9]\d*\)")
        assert all(conn.command_names() == ["ID"] for conn in rec.connections)
        before = rec.connection_count()
        # bob pipelines: his LOGIN goes out with the ID and the backend answers it
        assert ps.login(running, "imap", "bob", "bobpw", source_ip=client_address(65)).ok
        assert rec.connections[before].command_names()[:2] == ["ID", "LOGIN"]


def test_nopipelining_logs_in_after_each_reply(proxyd: ProxydRunner) -> None:
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, proxy_nopipelining="y"),
            )
        ]
        running = ps.start(proxyd, entries)
        assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(66)).ok
        assert rec.connections[0].command_names()[:2] == ["ID", "LOGIN"]


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_refused_connections_are_retried_every_second(proxyd: ProxydRunner, protocol: str) -> None:
    """The backend comes up 1.5 s after the client logs in: the login succeeds after reconnects."""
    port = free_port(RECORDING_BACKEND_ADDRESS)
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(RECORDING_BACKEND_ADDRESS, port))
    ]
    running = ps.start(proxyd, entries)
    backends: list[RecordingImapBackend | RecordingPop3Backend] = []

    def start_late() -> None:
        time.sleep(1.5)
        if protocol == "imap":
            backend: RecordingImapBackend | RecordingPop3Backend = RecordingImapBackend(
                ImapScript(users={"alice": "alicepw"}), port=port
            ).start()
        else:
            backend = PortPop3Backend(Pop3Script(), port).__enter__()
        backends.append(backend)

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        answer = ps.login(running, protocol, "alice", "alicepw", source_ip=client_address(67))
        assert answer.ok, answer
        assert 1.0 < answer.seconds < 6
        running.wait_for_log(r"proxy\(alice,[^)]+\): Started proxying to <[^>]+> \(\d+\.\d{3} secs, \d+ reconnects\)")
    finally:
        thread.join()
        for backend in backends:
            if isinstance(backend, RecordingImapBackend):
                backend.close()
            else:
                backend.__exit__()


# -- OAuth2 forwarding ---------------------------------------------------------------------------

OAUTH_SETTINGS = {
    "auth_mechanisms": "plain login xoauth2 oauthbearer",
}


def oauth_passdb(address: str, port: int) -> str:
    """A static passdb that accepts any token and forwards it with the client's mechanism."""
    return (
        "passdb {\n  driver = static\n"
        f"  args = nopassword=y proxy=y host={address} port={port} pass=%{{password}} proxy_mech=%m\n"
        "}\n"
    )


@pytest.mark.parametrize(
    ("mech", "message"),
    [
        ("XOAUTH2", b"user=alice\x01auth=Bearer ya29.token-value\x01\x01"),
        ("OAUTHBEARER", b"n,a=alice,\x01auth=Bearer ya29.token-value\x01\x01"),
    ],
)
def test_oauth2_token_is_forwarded_imap(proxyd: ProxydRunner, mech: str, message: bytes) -> None:
    script = ImapScript(
        replies={"AUTHENTICATE": ["{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in"]}
    )
    with RecordingImapBackend(script) as rec:
        running = ps.start(proxyd, [], extra=oauth_passdb(rec.address, rec.port), **OAUTH_SETTINGS)
        with RawImapClient(running.address(), running.port(), source_ip=client_address(68)) as c:
            assert f"AUTH={mech}" in c.greeting
            reply = c.command(f"AUTHENTICATE {mech} {b64(message)}")
            assert reply.tagged == "OK [CAPABILITY IMAP4rev1 IDLE] Logged in"
        [conn] = rec.wait_for_connections(1)
        [auth] = conn.find("AUTHENTICATE")
        assert auth.raw == f"L AUTHENTICATE {mech} {b64(message)}\r\n".encode()


def test_oauth2_token_is_forwarded_pop3(proxyd: ProxydRunner) -> None:
    message = b"user=alice\x01auth=Bearer tok\x01\x01"
    with RecordingPop3Backend(Pop3Script()) as rec:
        running = ps.start(proxyd, [], extra=oauth_passdb(rec.address, rec.port), **OAUTH_SETTINGS)
        with RawPop3Client(
            running.address("pop3"), running.port("pop3"), source_ip=client_address(69)
        ) as p:
            assert p.command(f"AUTH XOAUTH2 {b64(message)}") == "+OK Logged in."
        [conn] = rec.wait_for_connections(1)
        assert f"AUTH XOAUTH2 {b64(message)}" in conn.lines


def test_refused_token_gets_dovecots_json_then_no(proxyd: ProxydRunner) -> None:
    extra = "passdb {\n  driver = static\n  args = password=right-token proxy=y host=127.0.0.2\n}\n"
    running = ps.start(proxyd, [], extra=extra, **OAUTH_SETTINGS)
    with RawImapClient(running.address(), running.port(), source_ip=client_address(70)) as c:
        token = b64(b"n,a=alice,\x01auth=Bearer wrong-token\x01\x01")
        c.send_raw(f"a1 AUTHENTICATE OAUTHBEARER {token}\r\n".encode())
        assert c.read_line() == "+ " + b64(b'{"status":"invalid_token"}')
        c.send_raw(b"AQ==\r\n")
        assert c.read_line() == "a1 " + ps.auth_failed("imap")


# -- nologin + host: referrals -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_nologin_with_host_is_a_referral(proxyd: ProxydRunner, protocol: str) -> None:
    entries = [
        PasswdEntry(
            "alice@example.org",
            "{PLAIN}alicepw",
            {"nologin": "y", "host": "imap2.example.org", "port": "1143"},
        ),
        PasswdEntry(
            "bob", "{PLAIN}bobpw", {"nologin": "y", "host": "192.0.2.5", "reason": "Moved."}
        ),
    ]
    running = ps.start(proxyd, entries)
    source = client_address(71)
    alice = ps.login(running, protocol, "alice@example.org", "alicepw", source_ip=source)
    bob = ps.login(running, protocol, "bob", "bobpw", source_ip=source)
    if protocol == "imap":
        assert alice.line == (
            "NO [REFERRAL imap://alice%40example.org;AUTH=PLAIN@imap2.example.org:1143/]"
            " Try this server instead."
        )
        assert bob.line == "NO [REFERRAL imap://bob;AUTH=PLAIN@192.0.2.5/] Moved."
    else:
        assert alice.line == "-ERR Try this server instead."
        assert bob.line == "-ERR Moved."
