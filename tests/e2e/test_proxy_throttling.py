"""Throttling: the per-IP auth penalty and ``nodelay`` (spec §1.6, §11 "Auth penalty").

``auth_failure_delay = 0`` everywhere (the test configuration's default), so
the only waits are the penalty's.  Each test uses client addresses of its own.
"""

from __future__ import annotations

import pytest

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("protocol", "n"), [("imap", 130), ("pop3", 131)])
def test_a_failed_login_slows_down_the_next_one_from_that_ip(
    proxyd: ProxydRunner, backend_a: DovecotBackend, protocol: str, n: int
) -> None:
    port = ps.backend_port(backend_a, protocol)
    entries = [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, port))]
    running = ps.start(proxyd, entries)
    source = client_address(n)
    wrong = ps.login(running, protocol, "alice", "wrong", source_ip=source)
    assert wrong.line == ps.auth_failed(protocol)
    assert wrong.seconds < 1.5
    # the right password now waits out the penalty (4 s) ...
    penalised = ps.login(running, protocol, "alice", "alicepw", source_ip=source)
    assert penalised.ok
    assert 3.5 < penalised.seconds < 8
    # ... which the success reset
    assert ps.login(running, protocol, "alice", "alicepw", source_ip=source).seconds < 1.5
    # another address was never slowed down
    other = ps.login(running, protocol, "alice", "alicepw", source_ip=client_address(n + 10))
    assert other.seconds < 1.5


def test_nodelay_answers_failures_at_once_and_does_not_penalise(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """A passdb refusing with ``nodelay`` (here: ``result_success = return-fail``) is
    answered at once despite ``auth_failure_delay = 2s``, and leaves no penalty."""
    extra = (
        "passdb {\n  driver = static\n  args = nopassword=y nodelay=y\n"
        "  result_success = return-fail\n}\n"
    )
    running = ps.start(proxyd, [], extra=extra, auth_failure_delay="2s")
    source = client_address(132)
    for _ in range(3):
        answer = ps.login(running, "imap", "blocked", "whatever", source_ip=source)
        assert answer.line == ps.auth_failed("imap")
        assert answer.seconds < 1.0
