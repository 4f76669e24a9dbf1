"""imap_id_send, imap_id_log and imap_literal_minus (Dovecot's imap-id.c, imap-login-cmd-id.c)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd import __version__
from proxyd.log import one_line
from proxyd.protocols.events import Close, LogInfo, LoginPolicy, TrustedClientInfo
from proxyd.protocols.imap.ident import IdLog, id_reply
from proxyd.protocols.imap.replies import capability_string
from proxyd.protocols.imap.server import ImapLoginServer, ImapOptions

from .script import Script

OPEN = LoginPolicy(mechanisms=("PLAIN",), disable_plaintext_auth=False)


def script(options: ImapOptions, policy: LoginPolicy = OPEN) -> Script:
    return Script(
        ImapLoginServer(
            policy, options, hostname=lambda: "proxy1", clock=lambda: datetime(2024, 5, 6, 7, 8, 9)
        )
    )


# -- imap_id_send ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "reply"),
    [
        ("name *", '("name" "Dovecot")'),
        ("NAME * Version *", f'("NAME" "Dovecot" "Version" "{__version__}")'),
        ("support-url * support-email *", '("support-url" NIL "support-email" NIL)'),
        ("os * os-version *", f'("os" "{os.uname().sysname}" "os-version" "{os.uname().release}")'),
        ("revision * x-unknown *", '("revision" NIL "x-unknown" NIL)'),
        ('name "My IMAP" "support-url" "http://x/"', '("name" "My IMAP" "support-url" "http://x/")'),
        ('k "a\\"b"', '("k" "a\\"b")'),
        ("k NIL", '("k" "NIL")'),  # an astring: NIL is "NIL"
        ("name", '("name" NIL)'),  # a key without a value
        ("(a b) c name x", '("name" "x")'),  # a list is skipped with the argument after it
        ("name (x)", '("name" NIL)'),
        ("", "NIL"),
        ("(a)", "NIL"),
        ('name "x', "NIL"),  # unparsable
    ],
)
def test_id_reply(setting, reply):
    assert id_reply(setting) == reply


def test_id_command_answers_imap_id_send():
    s = script(ImapOptions(id_send='name * "x-mine" "yes"'))
    s.take()
    s.recv(b"a ID NIL\r\n").expect(b'* ID ("name" "Dovecot" "x-mine" "yes")\r\na OK ID completed.\r\n')
    s = script(ImapOptions(id_send=""))
    s.take()
    s.recv(b"a ID NIL\r\n").expect(b"* ID NIL\r\na OK ID completed.\r\n")


# -- imap_id_log ----------------------------------------------------------------------


def _log_of(setting: str, pairs: list[tuple[bytes, bytes | None]]) -> str:
    log = IdLog(setting)
    for key, value in pairs:
        log.add(key, value)
    return log.message()


def test_id_log_all_and_named_keys():
    pairs = [(b"name", b"Mutt"), (b"Version", b"2.2"), (b"os", None), (b"vendor", b"x")]
    assert _log_of("*", pairs) == "ID sent: name=Mutt, Version=2.2, os=NIL, vendor=x"
    assert _log_of("version  OS", pairs) == "ID sent: Version=2.2, os=NIL"
    assert _log_of("other", pairs) == "ID sent: "


def test_id_log_values_are_sanitized_and_cut():
    text = _log_of("*", [(b"name", b"a\r\nb\x00c\xff"), (b"v", b"x" * 100)])
    assert text == "ID sent: name=a??b?c?, v=" + "x" * 77 + "..."


@given(st.lists(st.tuples(st.binary(max_size=40), st.one_of(st.none(), st.binary(max_size=200)))))
def test_id_log_is_one_line_for_any_bytes(pairs):
    text = _log_of("*", pairs)
    assert text.startswith("ID sent: ")
    assert len(text.splitlines()) == 1
    assert one_line(text) == text  # nothing Dovecot's str_sanitize() would replace


@given(st.lists(st.tuples(st.text(max_size=30), st.one_of(st.none(), st.text(max_size=120)))))
def test_id_log_is_one_line_for_any_text(pairs):
    encoded = [
        (key.encode("utf-8", "surrogatepass"), None if value is None else value.encode("utf-8", "surrogatepass"))
        for key, value in pairs
    ]
    text = _log_of("*", encoded)
    assert len(text.splitlines()) == 1
    assert one_line(text) == text  # nothing Dovecot's str_sanitize() would replace


def test_id_command_logs_once_after_the_trusted_info():
    s = script(ImapOptions(id_log="name x-originating-ip"), replace(OPEN, trusted=True))
    s.take()
    s.recv(b'a ID ("name" {5+}\r\nMu\ntt "x-originating-ip" "10.0.0.9" "os" "Linux")\r\n').expect(
        b'* ID ("name" "Dovecot")\r\na OK ID completed.\r\n',
        TrustedClientInfo(remote_ip="10.0.0.9"),
        LogInfo("ID sent: name=Mu?tt, x-originating-ip=10.0.0.9"),
    )
    # Dovecot logs only the first ID of a connection
    s.recv(b'b ID ("name" "again")\r\n').expect(b'* ID ("name" "Dovecot")\r\nb OK ID completed.\r\n')


def test_id_log_not_for_nil_nor_invalid_nor_when_off():
    s = script(ImapOptions(id_log="*"))
    s.take()
    s.recv(b"a ID NIL\r\n").expect(b'* ID ("name" "Dovecot")\r\na OK ID completed.\r\n')
    s.recv(b'b ID ("name")\r\n').expect(b'* ID ("name" "Dovecot")\r\nb OK ID completed.\r\n')
    s = script(ImapOptions(id_log="*"))
    s.take()
    s.recv(b'a ID ("name" ("x"))\r\n').expect(b"a BAD Invalid ID parameters\r\n")
    s = script(ImapOptions())
    s.take()
    s.recv(b'a ID ("name" "Mutt")\r\n').expect(b'* ID ("name" "Dovecot")\r\na OK ID completed.\r\n')


def test_id_log_of_an_empty_list():
    s = script(ImapOptions(id_log="*"))
    s.take()
    s.recv(b"a ID ()\r\n").expect(
        b'* ID ("name" "Dovecot")\r\na OK ID completed.\r\n', LogInfo("ID sent: ")
    )


# -- imap_literal_minus ---------------------------------------------------------------


def test_literal_minus_capability():
    assert capability_string(OPEN, "", literal_minus=True).endswith(" LITERAL- AUTH=PLAIN")
    assert " LITERAL+" in capability_string(OPEN, "+XAPPLE")
    assert "LITERAL" not in capability_string(OPEN, "IMAP4rev1", literal_minus=True)
    s = Script(ImapLoginServer(OPEN, ImapOptions(literal_minus=True)), keep_greeting=True)
    assert b" LITERAL- " in s.take()[0]  # the greeting
    s.recv(b"a CAPABILITY\r\n")
    assert b" LITERAL- " in s.take()[0]


def test_literal_minus_limits_non_synchronizing_literals():
    s = script(ImapOptions(literal_minus=True))
    s.take()
    s.recv(b"a ID ({4+}\r\nname {4+}\r\nMutt)\r\n")
    assert s.take()[0] == b'* ID ("name" "Dovecot")\r\na OK ID completed.\r\n'
    s.recv(b"a ID ({4097}\r\n")  # a synchronizing literal is not limited by LITERAL-
    assert s.take() == (b"+ OK\r\n", [])
    s = script(ImapOptions(literal_minus=True))
    s.recv(b"b ID ({4097+}\r\n").expect(
        b"* BYE Non-synchronizing literal size too large\r\n",
        Close("Non-synchronizing literal size too large"),
    )
