"""Property tests: arbitrary input never crashes an engine and never leaks a password.

``HYPOTHESIS_PROFILE=deep`` (tests/protocols/conftest.py) runs many more examples.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.events import (
    AuthBegin,
    LoginPolicy,
)
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.imap.grammar import ArgType, ImapParser, quote_string
from proxyd.protocols.imap.server import ImapLoginServer, ImapOptions
from proxyd.protocols.sasl import (
    Challenge,
    Credentials,
    SaslFailed,
    SaslServer,
    decode_base64,
    encode_base64,
)
from tests.protocols import fuzzing
from tests.protocols.fuzzing import chunked

REPLY_LINE = re.compile(rb"(\*|\+|[^ \r\n]+) [^\r\n]*\Z")

policies = fuzzing.login_policies([("PLAIN", "LOGIN"), ("PLAIN",), ("LOGIN", "CRAM-MD5"), ()])
imap_options = st.builds(
    ImapOptions,
    capability=st.sampled_from(["", "+XFOO", "IMAP4rev1"]),
    id_retain=st.booleans(),
)

#: Input that looks enough like IMAP to reach deep states, mixed with raw noise.
noisy = fuzzing.noise(
    [
        b"a ",
        b"LOGIN ",
        b"AUTHENTICATE ",
        b"PLAIN",
        b"LOGIN",
        b"ID ",
        b"(",
        b")",
        b'"',
        b"\\",
        b"{",
        b"}",
        b"+",
        b"3",
        b"9999",
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"*",
        b"=",
        b"NIL",
        b"STARTTLS",
        b"CAPABILITY",
        b"NOOP",
        b"LOGOUT",
        b"x-originating-ip",
        b"AGJvYgBzZWNyZXQ=",
        b"\0",
        b"\xff",
    ]
)


def drive_server(
    engine: ImapLoginServer, chunks: list[bytes], answers: list[int], eof: bool
) -> tuple[bytes, list[Any]]:
    """Feed chunks; answer an auth step with a challenge, a failure or a success."""

    answer = fuzzing.auth_answers(engine, logged_in=b"a OK done\r\n")
    return fuzzing.drive_server(engine, chunks, answers, eof, answer)


@given(
    policies,
    imap_options,
    noisy,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.integers(0, 99), min_size=1),
    st.booleans(),
)
def test_server_survives_anything(policy, options, data, cuts, answers, eof):
    engine = ImapLoginServer(policy, options, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), answers, eof)
    assert engine.state in (
        "NOT_AUTHENTICATED",
        "AUTHENTICATING",
        "TLS_PENDING",
        "PROXYING",
        "CLOSED",
    )
    # every reply is a whole line: "* ...", "+ ..." or "<tag> ..."
    fuzzing.check_server_output(output, events, REPLY_LINE)


@given(st.binary(max_size=3000), st.lists(st.integers(0, 10_000), max_size=6))
def test_server_survives_raw_bytes(data, cuts):
    engine = ImapLoginServer(LoginPolicy(), hostname=lambda: "h")
    drive_server(engine, chunked(data, cuts), [1], eof=True)


login_forms = st.sampled_from(["atom", "quoted", "literal", "literal+"])
complete_lines = st.lists(
    st.sampled_from(
        [
            b"p NOOP\r\n",
            b"p CAPABILITY\r\n",
            b"p FOO\r\n",
            b"p NOOP (\r\n",
            b'p ID ("a" "b")\r\n',
            b"\r\n",
            b"p ENABLE x\r\n",
        ]
    ),
    max_size=3,
)


def encode_arg(value: bytes, form: str) -> bytes:
    if form == "atom":
        return value
    if form == "quoted":
        return b'"' + value + b'"'
    if form == "literal":
        return b"{%d}\r\n" % len(value) + value
    return b"{%d+}\r\n" % len(value) + value


@given(
    policies,
    imap_options,
    fuzzing.password_chars,
    login_forms,
    complete_lines,
    noisy,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_login_password_never_reaches_the_client(
    policy, options, password, form, before, after, cuts, eof
):
    secret = ("Pw" + password).encode()
    data = b"".join(before) + b"a LOGIN bob " + encode_arg(secret, form) + b"\r\n" + after
    engine = ImapLoginServer(policy, options, hostname=lambda: "h")
    output, events = drive_server(engine, chunked(data, cuts), [1], eof)
    fuzzing.check_secret_hidden(secret, output, events)
    begins = [event for event in events if isinstance(event, AuthBegin) and event.plaintext_login]
    if begins:
        assert begins[0].initial_response == b"\0bob\0" + secret


@given(
    st.lists(
        st.sampled_from(
            [
                b"a NOOP\r\n",
                b"b CAPABILITY\r\n",
                b"c FOO\r\n",
                b"d NOOP (x\r\n",
                b"e ENABLE\r\n",
                b"f NOOP {3}\r\nabc\r\n",
                b"g NOOP {2+}\r\nab x\r\n",
                b'h NOOP "q\\"x"\r\n',
                b"+ bad\r\n",
            ]
        ),
        max_size=8,
    ),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_chunking_does_not_change_the_replies(lines, cuts):
    """How the bytes are split across reads makes no difference (ID aside, a Dovecot quirk)."""
    data = b"".join(lines)
    whole, _ = drive_server(ImapLoginServer(LoginPolicy()), [data] if data else [], [1], eof=False)
    split, _ = drive_server(ImapLoginServer(LoginPolicy()), chunked(data, cuts), [1], eof=False)
    assert whole == split


# -- backend engine ------------------------------------------------------------------------

banners = st.sampled_from(
    [
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID STARTTLS LOGINDISABLED AUTH=PLAIN] ready\r\n",
        b"* OK ready\r\n",
        b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
        b"",
    ]
)
backend_noise = fuzzing.noise(
    [
        b"L OK ",
        b"L NO ",
        b"L NO [UNAVAILABLE] x",
        b"L BAD",
        b"S OK go",
        b"S NO",
        b"C OK ",
        b"I OK ",
        b"* CAPABILITY X",
        b"* ID NIL",
        b"* BYE x",
        b"* 1 EXISTS",
        b"+ ",
        b"+ VXNlcm5hbWU6",
        b"+ !!",
        b"+",
        b"\r\n",
        b"\n",
        b"[CAPABILITY Y] ",
        b"[",
        b"]",
    ],
    max_pieces=30,
)
backend_params = st.builds(
    ImapBackendParams,
    user=st.just("bob"),
    password=st.just("Pw-hunter2"),
    master_user=st.sampled_from(["", "master"]),
    mech=st.sampled_from(["", "PLAIN", "LOGIN", "XOAUTH2"]),
    id_pairs=st.sampled_from([(), (("x-session-id", "s"),)]),
    client_tag=st.just("t1"),
    client_ignores_capability_resp_code=st.booleans(),
    starttls=st.booleans(),
    tls_active=st.booleans(),
    nopipelining=st.booleans(),
)


@given(
    backend_params,
    banners,
    backend_noise,
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_backend_survives_anything(params, banner, data, cuts, eof):
    engine = ImapBackendLogin(params)
    sent = fuzzing.drive_backend(engine, chunked(banner + data, cuts), eof, b"hunter2")
    assert all(part.count(b"hunter2") <= 1 for part in sent)
    assert "/" in engine.state_name


# -- SASL and base64 ------------------------------------------------------------------------


@given(
    st.sampled_from(["PLAIN", "LOGIN"]),
    st.one_of(st.none(), st.binary(max_size=60)),
    st.lists(st.binary(max_size=60), max_size=4),
)
def test_sasl_servers_survive_anything(mech, initial, responses):
    server = SaslServer.create(mech)
    step = server.start(initial)
    for response in responses:
        assert isinstance(step, (Challenge, Credentials, SaslFailed))
        if not isinstance(step, Challenge):
            break
        step = server.step(response)
    if isinstance(step, Credentials):
        assert repr(step) == (
            f"Credentials(authzid={step.authzid!r}, authcid={step.authcid!r}, password=<hidden>)"
        )


@given(st.binary(max_size=200))
def test_base64_roundtrip(data):
    assert decode_base64(encode_base64(data)) == data


@given(st.binary(max_size=80))
def test_base64_decoder_agrees_with_the_stdlib_on_strict_input(text):
    ours = decode_base64(text)
    compact = text.translate(None, b"\r\n \t")
    try:
        theirs: bytes | None = base64.b64decode(compact, validate=True)
    except ValueError:
        theirs = None
    if ours is not None:
        assert theirs == ours


@given(st.binary(max_size=300).filter(lambda value: b"\0" not in value))
def test_quote_string_roundtrip_through_the_parser(value):
    buffer = InputBuffer(100_000)
    pending = bytearray(quote_string(value) + b"\r\n")
    buffer.fill_from(pending)
    parser = ImapParser(buffer, lambda: None, max_line_size=100_000)
    args = parser.read_args()
    assert args is not None
    assert len(args) == 1
    assert args[0].type is ArgType.STRING
    assert args[0].string() == value


@given(st.binary(max_size=200))
def test_next_line_reads_lines_as_splitting_does(data):
    """``InputBuffer.next_line()``: each LF-ended line once, a CR before the LF dropped."""
    buffer = InputBuffer(1000)
    buffer.fill_from(bytearray(data))
    *whole, rest = data.split(b"\n")
    for expected in whole:
        assert buffer.next_line() == expected.removesuffix(b"\r")
    assert buffer.next_line() is None
    assert buffer.peek() == rest
