"""Property tests: arbitrary input never crashes the ManageSieve engines, the parser or leaks a password.

``HYPOTHESIS_PROFILE=deep`` (tests/protocols/conftest.py) runs many more examples.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.events import LoginPolicy
from proxyd.protocols.managesieve.backend import ManageSieveBackendLogin, SieveBackendParams
from proxyd.protocols.managesieve.grammar import ArgType, ParseError, parse_line, quote
from proxyd.protocols.managesieve.server import ManageSieveLoginServer
from tests.protocols import fuzzing
from tests.protocols.fuzzing import chunked

#: a capability line, an OK/NO/BYE reply, or a quoted SASL challenge
REPLY_LINE = re.compile(rb'("[A-Z]+"( "[^"\r\n]*")?|(OK|NO|BYE)( \([^)\r\n]*\))?( "[^\r\n]*")?|"[A-Za-z0-9+/=]*")\Z')

policies = fuzzing.login_policies([("PLAIN", "LOGIN"), ("PLAIN",), ("LOGIN", "CRAM-MD5"), ()])
noisy = fuzzing.noise(
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


def drive_server(
    engine: ManageSieveLoginServer, chunks: list[bytes], answers: list[int], eof: bool
) -> tuple[bytes, list[Any]]:
    answer = fuzzing.auth_answers(
        engine, backend_reply=b'NO "Authentication failed."\r\n', logged_in=b'OK "Logged in."\r\n'
    )
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
    fuzzing.check_server_output(output, events, REPLY_LINE)


@given(st.binary(max_size=3000), st.lists(st.integers(0, 10_000), max_size=6))
def test_server_survives_raw_bytes(data, cuts):
    engine = ManageSieveLoginServer(LoginPolicy(trusted=True), hostname=lambda: "h")
    drive_server(engine, chunked(data, cuts), [1], eof=True)


@given(
    policies,
    fuzzing.password_chars,
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
    fuzzing.check_secret_hidden(secret, output, events, encoded)


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


backend_noise = fuzzing.noise(
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
    ],
    max_pieces=30,
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
    fuzzing.drive_backend(ManageSieveBackendLogin(params), chunked(data, cuts), eof, b"Pw-hunter2")
