"""The master in its deployed shape: stop signals at any moment, idle login processes,
listeners that must not be bound, and service settings checked by ``proxyd -n``."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import port_accepts
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import RawImapClient
from tests.master.test_process_model import static_config

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

#: seconds after the listeners accept at which SIGTERM arrives (bounded: each is one start)
STOP_DELAYS = (0.0, 0.0, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3)


def test_sigterm_at_any_moment_of_the_start_up_is_a_clean_stop(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """The listeners accept as soon as they are bound, before the master's event loop
    runs: a SIGTERM from then on (a client, an init script that saw the port open) stops
    proxyd with status 0, never kills it by the signal."""
    for delay in STOP_DELAYS:
        running = proxyd.start(static_config(proxyd, backend_a))
        time.sleep(delay)
        assert running.stop() == 0, (delay, running.log_text())


def test_ssl_no_leaves_the_ssl_listeners_unbound(proxyd: ProxydRunner, backend_a: DovecotBackend) -> None:
    """``ssl = no`` with the stock ``imaps`` listener (``ssl = yes``): Dovecot does not bind
    it, so a client gets "connection refused" rather than a connection dropped in silence."""
    config = proxyd.config(None, ssl="no", ssl_cert=None, ssl_key=None)
    config.passdbs.append(
        {"driver": "static", "args": f"nopassword=y proxy=y host={backend_a.address} port={backend_a.imap_port}"}
    )
    running = proxyd.start(config)
    assert not port_accepts(running.address("imaps"), running.port("imaps"))
    with RawImapClient(running.address(), running.port()) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
