"""Property tests: arbitrary input never crashes a POP3 engine and never leaks a password.

``HYPOTHESIS_PROFILE=deep`` (tests/protocols/conftest.py) runs many more examples.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.events import (
    LoginPolicy,
)
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from proxyd.protocols.pop3.server import Pop3LoginServer
from tests.protocols import fuzzing
from tests.protocols.fuzzing import chunked

#: "+OK ...", "-ERR ...", "+ <base64>", or one line of a multi-line CAPA / AUTH list
REPLY_LINE = re.compile(rb"(\+OK( [^\r\n]*)?|-ERR [^\r\n]*|\+ [A-Za-z0-9+/=]*|[A-Z0-9 /-]*|\.)\Z")

policies = fuzzing.login_policies(
    [("PLAIN", "LOGIN"), ("PLAIN",), ("LOGIN", "CRAM-MD5"), (), ("PLAIN", "APOP"), ("APOP",)]
)

#: input that looks enough like POP3 to reach deep states, mixed with raw noise
noisy = fuzzing.noise(
    [
        b"USER ",
        b"PASS ",
        b"AUTH",
        b"AUTH ",
        b"PLAIN",
        b"LOGIN",
        b"CAPA",
        b"STLS",
        b"QUIT",
        b"APOP ",
        b"XCLIENT ",
        b"XOIP ",
        b"APOP bob 0123456789abcdef0123456789abcdef",
        b"APOP bob 0123456789abcdef0123456789abcdeZ",
        b"ADDR=1.2.3.4 ",
        b"PORT=99 ",
        b"TTL=x ",
        b"FORWARD=YT1i ",
        b"SESSION=abc ",
        b"NOOP",
        b"bob",
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"*",
        b"=",
        b"AGJvYgBzZWNyZXQ=",
        b"\0",
        b"\xff",
    ]
)


def drive_server(
    engine: Pop3LoginServer, chunks: list[bytes], answers: list[int], eof: bool
) -> tuple[bytes, list[Any]]:
    """Feed chunks; answer an auth step with a challenge, a failure, a backend's -ERR or a success."""
    answer = fuzzing.auth_answers(
        engine, backend_reply=b"-ERR [IN-USE] locked\r\n", logged_in=b"+OK Logged in.\r\n"
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
    engine = Pop3LoginServer(policy, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), answers, eof)
    assert engine.state in (
        "NOT_AUTHENTICATED",
        "AUTHENTICATING",
        "TLS_PENDING",
        "PROXYING",
        "CLOSED",
    )
    fuzzing.check_server_output(output, events, REPLY_LINE)


@given(st.binary(max_size=3000), st.lists(st.integers(0, 10_000), max_size=6))
def test_server_survives_raw_bytes(data, cuts):
    engine = Pop3LoginServer(LoginPolicy(trusted=True), hostname=lambda: "h")
    drive_server(engine, chunked(data, cuts), [1], eof=True)


complete_lines = st.lists(
    st.sampled_from([b"CAPA\r\n", b"NOOP\r\n", b"\r\n", b"AUTH\r\n", b"XCLIENT ADDR=1.2.3.4\r\n"]),
    max_size=2,
)


@given(
    policies,
    fuzzing.password_chars,
    st.sampled_from(["userpass", "auth-ir", "auth-continue"]),
    complete_lines,
    noisy,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_password_never_reaches_the_client(policy, password, form, before, after, cuts, eof):
    secret = ("Pw" + password).encode()
    encoded = base64.b64encode(b"\0bob\0" + secret)
    if form == "userpass":
        login = b"USER bob\r\nPASS " + secret + b"\r\n"
    elif form == "auth-ir":
        login = b"AUTH PLAIN " + encoded + b"\r\n"
    else:
        login = b"AUTH PLAIN\r\n" + encoded + b"\r\n"
    data = b"".join(before) + login + after
    engine = Pop3LoginServer(policy, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), [0, 1], eof)
    fuzzing.check_secret_hidden(secret, output, events, encoded)


@given(
    st.lists(
        st.sampled_from(
            [
                b"CAPA\r\n",
                b"NOOP\r\n",
                b"USER x\r\n",
                b"APOP a b\r\n",
                b"AUTH\r\n",
                b"AUTH FOO\r\n",
                b"XCLIENT ADDR=1.2.3.4\r\n",
                b"PASS\r\n",
                b"\r\n",
            ]
        ),
        max_size=8,
    ),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_chunking_does_not_change_the_replies(lines, cuts):
    """How the bytes are split across reads makes no difference."""
    data = b"".join(lines)
    whole, _ = drive_server(Pop3LoginServer(LoginPolicy()), [data] if data else [], [1], eof=False)
    split, _ = drive_server(Pop3LoginServer(LoginPolicy()), chunked(data, cuts), [1], eof=False)
    assert whole == split


# -- backend engine ------------------------------------------------------------------------

banners = st.sampled_from([b"+OK [XCLIENT] ready\r\n", b"+OK ready\r\n", b"* OK imap\r\n", b""])
backend_pieces = (
    [
        b"+OK",
        b"+OK ",
        b"-ERR ",
        b"-ERR [SYS/TEMP] x",
        b"-ERR [AUTH] x",
        b"+ ",
        b"+ VXNlcm5hbWU6",
        b"+ !!",
        b"+",
        b"\r\n",
        b"\n",
        b"[XCLIENT]",
    ]
)
backend_noise = fuzzing.noise(backend_pieces, max_pieces=30)
backend_params = st.builds(
    Pop3BackendParams,
    user=st.just("bob"),
    password=st.just("Pw-hunter2"),
    master_user=st.sampled_from(["", "master"]),
    mech=st.sampled_from(["", "PLAIN", "LOGIN", "XOAUTH2", "SCRAM-SHA-1"]),
    starttls=st.booleans(),
    not_trusted=st.booleans(),
    remote_ip=st.just("192.0.2.1"),
    remote_port=st.just(4000),
    session_id=st.just("s"),
    forward_fields=st.sampled_from([(), (("k", "v"),)]),
)


@given(
    backend_params,
    banners,
    backend_noise,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_backend_survives_anything(params, banner, data, cuts, eof):
    engine = Pop3BackendLogin(params)
    sent = b"".join(fuzzing.drive_backend(engine, chunked(banner + data, cuts), eof, b"hunter2"))
    # the password goes out at most once, and only in PASS (USER/PASS logins)
    assert sent.count(b"hunter2") <= 1
    assert engine.state_name in ("banner", "starttls", "xclient", "login1", "login2")
