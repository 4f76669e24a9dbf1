"""Source addresses towards backends: passdb ``source_ip`` and ``login_source_ips``
(round robin per login process, ``?`` keeps only local addresses, host names give
all their addresses) (spec §5.2, seed "v2.2.14+").

The recording backends see where each connection came from.  ``service_count
= 0`` puts all sessions of a protocol into one login process, so the round
robin is visible (it is per process, as in Dovecot).
"""

from __future__ import annotations

import pytest

from tests.e2e import proxy_support as ps
from tests.e2e.test_pop3_backend_wire import Pop3Script, RecordingPop3Backend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import REFERENCE, PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.recording_backend import ImapScript, RecordingImapBackend

pytestmark = pytest.mark.e2e

ONE_PROCESS = """
service imap-login {
  service_count = 0
}
service pop3-login {
  service_count = 0
}
"""


class Pop3Peers(RecordingPop3Backend):
    """The recording POP3 server, remembering each connection's peer address."""

    def __init__(self) -> None:
        super().__init__(Pop3Script())
        self.peers: list[str] = []

    def _serve(self, sock, recorded):  # type: ignore[no-untyped-def]
        self.peers.append(sock.getpeername()[0])
        super()._serve(sock, recorded)


def imap_peers(rec: RecordingImapBackend) -> list[str]:
    return [conn.peer[0] for conn in rec.connections]


def test_passdb_source_ip(proxyd: ProxydRunner) -> None:
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec, Pop3Peers() as pop:
        entries = [
            PasswdEntry(
                "alice",
                "{PLAIN}alicepw",
                proxy_fields(rec.address, rec.port, source_ip="127.0.0.35"),
            ),
            PasswdEntry(
                "bob", "{PLAIN}bobpw", proxy_fields(pop.address, pop.port, source_ip="127.0.0.36")
            ),
        ]
        running = ps.start(proxyd, entries, login_source_ips="127.0.0.30")
        assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(140)).ok
        assert ps.login(running, "pop3", "bob", "bobpw", source_ip=client_address(140)).ok
        assert imap_peers(rec) == ["127.0.0.35"]
        assert pop.peers == ["127.0.0.36"]
        running.wait_for_log(
            r"proxy\(alice,127\.0\.0\.4:\d+\): Started proxying to <127\.0\.0\.4> from 127\.0\.0\.35 "
        )


@pytest.mark.parametrize("protocol", ps.PROTOCOLS)
def test_login_source_ips_round_robin_skips_foreign_addresses(
    proxyd: ProxydRunner, protocol: str
) -> None:
    """``?`` drops 192.0.2.1 (not an address of this host); the others take turns."""
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec, Pop3Peers() as pop:
        port = rec.port if protocol == "imap" else pop.port
        entries = [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(rec.address, port))]
        running = ps.start(
            proxyd,
            entries,
            extra=ONE_PROCESS,
            login_source_ips="?127.0.0.31, 192.0.2.1 127.0.0.32 127.0.0.33",
        )
        for n in range(6):
            assert ps.login(
                running, protocol, "alice", "alicepw", source_ip=client_address(141)
            ).ok, n
        peers = imap_peers(rec) if protocol == "imap" else pop.peers
        assert len(peers) == 6
        assert set(peers) == {"127.0.0.31", "127.0.0.32", "127.0.0.33"}
        order = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]
        start = order.index(peers[0])
        assert peers == [order[(start + i) % 3] for i in range(6)]


def test_login_source_ips_host_names(proxyd: ProxydRunner) -> None:
    """A name gives all its addresses: ``localhost`` is 127.0.0.1 (/etc/hosts)."""
    with RecordingImapBackend(ImapScript(users={"alice": "alicepw"})) as rec:
        entries = [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(rec.address, rec.port))]
        running = ps.start(
            proxyd, entries, extra=ONE_PROCESS, login_source_ips="localhost 127.0.0.34"
        )
        for _ in range(4):
            assert ps.login(running, "imap", "alice", "alicepw", source_ip=client_address(142)).ok
        assert sorted(imap_peers(rec)) == ["127.0.0.1", "127.0.0.1", "127.0.0.34", "127.0.0.34"]
        if REFERENCE != "dovecot":
            result = proxyd.run("-c", str(running.config_path), "-n")
            assert "login_source_ips = localhost 127.0.0.34" in result.stdout
