"""Submission XCLIENT: what a trusted proxy in front may say (lib-smtp's server) and what proxyd
says to its backends (``submission-proxy.c``), byte for byte."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.events import LoginPolicy, TrustedClientInfo
from proxyd.protocols.submission.replies import SubmissionOptions
from proxyd.protocols.submission.server import SubmissionLoginServer
from proxyd.protocols.submission.xclient import (
    XclientData,
    XclientError,
    parse_xclient,
    xclient_commands,
    xtext_decode,
    xtext_encode,
)
from tests.protocols.script import Script

TRUSTED = LoginPolicy(mechanisms=("PLAIN",), disable_plaintext_auth=False, trusted=True, secured=True)
OPTIONS = SubmissionOptions(hostname="proxy.test")
XCLIENT_EHLO_LINE = b"250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD\r\n"
GREETING = b"220 proxy.test Dovecot ready.\r\n"


def server(policy: LoginPolicy = TRUSTED) -> Script:
    return Script(
        SubmissionLoginServer(policy, OPTIONS, hostname=lambda: "h", clock=lambda: datetime(2024, 1, 1))
    )


def test_ehlo_offers_xclient_only_to_trusted_clients() -> None:
    s = server()
    s.recv(b"EHLO front.example\r\n")
    assert s.output.endswith(b"250-PIPELINING\r\n" + XCLIENT_EHLO_LINE)
    s.output = b""
    s.recv(b"HELO front.example\r\n").expect(b"250 proxy.test\r\n")
    s = server(replace(TRUSTED, trusted=False))
    s.recv(b"EHLO c\r\n")
    assert b"XCLIENT" not in s.output
    assert s.output.endswith(b"250 PIPELINING\r\n")


def test_untrusted_client_is_refused() -> None:
    s = server(replace(TRUSTED, trusted=False))
    s.recv(b"XCLIENT ADDR=192.0.2.1\r\n").expect(b"550 5.7.14 You are not from trusted IP\r\n")
    assert s.engine.helo is None


def test_xclient_updates_the_session_and_greets_again() -> None:
    # base64 padding is '=', which an esmtp-value cannot hold: it comes xtext-encoded
    forward = xtext_encode(base64.b64encode(b"x-client=web\tlang=fi").decode())
    assert "+3D" in forward
    s = server()
    s.recv(b"EHLO front.example\r\n")
    s.output = b""
    s.recv(
        f"XCLIENT ADDR=192.0.2.10 PORT=4242 HELO=client.example PROTO=esmtp LOGIN=alice "
        f"SESSION=abc+2Bdef TTL=3 TIMEOUT=60 NAME=spoofed FORWARD={forward}\r\n".encode()
    ).expect(
        GREETING,
        TrustedClientInfo(
            remote_ip="192.0.2.10",
            remote_port=4242,
            proxy_ttl=3,
            session_id="abc+def",
            forward_fields={"x-client": "web", "lang": "fi"},
        ),
    )
    assert (s.engine.helo, s.engine.proto, s.engine.proxy_login) == ("client.example", "ESMTP", "alice")
    # the client's own EHLO afterwards does not replace what the proxy in front said
    s.recv(b"EHLO front.example\r\n")
    assert s.engine.helo == "client.example"


def test_xclient_ipv6_and_unavailable() -> None:
    s = server()
    s.recv(b"XCLIENT ADDR=IPV6:2001:db8::1 PORT=[UNAVAILABLE] HELO=[UNAVAILABLE]\r\n").expect(
        GREETING, TrustedClientInfo(remote_ip="2001:db8::1")
    )
    assert s.engine.helo is None
    s.recv(b"XCLIENT addr=[unavailable] helo=[192.0.2.1] proto=SMTP\r\n").expect(
        GREETING, TrustedClientInfo()
    )
    assert (s.engine.helo, s.engine.proto) == ("[192.0.2.1]", "SMTP")


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (b"ADDR=1.2.3.4  PORT=1", "Invalid parameter: Parameter is empty"),
        (b"ADDR=nonsense", "Invalid ADDR parameter"),
        (b"ADDR=IPV6:192.0.2.1", "Invalid ADDR parameter"),
        (b"ADDR", "Invalid ADDR parameter"),
        (b"PORT=0", "Invalid PORT parameter"),
        (b"PORT=65536", "Invalid PORT parameter"),
        (b"PROTO=UUCP", "Invalid PROTO parameter"),
        (b"PROTO=[UNAVAILABLE]", "Invalid PROTO parameter"),
        (b"TTL=-1", "Invalid TTL parameter"),
        (b"TIMEOUT=x", "Invalid TIMEOUT parameter"),
        (b"LOGIN=a+4", "Invalid LOGIN parameter: Invalid hexchar after '+' in xtext"),
        (b"LOGIN=a+00", "Invalid LOGIN parameter: Encountered NUL character in xtext"),
        (b"-ADDR=1.2.3.4", "Invalid parameter: Unexpected character in parameter keyword"),
        (b"ADDR:1.2.3.4", "Invalid parameter: Unexpected character in parameter keyword"),
        (b"ADDR=1.2.3.4=", "Invalid parameter: Unexpected character in parameter value"),
    ],
)
def test_invalid_xclient_applies_nothing(args: bytes, text: str) -> None:
    s = server()
    s.recv(b"XCLIENT PORT=25 " + args + b"\r\n").expect(f"501 5.5.4 {text}\r\n".encode())


def test_invalid_forward_still_moves_the_address() -> None:
    # submission-login applies the addresses before it decodes FORWARD
    s = server()
    s.recv(b"XCLIENT ADDR=192.0.2.3 HELO=h FORWARD=!!!\r\n").expect(
        b"501 5.5.4 Invalid FORWARD parameter\r\n", TrustedClientInfo(remote_ip="192.0.2.3")
    )
    assert s.engine.helo is None


def test_parse_xclient_values() -> None:
    assert parse_xclient(b"") == XclientData()
    assert parse_xclient(b"HELO=bad..name TTL=4294967295 FOO=bar") == XclientData()
    assert parse_xclient(b"ADDR=127.1 TTL=0") == XclientData(remote_ip="127.0.0.1", ttl=0)


# -- writing: proxyd's XCLIENT to a backend ------------------------------------------------


def test_xclient_lines_split_past_512_bytes() -> None:
    attributes = [("HELO", "h" * 200), ("PROTO", "ESMTP"), ("TTL", "4"), ("FORWARD", "F" * 300)]
    lines = xclient_commands(attributes)
    assert lines == [
        b"XCLIENT HELO=" + b"h" * 200 + b" PROTO=ESMTP TTL=4\r\n",
        b"XCLIENT FORWARD=" + b"F" * 300 + b"\r\n",
    ]
    # one attribute too long on its own goes out alone, with no empty XCLIENT after it
    assert xclient_commands([("FORWARD", "F" * 600)]) == [b"XCLIENT FORWARD=" + b"F" * 600 + b"\r\n"]
    assert xclient_commands([("TTL", "4"), ("FORWARD", "F" * 600)]) == [
        b"XCLIENT TTL=4\r\n",
        b"XCLIENT FORWARD=" + b"F" * 600 + b"\r\n",
    ]
    assert xclient_commands([]) == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["HELO", "LOGIN", "FORWARD", "ADDR"]),
            st.text(max_size=300).filter(lambda t: "\0" not in t),
        ),
        max_size=12,
    )
)
def test_xclient_lines_round_trip(attributes: list[tuple[str, str]]) -> None:
    parts: list[tuple[str, str]] = []
    for line in xclient_commands(attributes):
        assert line.startswith(b"XCLIENT ")
        assert line.endswith(b"\r\n")
        words = line[8:-2].split(b" ")
        # a line passes 512 bytes only when it holds a single attribute
        assert len(line) - 2 <= 512 or len(words) == 1
        for word in words:
            name, _, value = word.partition(b"=")
            parts.append((name.decode(), xtext_decode(value)))
    assert parts == attributes


@given(st.text(max_size=60).filter(lambda t: "\0" not in t))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert all(0x21 <= ord(c) <= 0x7E and c != "=" for c in encoded)
    assert xtext_decode(encoded.encode()) == text


@given(st.binary(max_size=200))
def test_parse_xclient_never_crashes(args: bytes) -> None:
    outcome: XclientData | XclientError
    try:
        outcome = parse_xclient(args)
    except XclientError as error:
        outcome = error
    if isinstance(outcome, XclientError):
        assert str(outcome).startswith("Invalid ")
    else:
        assert outcome.remote_port is None or 1 <= outcome.remote_port <= 65535


@given(
    st.lists(
        st.sampled_from(
            [b"ADDR=", b"PORT=", b"HELO=", b"TTL=", b"PROTO=", b"LOGIN=", b"FORWARD=", b"IPV6:", b"::1",
             b"192.0.2.1", b"[UNAVAILABLE]", b"+2B", b"+", b"0", b"65535", b" ", b"ESMTP", b"=", b"\xff"]
        ),
        max_size=20,
    ).map(b"".join)
)
def test_xclient_command_never_breaks_the_engine(args: bytes) -> None:
    s = server()
    s.recv(b"XCLIENT " + args + b"\r\nNOOP\r\n")
    *first, last = s.output.split(b"\r\n")[:-1]
    assert last == b"250 2.0.0 OK"
    assert len(first) == 1
    assert first[0][:3] in (b"220", b"501", b"500")
