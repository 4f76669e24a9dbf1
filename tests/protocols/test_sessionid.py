"""Session ids in Dovecot's layout (``client_get_session_id()``)."""

from __future__ import annotations

import base64

from proxyd.protocols.sessionid import new_session_id


def test_matches_a_session_id_dovecot_logged():
    # "session=<k3/oAdZgiKJ/AAAB>" from Dovecot 2.3.19 for a client at 127.0.0.1:41608
    assert new_session_id("127.0.0.1", 41608, 106472271282067) == "k3/oAdZgiKJ/AAAB"


def test_layout():
    raw = base64.b64decode(new_session_id("192.0.2.1", 0x1234, 0xAABBCCDDEEFF))
    assert raw == bytes.fromhex("ffeeddccbbaa3412c0000201")


def test_only_48_bits_of_the_timestamp():
    assert new_session_id("192.0.2.1", 1, 2**48 + 5) == new_session_id("192.0.2.1", 1, 5)


def test_ipv6_and_no_ip():
    assert len(new_session_id("2001:db8::1", 993, 1)) == 32
    assert len(new_session_id("[2001:db8::1]", 993, 1)) == 32
    assert base64.b64decode(new_session_id("", 0, 0)) == bytes(12)
