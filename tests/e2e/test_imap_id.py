"""``imap_id_send``, ``imap_id_log`` and ``imap_literal_minus`` through a running proxyd, with imaplib."""

from __future__ import annotations

import imaplib

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


def test_id_reply_log_line_and_literal_minus(proxyd: ProxydRunner, passwd_file: PasswdWriter) -> None:
    config = proxyd.config(
        passwd_file(()),
        imap_id_send='name * "support-url" "https://mail.example.com/"',
        imap_id_log="*",
        imap_literal_minus="yes",
    )
    running = proxyd.start(config)
    with imaplib.IMAP4(running.address(), running.port(), timeout=CLIENT_TIMEOUT) as imap:
        assert "LITERAL-" in imap.capabilities
        assert "LITERAL+" not in imap.capabilities
        typ, caps = imap.capability()
        assert typ == "OK"
        assert b" LITERAL- " in caps[0]
        typ, done = imap.xatom("ID", '("name" "e2e\\"client" "version" "1.0" "os" NIL)')
        assert (typ, done) == ("OK", [b"ID completed."])
        assert imap.untagged_responses.pop("ID") == [
            b'("name" "Dovecot" "support-url" "https://mail.example.com/")'
        ]
        imap.logout()
    lines = running.wait_for_log(r"imap-login: Info: ID sent: ")
    assert len(lines) == 1
    assert 'ID sent: name=e2e"client, version=1.0, os=NIL: user=<>, rip=127.0.0.1' in lines[0]
