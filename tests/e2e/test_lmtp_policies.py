"""What LMTP does not share with the login services: no auth penalty, no pre-login limits, no delay_until.

Dovecot's ``lmtp`` looks recipients up in the passdb without a password (an
auth-master lookup), so a refused recipient raises no per-IP penalty and a
penalised address delivers at full speed; ``proxyd_prelogin_per_ip_limit`` is a
limit of the login services, and an MTA opens as many connections as its own
``service lmtp`` limits allow (``client_limit``/``process_limit``: see
``test_service_limits_apply`` in test_lmtp.py).  IMAP beside it is the control.
"""

from __future__ import annotations

import smtplib
import time
from contextlib import ExitStack

import pytest

from tests.e2e.proxy_support import auth_failed
from tests.e2e.test_lmtp import recipients
from tests.fixtures.dovecot import LmtpBackend
from tests.fixtures.net import PROXYD_ADDRESS, client_address, free_port, wait_until
from tests.fixtures.proxyd import (
    Listener,
    PasswdEntry,
    ProxydRunner,
    proxy_fields,
    write_passwd_file,
)
from tests.helpers.clients import RawImapClient

pytestmark = [pytest.mark.e2e, pytest.mark.proxyd_only]

SOURCE = client_address(190)
#: the pre-login limit's address (an address at the limit races with its own next login)
CROWD = client_address(191)


def test_lmtp_has_no_penalty_and_no_prelogin_limit(
    proxyd: ProxydRunner, lmtp_backend_a: LmtpBackend, lmtp_backend_b: LmtpBackend
) -> None:
    imap_user = PasswdEntry(
        "alice", "{PLAIN}alicepw", proxy_fields(lmtp_backend_a.address, lmtp_backend_a.dovecot.imap_port)
    )
    # delay_until holds logins (auth's auth_request_success_continue()), not passdb lookups
    late = PasswdEntry(
        "late@example.org", "", proxy_fields(lmtp_backend_a.address, lmtp_backend_a.lmtp_port,
                                              destuser="alice@example.org", delay_until=str(int(time.time()) + 30))
    )
    users = write_passwd_file(
        proxyd.workdir / "lmtp-policy-users", [*recipients(lmtp_backend_a, lmtp_backend_b), imap_user, late]
    )
    config = proxyd.config(
        users, protocols="imap lmtp", lmtp_proxy="yes", hostname="proxy.test", proxyd_prelogin_per_ip_limit="2"
    )
    port = free_port(PROXYD_ADDRESS)
    config.listeners.append(Listener("lmtp", "lmtp", PROXYD_ADDRESS, port))
    config.extra = "service lmtp {\n  client_limit = 4\n}\n"
    running = proxyd.start(config)

    def imap_login(password: str) -> tuple[str, float]:
        started = time.monotonic()
        with RawImapClient(running.address(), running.port(), source_ip=SOURCE) as client:
            return client.command(f"LOGIN alice {password}").tagged, time.monotonic() - started

    # pre-login limit: a third IMAP connection from the address is refused, LMTP ones are not
    with ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(RawImapClient(running.address(), running.port(), source_ip=CROWD))

        def refused() -> bool:
            client = stack.enter_context(RawImapClient(running.address(), running.port(), source_ip=CROWD))
            if client.greeting.startswith("* OK"):
                return False  # the master's word was still on its way
            assert client.greeting == "* BYE Too many connections from your IP address."
            return True

        wait_until(refused, timeout=10, what="the third IMAP connection refused", diagnostics=running.log_text)
        for _ in range(3):
            mta = stack.enter_context(smtplib.LMTP(PROXYD_ADDRESS, port, source_address=(CROWD, 0), timeout=10))
            mta.ehlo_or_helo_if_needed()
            assert mta.noop() == (250, b"2.0.0 OK")
    # refused recipients raise no penalty for the address ...
    with smtplib.LMTP(PROXYD_ADDRESS, port, source_address=(SOURCE, 0), timeout=10) as mta:
        mta.ehlo_or_helo_if_needed()
        mta.mail("mta@example.net")
        for n in range(3):
            code, text = mta.rcpt(f"nobody{n}@example.org")
            assert (code, text) == (550, f"5.1.1 <nobody{n}@example.org> User doesn't exist: nobody{n}@example.org".encode())
    line, seconds = imap_login("alicepw")
    assert line.startswith("OK ")
    assert seconds < 1.5
    # ... and a penalised address (one failed IMAP login: 4 s) still delivers at once
    assert imap_login("wrong")[0] == auth_failed("imap")
    started = time.monotonic()
    with smtplib.LMTP(PROXYD_ADDRESS, port, source_address=(SOURCE, 0), timeout=10) as mta:
        mta.ehlo_or_helo_if_needed()
        mta.mail("mta@example.net")
        assert mta.rcpt("alice@example.org")[0] == 250
        assert mta.rcpt("late@example.org")[0] == 250
        mta.putcmd("DATA")
        assert mta.getreply()[0] == 354
        mta.send(b"Subject: penalty\r\n\r\nbody\r\n.\r\n")
        assert [mta.getreply()[0] for _ in range(2)] == [250, 250]
    assert time.monotonic() - started < 1.5
