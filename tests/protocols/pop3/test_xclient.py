"""XCLIENT formatting and parsing, and Dovecot's tab escaping."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.xclient import (
    XclientArgs,
    decode_forward,
    encode_forward,
    parse_ip,
    parse_xclient,
    tab_escape,
    tab_unescape,
    xclient_command,
)


def test_xclient_command():
    assert (
        xclient_command(
            remote_ip="2001:db8::7", remote_port=1234, session_id="abc/def", proxy_ttl=3
        )
        == b"XCLIENT ADDR=2001:db8::7 PORT=1234 SESSION=abc/def TTL=3\r\n"
    )


def test_tab_escape_matches_dovecot():
    assert tab_escape("a\x01b\tc\rd\ne") == "a\x011b\x01tc\x01rd\x01ne"
    assert tab_unescape("a\x011b\x01tc\x01rd\x01ne\x010f\x01x") == "a\x01b\tc\rd\ne\0fx"
    assert tab_unescape("trailing\x01") == "trailing"


@given(st.text())
def test_tab_escape_roundtrip(text):
    assert tab_unescape(tab_escape(text)) == text
    assert not set("\t\r\n") & set(tab_escape(text))


@given(
    st.lists(st.tuples(st.text(min_size=1).filter(lambda k: "=" not in k), st.text()), max_size=5)
)
def test_forward_roundtrip(fields):
    fields = list(dict(fields).items())
    encoded = encode_forward(tuple(fields))
    if not fields:
        assert encoded == ""
        return
    assert decode_forward(base64.b64decode(encoded)) == dict(fields)


@pytest.mark.parametrize(
    ("text", "ip"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("127.1", "127.0.0.1"),  # inet_aton() shorthand, as Dovecot accepts it
        ("fe80::1%eth0", None),
        ("", None),
        ("1.2.3.4.5", None),
        ("host.example", None),
    ],
)
def test_parse_ip(text, ip):
    assert parse_ip(text) == ip


def test_parse_xclient_all_fields():
    forward = base64.b64encode(b"a=b\tc").decode()
    assert parse_xclient(
        f"ADDR=1.2.3.4 PORT=5 SESSION=s TTL=0 FORWARD={forward}".encode()
    ) == XclientArgs(True, "1.2.3.4", 5, "s", 0, {"a": "b", "c": ""})


def test_parse_xclient_ignores_empty_and_unknown_tokens():
    parsed = parse_xclient(b"  NAME=x  ADDR =1.2.3.4 port=9")
    assert parsed == XclientArgs(True, None, 9)
    assert parsed.changed
    assert not parse_xclient(b"").changed


@given(st.binary(max_size=200))
def test_parse_xclient_never_raises(args):
    parsed = parse_xclient(args)
    assert isinstance(parsed.valid, bool)
