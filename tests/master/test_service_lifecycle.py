"""The master in its deployed shape: stop signals at any moment, idle login processes,
listeners that must not be bound, and service settings checked by ``proxyd -n``."""

from __future__ import annotations

import poplib
import time

import pytest

from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address, free_ports, port_accepts
from tests.fixtures.proxyd import Listener, ProxydRunner
from tests.helpers.clients import RawImapClient
from tests.master.test_process_model import static_config, wait_count

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

#: seconds after the listeners accept at which SIGTERM arrives (bounded: each is one start)
STOP_DELAYS = (0.0, 0.0, 0.003, 0.01, 0.05, 0.2)


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


def test_process_min_avail_0_leaves_no_idle_login_process(
    proxyd: ProxydRunner, backend_a: DovecotBackend, backend_b: DovecotBackend
) -> None:
    """``service_count = 1`` with ``process_min_avail = 0`` (Dovecot's defaults): a login
    process is forked for each client that connects, none is kept waiting, and once every
    client has gone no imap-login or pop3-login process is left."""
    config = static_config(proxyd, backend_a, process_min_avail="0", service_count="1")
    pop3_port = free_ports(config.listeners[0].address, 1)[0]
    config.set(protocols="imap pop3")
    config.listeners.append(Listener("pop3-login", "pop3", config.listeners[0].address, pop3_port))
    master = proxyd.start(config)
    titles = ("proxyd: imap-login", "proxyd: pop3-login")
    for title in titles:  # the fixture's own probe connections are gone, and their processes
        wait_count(master, title, 0)
    imap = [RawImapClient(master.address(), master.port(), source_ip=client_address(60 + i)) for i in range(2)]
    pop3 = poplib.POP3(master.address("pop3"), master.port("pop3"), timeout=10)
    try:
        assert all(client.greeting.startswith("* OK ") for client in imap)
        assert pop3.getwelcome().startswith(b"+OK")
        wait_count(master, "proxyd: imap-login", 2)  # one per pre-login client, no spare
        wait_count(master, "proxyd: pop3-login", 1)
        assert imap[0].command("LOGIN alice alicepw").status == "OK"
    finally:
        for client in imap:
            client.close()
        pop3.close()
    for title in titles:
        wait_count(master, title, 0)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("user = nosuchuser", "service imap-login user: User doesn't exist: nosuchuser"),
        ("group = nosuchgroup", "service imap-login group: Group doesn't exist: nosuchgroup"),
        ("chroot = /nonexistent/proxyd-chroot", "service(imap-login): chroot directory /nonexistent/proxyd-chroot"),
    ],
)
def test_service_user_group_and_chroot_are_checked_by_dash_n(
    proxyd: ProxydRunner, setting: str, message: str
) -> None:
    """``proxyd -n`` (as root) reports an unknown service user or group and a chroot
    directory that does not exist at the line that set them, before anything runs."""
    config = proxyd.config(None)
    config.extra = f"service imap-login {{\n  {setting}\n}}\n"
    path = proxyd.write_config(config)
    line = path.read_text().splitlines().index(f"  {setting}") + 1
    result = proxyd.run("-c", str(path), "-n")
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"{path}:{line}: {message}"), result.stderr


def test_idle_kill_0_and_the_largest_vsz_limit_mean_the_defaults(
    proxyd: ProxydRunner, backend_a: DovecotBackend
) -> None:
    """As in Dovecot, ``idle_kill = 0`` is ``default_idle_kill`` (not "never") and a
    ``vsz_limit`` of 2^64-1 is ``default_vsz_limit`` (not 16 EiB): an idle
    high-performance process goes after default_idle_kill, with default_vsz_limit."""
    config = static_config(
        proxyd, backend_a, service_count="0", idle_kill="0", vsz_limit="18446744073709551615"
    )
    config.set(default_idle_kill="1 secs", default_vsz_limit="300M")
    master = proxyd.start(config)
    with RawImapClient(master.address(), master.port(), source_ip=client_address(66)) as client:
        assert client.command("LOGIN alice alicepw").status == "OK"
        [process] = wait_count(master, "proxyd: imap-login", 1)
        assert "Max address space         314572800" in process.limits()
    wait_count(master, "proxyd: imap-login", 0)  # idle for default_idle_kill, then stopped
