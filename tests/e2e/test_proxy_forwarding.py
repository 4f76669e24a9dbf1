"""Forwarding to the backend: ID ``x-*`` and ``x-forward-*``, ``imap_id_retain``, POP3
XCLIENT ``FORWARD=``, ``proxy_not_trusted``, and the capability refresh after login
(spec §3.1, §3.2, seed "ID command forwarding", "v2.2.29+").
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_backend_wire import id_pairs
from tests.e2e.test_pop3_backend_wire import Pop3Script, RecordingPop3Backend
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e


def test_id_carries_forward_fields_and_the_retained_client_id(proxyd: ProxydRunner) -> None:
    """With ``imap_id_retain = yes`` the client's own ID pairs go first, then Dovecot's
    ``x-*`` pairs, then every passdb ``forward_*`` field as ``x-forward-*``."""
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, forward_tenant="acme", forward_plan="gold"),
            )
        ]
        running = ps.start(proxyd, entries, imap_id_retain="yes")
        source = client_address(150)
        with RawImapClient(running.address(), running.port(), source_ip=source) as client:
            assert client.command('ID ("name" "Thunderbird" "version" "115.0")').status == "OK"
            assert client.command("LOGIN alice alicepw").status == "OK"
            client.command("LOGOUT")
        [conn] = rec.wait_for_connections(1)
        conn.closed.wait(5)
        [id_command] = conn.find("ID")
        arg = id_command.args[0]
        assert isinstance(arg, list)
        assert arg[:4] == ["name", "Thunderbird", "version", "115.0"]
        pairs = id_pairs(arg)
        assert pairs["x-originating-ip"] == source
        assert pairs["x-proxy-ttl"] == "4"
        assert pairs["x-forward-tenant"] == "acme"
        assert pairs["x-forward-plan"] == "gold"
        assert re.search(
            rb'"x-proxy-ttl" "4" "x-forward-\w+" "\w+" "x-forward-\w+" "\w+"\)\r\n$', id_command.raw
        )


def test_proxy_not_trusted_sends_no_id(proxyd: ProxydRunner) -> None:
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, proxy_not_trusted="y", forward_tenant="acme"),
            )
        ]
        running = ps.start(proxyd, entries)
        assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(151)).ok
        [conn] = rec.wait_for_connections(1)
        conn.closed.wait(5)
        assert "ID" not in conn.command_names()
        assert conn.command_names()[0] == "LOGIN"


def test_pop3_xclient_forward(proxyd: ProxydRunner) -> None:
    with RecordingPop3Backend(Pop3Script()) as rec:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, forward_tenant="acme", forward_plan="gold"),
            ),
            PasswdEntry(
                "bob", "{PLAIN}bobpw", proxy_fields(rec.address, rec.port, proxy_not_trusted="y")
            ),
        ]
        running = ps.start(proxyd, entries)
        source = client_address(152)
        assert ps.login(running, "pop3", "alice", "alicepw", source_ip=source).ok
        assert ps.login(running, "pop3", "bob", "bobpw", source_ip=source).ok
        first, second = rec.wait_for_connections(2)
        xclient = next(line for line in first.lines if line.startswith("XCLIENT "))
        params = dict(item.split("=", 1) for item in xclient.split()[1:])
        assert params["ADDR"] == source
        assert params["TTL"] == "4"
        assert base64.b64decode(params["FORWARD"]).split(b"\t") == [b"tenant=acme", b"plan=gold"]
        assert not any(line.startswith("XCLIENT") for line in second.lines)


def test_capabilities_are_refreshed_after_login(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """The backend's post-login capabilities reach the client: in the tagged OK, or as an
    untagged CAPABILITY for a client that asked before logging in."""
    entries = [
        PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))
    ]
    running = ps.start(proxyd, entries)
    source = client_address(153)
    with RawImapClient(running.address(), running.port(), source_ip=source) as client:
        pre_login = client.greeting
        reply = client.command("LOGIN alice alicepw")
        assert reply.status == "OK"
        match = re.match(r"OK \[CAPABILITY ([^\]]+)\]", reply.tagged)
        assert match, reply.tagged
        post_login = match.group(1).split()
        # Dovecot's post-login list has what proxyd's pre-login banner does not
        assert "SORT" in post_login
        assert "SORT" not in pre_login
        assert "AUTH=PLAIN" not in post_login
    with RawImapClient(running.address(), running.port(), source_ip=source) as client:
        assert "SORT" not in client.capabilities()
        reply = client.command("LOGIN alice alicepw")
        [untagged] = [line for line in reply.untagged if line.startswith("* CAPABILITY ")]
        assert "SORT" in untagged.split()
        assert not reply.tagged.startswith("OK [CAPABILITY")
