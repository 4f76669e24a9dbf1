"""Property tests: arbitrary input never crashes the ManageSieve engines, the parser or leaks a password.

``HYPOTHESIS_PROFILE=deep`` (tests/protocols/conftest.py) runs many more examples.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.backend_events import (
    BackendEvent,
    BackendFailed,
    BackendLoggedIn,
    BackendNeedsTLS,
)
from proxyd.protocols.events import NEED_DATA, ClientFailure, Close, LoginPolicy
from proxyd.protocols.managesieve.backend import ManageSieveBackendLogin, SieveBackendParams
from proxyd.protocols.managesieve.grammar import ArgType, ParseError, parse_line, quote
from proxyd.protocols.managesieve.server import ManageSieveLoginServer
from tests.protocols import fuzzing
from tests.protocols.fuzzing import chunked

#: a capability line, an OK/NO/BYE reply, or a quoted SASL challenge
REPLY_LINE = re.compile(rb'("[A-Z]+"( "[^"\r\n]*")?|(OK|NO|BYE)( \([^)\r\n]*\))?( "[^\r\n]*")?|"[A-Za-z0-9+/=]*")\Z')

policies = st.builds(
    LoginPolicy,
    mechanisms=st.sampled_from([("PLAIN", "LOGIN"), ("PLAIN",), ("LOGIN", "CRAM-MD5"), ()]),
    ssl=st.sampled_from(["no", "yes", "required"]),
    tls_available=st.booleans(),
    tls_active=st.booleans(),
    secured=st.booleans(),
    trusted=st.booleans(),
    disable_plaintext_auth=st.booleans(),
)
pieces = st.sampled_from(
    [
        b"AUTHENTICATE ",
        b'"PLAIN"',
        b'"LOGIN"',
        b"CAPABILITY",
        b"STARTTLS",
        b"LOGOUT",
        b"NOOP",
        b"XCLIENT ",
        b"ADDR=1.2.3.4 ",
        b"TTL=x ",
        b'"',
        b"\\",
        b"{",
        b"}",
        b"+",
        b"5",
        b"{5+}\r\n",
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b'"*"',
        b'"AGJvYgBzZWNyZXQ="',
        b"\0",
        b"\xff",
    ]
)
noisy = st.lists(st.one_of(pieces, st.binary(max_size=40)), max_size=40).map(b"".join)


def drive_server(
    engine: ManageSieveLoginServer, chunks: list[bytes], answers: list[int], eof: bool
) -> tuple[bytes, list[Any]]:
    def answer(pick: int) -> None:
        if pick % 4 == 0:
            engine.sasl_challenge(b"ch")
        elif pick % 4 == 1:
            engine.auth_failed(list(ClientFailure)[pick % len(ClientFailure)])
        elif pick % 4 == 2:
            engine.auth_backend_reply(b'NO "Authentication failed."\r\n')
        else:
            engine.login_succeeded(b'OK "Logged in."\r\n')

    return fuzzing.drive_server(engine, chunks, answers, eof, answer)


@given(
    policies,
    noisy,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.integers(0, 99), min_size=1),
    st.booleans(),
)
def test_server_survives_anything(policy, data, cuts, answers, eof):
    engine = ManageSieveLoginServer(policy, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), answers, eof)
    assert output.endswith(b"\r\n")
    for line in output.split(b"\r\n")[:-1]:
        assert REPLY_LINE.match(line), line
    closes = [event for event in events if isinstance(event, Close)]
    assert len(closes) <= 1
    if closes:
        assert events[-1] == closes[0]


@given(st.binary(max_size=3000), st.lists(st.integers(0, 10_000), max_size=6))
def test_server_survives_raw_bytes(data, cuts):
    engine = ManageSieveLoginServer(LoginPolicy(trusted=True), hostname=lambda: "h")
    drive_server(engine, chunked(data, cuts), [1], eof=True)


@given(
    policies,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20),
    st.booleans(),
    noisy,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_password_never_reaches_the_client(policy, password, literal, after, cuts, eof):
    secret = ("Pw" + password).encode()
    encoded = base64.b64encode(b"\0bob\0" + secret)
    arg = b"{%d+}\r\n" % len(encoded) + encoded if literal else b'"' + encoded + b'"'
    data = b'NOOP\r\nAUTHENTICATE "PLAIN" ' + arg + b"\r\n" + after
    engine = ManageSieveLoginServer(policy, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), [0, 1], eof)
    assert secret not in output
    assert encoded not in output
    assert all(secret not in repr(event).encode() for event in events)


@given(st.lists(st.binary(max_size=30), max_size=4))
def test_quote_round_trips(values):
    line = b" ".join(quote(v) for v in values) + b"\r\n"
    valid = all(_utf8(v) and b"\0" not in v for v in values)
    try:
        parsed = parse_line(line)
    except ParseError:
        assert not valid
        return
    assert parsed is not None
    args, used = parsed
    assert used == len(line)
    assert [a.value for a in args] == values
    assert all(a.type is ArgType.STRING for a in args)


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=5))
def test_parse_line_is_a_prefix_property(data, cuts):
    """A line parses to the same result however much of the input has arrived."""
    try:
        whole = parse_line(data)
    except ParseError:
        return
    if whole is None:
        return
    _, used = whole
    for cut in cuts:
        try:
            partial = parse_line(data[: cut % (len(data) + 1)])
        except ParseError:
            raise AssertionError("a prefix of a valid line must not be an error") from None
        assert partial is None or partial == whole or partial[1] <= used


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


backend_pieces = st.sampled_from(
    [
        b'"SASL" "PLAIN"\r\n',
        b'"STARTTLS"\r\n',
        b'"XCLIENT"\r\n',
        b'OK "x"\r\n',
        b"OK\r\n",
        b'NO "x"\r\n',
        b'NO (TRYLATER) "x"\r\n',
        b'"VXNlcm5hbWU6"\r\n',
        b'"!!"\r\n',
        b"BYE\r\n",
        b"\r\n",
    ]
)
backend_noise = st.lists(st.one_of(backend_pieces, st.binary(max_size=30)), max_size=30).map(
    b"".join
)
backend_params = st.builds(
    SieveBackendParams,
    user=st.just("bob"),
    password=st.just("Pw-hunter2"),
    master_user=st.sampled_from(["", "master"]),
    mech=st.sampled_from(["", "PLAIN", "LOGIN", "SCRAM-SHA-1"]),
    starttls=st.booleans(),
    not_trusted=st.booleans(),
    remote_ip=st.just("192.0.2.1"),
    remote_port=st.just(4000),
    session_id=st.just("s"),
)


@given(backend_params, backend_noise, st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_backend_survives_anything(params, data, cuts, eof):
    engine = ManageSieveBackendLogin(params)
    finished = False
    for chunk in chunked(data, cuts) + ([b""] if eof else []):
        engine.receive_data(chunk)
        while (event := engine.next_event()) is not NEED_DATA:
            assert isinstance(event, BackendEvent)
            assert not finished, "no events after the final one"
            if isinstance(event, BackendNeedsTLS):
                engine.trailing_data()
                engine.tls_started()
            if isinstance(event, (BackendLoggedIn, BackendFailed)):
                finished = True
                reply = getattr(event, "client_reply", None) or b""
                assert b"Pw-hunter2" not in reply
        engine.data_to_send()
