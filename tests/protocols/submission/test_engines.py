"""Submission engines: Dovecot's submission-login and submission-proxy dialogues, byte for byte."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from proxyd.protocols.backend_events import (
    BackendFailed,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.events import (
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    ClientFailure,
    Close,
    LoginPolicy,
    StartTLS,
)
from proxyd.protocols.submission.backend import SubmissionBackendLogin, SubmissionBackendParams
from proxyd.protocols.submission.replies import SubmissionOptions
from proxyd.protocols.submission.server import SubmissionLoginServer
from tests.protocols import fuzzing
from tests.protocols.fuzzing import chunked
from tests.protocols.script import Script

OPEN = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False, tls_available=True)
OPTIONS = SubmissionOptions(hostname="proxy.test")
EHLO = (
    b"250-proxy.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-BURL imap\r\n250-CHUNKING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
)


def server(policy: LoginPolicy = OPEN) -> SubmissionLoginServer:
    return SubmissionLoginServer(
        policy, OPTIONS, hostname=lambda: "proxy1", clock=lambda: datetime(2024, 5, 6, 7, 8, 9)
    )


def test_greeting_and_ehlo() -> None:
    s = Script(server(), keep_greeting=True)
    s.expect(b"220 proxy.test Dovecot ready.\r\n")
    s.recv(b"EHLO client.example\r\n").expect(EHLO)
    assert (s.engine.helo, s.engine.proto) == ("client.example", "ESMTP")
    s.recv(b"HELO other\r\n").expect(b"250 proxy.test\r\n")
    assert (s.engine.helo, s.engine.proto) == ("other", "SMTP")
    s.recv(b"HELO\r\n").expect(b"501 Missing hostname\r\n")


def test_ehlo_without_plaintext_or_tls() -> None:
    policy = LoginPolicy(mechanisms=("PLAIN",), ssl="required", tls_available=True)
    s = Script(server(policy))
    s.recv(b"EHLO c\r\n").expect(
        b"250-proxy.test\r\n250-8BITMIME\r\n250-BURL imap\r\n250-CHUNKING\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
    )


def test_commands_before_login() -> None:
    s = Script(server())
    s.recv(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n").expect(
        b"530 5.7.0 Authentication required.\r\n" * 3
    )
    s.recv(b"NOOP\r\nRSET\r\nFOO\r\n").expect(
        b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n500 5.5.1 Unknown command\r\n"
    )
    s.recv(b"QUIT\r\n").expect(b"221 2.0.0 Bye\r\n", Close("Aborted login by logging out"))


def test_starttls() -> None:
    s = Script(server())
    s.recv(b"STARTTLS x\r\n").expect(b"501 5.5.4 Invalid parameters\r\n")
    s.recv(b"STARTTLS\r\n").expect(b"220 2.0.0 Begin TLS negotiation now.\r\n", StartTLS())
    s.do("tls_started", replace(OPEN, tls_active=True, secured=True)).expect()
    assert s.engine.helo is None


def test_auth_plain_and_login() -> None:
    ir = b"\0alice\0pw"
    s = Script(server())
    s.recv(b"AUTH PLAIN " + base64.b64encode(ir) + b"\r\n").expect(AuthBegin("PLAIN", ir))
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(b"535 5.7.8 Authentication failed.\r\n")
    s.recv(b"AUTH LOGIN\r\n").expect(AuthBegin("LOGIN", None))
    s.do("sasl_challenge", b"Username:").expect(b"334 VXNlcm5hbWU6\r\n")
    s.recv(base64.b64encode(b"alice") + b"\r\n").expect(AuthContinue(b"alice"))
    s.do("sasl_challenge", b"Password:").expect(b"334 UGFzc3dvcmQ6\r\n")
    s.recv(b"*\r\n").expect(b"501 5.5.2 Authentication aborted by client.\r\n", AuthAborted())
    s.recv(b"AUTH PLAIN =\r\n").expect(AuthBegin("PLAIN", b""))
    s.do("auth_failed", ClientFailure.PROXY_UNAVAILABLE).expect(
        b"454 4.7.0 Account is temporarily unavailable.\r\n"
    )
    s.recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("login_succeeded", b"235 2.7.0 Logged in.\r\n").expect(b"235 2.7.0 Logged in.\r\n")
    assert s.engine.state == "PROXYING"


def test_auth_refusals() -> None:
    s = Script(server())
    s.recv(b"AUTH\r\n").expect(b"501 5.5.4 Missing SASL mechanism parameter\r\n")
    s.recv(b"AUTH CRAM-MD5\r\n").expect(
        b"504 5.5.4 Unsupported authentication mechanism.\r\n",
        AuthRefused("Authenticate CRAM-MD5 failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )
    s.recv(b"AUTH PLAIN !!\r\n").expect(
        b"501 5.5.2 Invalid base64 data in initial response\r\n",
        AuthRefused("Authenticate PLAIN failed: Invalid base64 data in initial response", fail_code="invalid_base64"),
    )
    s = Script(server(LoginPolicy(mechanisms=("PLAIN",), tls_available=True)))
    s.recv(b"AUTH PLAIN\r\n").expect(
        b"523 5.7.10 Plaintext authentication disabled.\r\n",
        AuthRefused("Authenticate PLAIN failed: Plaintext authentication disabled.", fail_code="mech_ssl_required"),
    )


PARAMS = SubmissionBackendParams(
    user="alice", password="alicepw", hostname="proxy.test", helo="client.example", proto="ESMTP",
    remote_ip="192.0.2.7", remote_port=50000, session_id="sess1", proxy_ttl=4,
)
BACKEND_EHLO = b"250-backend\r\n250-AUTH PLAIN LOGIN\r\n250-STARTTLS\r\n250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL FORWARD\r\n"
AUTH = b"AUTH PLAIN " + base64.b64encode(b"alice\0alice\0alicepw") + b"\r\n"


def backend(params: SubmissionBackendParams = PARAMS) -> Script:
    return Script(SubmissionBackendLogin(params))


def test_backend_xclient_then_auth() -> None:
    s = backend()
    s.recv(b"220 backend ESMTP\r\n").expect(b"EHLO proxy.test\r\n")
    s.recv(BACKEND_EHLO).expect(
        b"XCLIENT HELO=client.example PROTO=ESMTP TTL=4 PORT=50000 ADDR=192.0.2.7 SESSION=sess1\r\n"
        b"EHLO proxy.test\r\n"
    )
    s.recv(b"220 backend ESMTP\r\n").expect()
    s.recv(b"250-backend\r\n250 AUTH PLAIN LOGIN\r\n").expect(AUTH)
    s.recv(b"235 2.7.0 Logged in.\r\n").expect(BackendLoggedIn(b"235 2.7.0 Logged in.\r\n"))


def test_backend_without_xclient_and_with_starttls() -> None:
    s = backend(replace(PARAMS, starttls=True))
    s.recv(b"220 b\r\n").expect(b"EHLO proxy.test\r\n")
    s.recv(b"250-b\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n").expect(b"STARTTLS\r\n")
    s.recv(b"220 2.0.0 Begin TLS negotiation now.\r\n").expect(BackendNeedsTLS())
    s.do("tls_started").expect(b"EHLO proxy.test\r\n")
    s.recv(b"250-b\r\n250 AUTH PLAIN\r\n").expect(AUTH)


def test_backend_failures() -> None:
    s = backend()
    s.recv(b"220 b\r\n250-b\r\n250 SIZE\r\n").expect(
        b"EHLO proxy.test\r\n",
        BackendFailed(ProxyFailure.REMOTE_CONFIG, "Authentication support not advertised (TLS required?)"),
    )
    s = backend(replace(PARAMS, not_trusted=True))
    s.recv(b"220 b\r\n", BACKEND_EHLO).take()
    s.recv(b"535 5.7.8 Authentication failed.\r\n").expect(
        BackendFailed(ProxyFailure.AUTH, "5.7.8 Authentication failed.", b"535 5.7.8 Authentication failed.\r\n")
    )
    s = backend(replace(PARAMS, not_trusted=True))
    s.recv(b"220 b\r\n", BACKEND_EHLO).take()
    s.recv(b"454 4.7.0 Busy\r\n").expect(
        BackendFailed(ProxyFailure.AUTH_TEMPFAIL, "4.7.0 Busy", b"454 4.7.0 Busy\r\n")
    )
    backend().recv(b"554 go away\r\n").expect(BackendFailed(ProxyFailure.PROTOCOL, "Invalid banner: 554 go away"))


def test_backend_master_user() -> None:
    s = backend(replace(PARAMS, master_user="proxymaster", password="masterpw", not_trusted=True))
    s.recv(b"220 b\r\n").take()
    s.recv(BACKEND_EHLO).expect(b"AUTH PLAIN " + base64.b64encode(b"alice\0proxymaster\0masterpw") + b"\r\n")


# -- fuzzing -------------------------------------------------------------------------------

policies = fuzzing.login_policies([("PLAIN", "LOGIN"), ("PLAIN",), ()])
#: a reply line: "<code> text" or "<code>-text"
REPLY_LINE = re.compile(rb"[0-9]{3}[ -]")
noisy = fuzzing.noise(
    [b"EHLO ", b"HELO ", b"AUTH ", b"PLAIN", b"LOGIN", b"MAIL FROM:<a>", b"STARTTLS", b"QUIT", b"*",
     b"=", b"AGJvYgBzZWNyZXQ=", b"\r\n", b"\n", b" ", b"\0", b"\xff", b"XCLIENT ", b"ADDR=192.0.2.1",
     b"TTL=0", b"FORWARD=eA+3D+3D", b"FOO\r\n" * 11, b"x" * 3000]
)


def drive(engine: SubmissionLoginServer, chunks: list[bytes], answers: list[int], eof: bool):
    answer = fuzzing.auth_answers(
        engine,
        backend_reply=b"535 5.7.8 Authentication failed.\r\n",
        logged_in=b"235 2.7.0 Logged in.\r\n",
    )
    return fuzzing.drive_server(engine, chunks, answers, eof, answer)


@given(policies, noisy, st.lists(st.integers(0, 10_000), max_size=8), st.lists(st.integers(0, 99), min_size=1), st.booleans())
def test_server_survives_anything(policy, data, cuts, answers, eof):
    engine = SubmissionLoginServer(policy, OPTIONS, hostname=lambda: "h")
    output, events = drive(engine, chunked(data, cuts), answers, eof)
    fuzzing.check_server_output(output, events, REPLY_LINE)


@given(fuzzing.password_chars, noisy, st.lists(st.integers(0, 10_000), max_size=8))
def test_password_never_reaches_the_client(password, after, cuts):
    secret = ("Pw" + password).encode()
    encoded = base64.b64encode(b"\0bob\0" + secret)
    data = b"EHLO x\r\nAUTH PLAIN " + encoded + b"\r\n" + after
    output, events = drive(server(), chunked(data, cuts), [0, 1], True)
    fuzzing.check_secret_hidden(secret, output, events, encoded)


backend_pieces = (
    [b"220 b\r\n", b"250-b\r\n", b"250 AUTH PLAIN\r\n", b"250 STARTTLS\r\n", b"250 XCLIENT ADDR HELO\r\n",
     b"334 \r\n", b"334 VXNlcm5hbWU6\r\n", b"235 ok\r\n", b"454 x\r\n", b"535 x\r\n", b"\r\n"]
)


@given(
    st.builds(
        SubmissionBackendParams, user=st.just("bob"), password=st.just("Pw-hunter2"),
        master_user=st.sampled_from(["", "m"]), mech=st.sampled_from(["", "LOGIN"]),
        starttls=st.booleans(), not_trusted=st.booleans(),
    ),
    fuzzing.noise(backend_pieces, max_pieces=30),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.booleans(),
)
def test_backend_survives_anything(params, data, cuts, eof):
    fuzzing.drive_backend(SubmissionBackendLogin(params), chunked(data, cuts), eof, b"Pw-hunter2")


def test_backend_xclient_split_over_lines_waits_for_every_reply() -> None:
    # a long HELO name and forward_* fields: Dovecot's 512-byte split, one 220 per XCLIENT line
    params = replace(PARAMS, helo="h" * 300, forward_fields=(("x-long", "v" * 200),))
    s = backend(params)
    s.recv(b"220 backend ESMTP\r\n").take()
    s.recv(BACKEND_EHLO)
    lines = s.output.split(b"\r\n")[:-1]
    s.output = b""
    assert [line.split(b" ")[0] for line in lines] == [b"XCLIENT", b"XCLIENT", b"EHLO"]
    assert lines[0] == b"XCLIENT HELO=" + b"h" * 300 + b" PROTO=ESMTP TTL=4 PORT=50000 ADDR=192.0.2.7 SESSION=sess1"
    assert lines[1].startswith(b"XCLIENT FORWARD=")
    assert len(lines[1]) > 200
    s.recv(b"220 backend ESMTP\r\n").expect()
    s.recv(b"220 backend ESMTP\r\n").expect()
    assert s.engine.state_name == "xclient-ehlo"
    s.recv(b"250-backend\r\n250 AUTH PLAIN\r\n").expect(AUTH)


def test_backend_sends_only_what_it_offers() -> None:
    s = backend()
    s.recv(b"220 b\r\n").take()
    s.recv(b"250-b\r\n250-AUTH PLAIN\r\n250 XCLIENT ADDR NAME\r\n").expect(
        b"XCLIENT ADDR=192.0.2.7\r\nEHLO proxy.test\r\n"
    )
    s = backend()
    s.recv(b"220 b\r\n").take()
    # no LOGIN without proxy_noauth, no FORWARD without forward_* fields
    s.recv(b"250-b\r\n250-AUTH PLAIN\r\n250 XCLIENT LOGIN FORWARD\r\n").expect(AUTH)


def test_backend_noauth() -> None:
    params = replace(PARAMS, noauth=True, login="alice@example.org")
    s = backend(params)
    s.recv(b"220 b\r\n").take()
    s.recv(BACKEND_EHLO).expect(
        b"XCLIENT HELO=client.example PROTO=ESMTP LOGIN=alice@example.org TTL=4 PORT=50000 "
        b"ADDR=192.0.2.7 SESSION=sess1\r\nEHLO proxy.test\r\n"
    )
    s.recv(b"220 b\r\n").expect()
    # no AUTH (the backend need not even offer it): the client is logged in
    s.recv(b"250-b\r\n250 SIZE\r\n").expect(BackendLoggedIn(b"235 2.7.0 Logged in.\r\n"))
    s = backend(replace(params, not_trusted=True))
    s.recv(b"220 b\r\n").take()
    s.recv(b"250 b\r\n").expect(BackendLoggedIn(b"235 2.7.0 Logged in.\r\n"))


def test_ehlo_follows_backend_capabilities_and_workarounds() -> None:
    # submission_backend_capabilities: only 8BITMIME/BINARYMIME/DSN/VRFY need the backends' word
    options = replace(
        OPTIONS, backend_capabilities=frozenset({"BINARYMIME", "CHUNKING", "DSN", "VRFY"}), max_mail_size=1024
    )
    s = Script(SubmissionLoginServer(OPEN, options))
    s.recv(b"EHLO c\r\n").expect(
        b"250-proxy.test\r\n250-AUTH PLAIN LOGIN\r\n250-BINARYMIME\r\n250-BURL imap\r\n250-CHUNKING\r\n"
        b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 1024\r\n250-STARTTLS\r\n250-PIPELINING\r\n250 VRFY\r\n"
    )
    # exotic-backend: nothing the backends were not said to have
    exotic = replace(OPTIONS, backend_capabilities=frozenset({"SIZE", "PIPELINING"}), exotic_backend=True)
    s = Script(SubmissionLoginServer(OPEN, exotic))
    s.recv(b"EHLO c\r\n").expect(
        b"250-proxy.test\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
    )
    # no mechanism allowed yet: lib-smtp still writes the keyword and its space
    s = Script(SubmissionLoginServer(LoginPolicy(mechanisms=("PLAIN",)), OPTIONS))
    s.recv(b"EHLO c\r\n")
    assert b"250-AUTH \r\n" in s.output


def test_too_many_bad_commands() -> None:
    s = Script(server())
    # 500/501/503 count; any other reply starts the count again
    s.recv(b"FOO\r\n" * 10 + b"NOOP\r\n")
    assert s.output.count(b"500 5.5.1 Unknown command\r\n") == 10
    s.output = b""
    s.recv(b"FOO\r\nAUTH\r\nHELO\r\n1X\r\nNOOP  x\r\nMAIL\x00\r\nXCLIENT ADDR=1.2.3.4\r\nFOO\r\n")
    assert b"421" not in s.output  # 550 (not trusted) reset the count
    s.output = b""
    s.recv(b"FOO\r\n" * 9)
    assert s.events == []
    s.output = b""
    # the eleventh gets no reply of its own (seen on Dovecot 2.3.19: lib-smtp ends the
    # session while the command is still queued)
    s.recv(b"BAR\r\nNOOP\r\n").expect(
        b"421 4.7.0 proxy.test Too many invalid commands.\r\n",
        Close("Too many invalid commands."),
    )
    assert s.engine.state == "CLOSED"
    # a command lib-smtp knows is named in the log reason as unfinished
    s = Script(server())
    s.recv(b"FOO\r\n" * 10 + b"STARTTLS x\r\n")
    assert s.output.endswith(b"500 5.5.1 Unknown command\r\n421 4.7.0 proxy.test Too many invalid commands.\r\n")
    assert s.events == [Close("Too many invalid commands. (unfinished STARTTLS command)")]


def test_bad_command_syntax_and_auth_replies_count() -> None:
    s = Script(server())
    s.recv(b"1X\r\n").expect(b"500 5.5.2 Invalid command syntax\r\n")
    s.recv(b"NOOP  x\r\n").expect(b"500 5.5.2 Invalid command syntax\r\n")
    s.recv(b"NOOP x\x01\r\n").expect(b"500 5.5.2 Invalid command syntax\r\n")
    s.recv(b"NOOP \xff\r\n").expect(b"500 5.5.2 Invalid command syntax\r\n")
    s.recv(b"noop ok \t\r\n").expect(b"250 2.0.0 OK\r\n")
    s.recv(b"MAIL FROM:<\xc3\xa4@example.org>\r\n").expect(b"530 5.7.0 Authentication required.\r\n")
    s.recv(b"X" * 33 + b"\r\n").expect(b"500 5.5.2 Invalid command syntax\r\n")
    # an aborted AUTH (501) counts when the exchange ends
    for _ in range(9):
        s.recv(b"QQQ\r\n")
    s.output = b""
    s.recv(b"AUTH LOGIN\r\n").expect(AuthBegin("LOGIN", None))
    s.do("sasl_challenge", b"Username:").expect(b"334 VXNlcm5hbWU6\r\n")
    s.recv(b"*\r\n").expect(
        b"421 4.7.0 proxy.test Too many invalid commands.\r\n",
        AuthAborted(),
        Close("Too many invalid commands. (unfinished AUTH command)"),
    )


def test_goodbye_texts() -> None:
    for text, code in (
        ("Disconnected for inactivity.", b"4.4.2"),
        ("Server shutting down.", b"4.3.2"),
        ("Connection queue full", b"4.0.0"),
    ):
        s = Script(server())
        s.do("close", text).expect(b"421 " + code + b" proxy.test " + text.encode() + b"\r\n")


def test_tls_required_and_starttls_refusals() -> None:
    # ssl = required before TLS: lib-smtp answers every command but EHLO, STARTTLS, NOOP, QUIT
    s = Script(server(LoginPolicy(mechanisms=("PLAIN",), ssl="required", tls_available=True)))
    s.recv(b"HELO c\r\nAUTH PLAIN AGEAYg==\r\nMAIL FROM:<a@b>\r\nRSET\r\nXCLIENT ADDR=1.2.3.4\r\n").expect(
        b"530 5.7.0 TLS required.\r\n" * 5
    )
    s.recv(b"FOO\r\nNOOP\r\n").expect(b"500 5.5.1 Unknown command\r\n250 2.0.0 OK\r\n")
    s = Script(server(LoginPolicy(mechanisms=("PLAIN",), tls_available=False)))
    s.recv(b"STARTTLS x\r\n").expect(b"502 5.5.1 TLS support is not enabled.\r\n")
    s = Script(server(replace(OPEN, tls_active=True, secured=True)))
    s.recv(b"STARTTLS\r\n").expect(b"502 5.5.1 TLS is already active.\r\n")
    # commands lib-smtp does not register in submission-login
    s.recv(b"BURL x\r\nEXPN x\r\nETRN x\r\n").expect(b"500 5.5.1 Unknown command\r\n" * 3)


def test_helo_name_forwarded_only_when_valid() -> None:
    s = Script(server())
    s.recv(b"EHLO [192.0.2.1]\r\n").take()
    assert s.engine.helo == "[192.0.2.1]"
    s.recv(b"HELO [192.0.2.1]\r\n").expect(b"250 proxy.test\r\n")
    assert s.engine.helo is None  # HELO takes no address literal
    s.recv(b"EHLO bad..name extra\r\n").take()
    assert s.engine.helo is None
    s.recv(b"EHLO good_name.example extra\r\n").take()
    assert s.engine.helo == "good_name.example"


def test_line_too_long_is_answered_and_skipped() -> None:
    s = Script(server())
    s.recv(b"NOOP " + b"x" * 4096 + b"\r\n").expect(b"250 2.0.0 OK\r\n")
    s.recv(b"NOOP " + b"x" * 4097 + b"\r\n").expect(b"500 5.5.2 Line too long\r\n")
    # a line that never ends within the buffer: answered once, the rest thrown away
    s.recv(b"NOOP " + b"y" * 5000, b"y" * 5000, b"yyy\r\nNOOP\r\n").expect(
        b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    )
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_noop_rset_quit_parameters() -> None:
    s = Script(server())
    s.recv(b'NOOP hello\r\nNOOP "a b \\" c"\r\n').expect(b"250 2.0.0 OK\r\n" * 2)
    s.recv(b"NOOP hello world\r\n").expect(b"501 5.5.4 Invalid string parameter: Invalid character in string\r\n")
    s.recv(b'NOOP "abc\r\n').expect(b"501 5.5.4 Invalid string parameter: Premature end of quoted string\r\n")
    s.recv(b'NOOP "a"b\r\n').expect(b"501 5.5.4 Invalid string parameter: Invalid character in string\r\n")
    s.recv(b"RSET x\r\nQUIT now\r\n").expect(b"501 5.5.4 Invalid parameters\r\n" * 2)
    s.recv(b"QUIT\r\n").expect(b"221 2.0.0 Bye\r\n", Close("Aborted login by logging out"))


def test_greeting_name_defaults_to_the_host_domain() -> None:
    from proxyd.config.settings import Settings
    from proxyd.protocols.submission.plugin import SUBMISSION

    assert SUBMISSION.login is not None
    settings = Settings(hostdomain="mail1.example.org")
    engine = SUBMISSION.login.new_server(OPEN, settings)
    assert engine.data_to_send() == b"220 mail1.example.org Dovecot ready.\r\n"
    named = settings.with_values({"hostname": "smtp.example.org"})
    assert SUBMISSION.login.new_server(OPEN, named).data_to_send() == b"220 smtp.example.org Dovecot ready.\r\n"


def test_auth_parameters_split_at_single_spaces() -> None:
    s = Script(server())
    s.recv(b"AUTH PLAIN  AGEAYg==\r\nAUTH PLAIN a b\r\n").expect(b"501 5.5.4 Invalid parameters\r\n" * 2)
    s.recv(b"AUTH PLAIN AGEAYg== \r\n").expect(AuthBegin("PLAIN", b"\0a\0b"))


@given(st.binary(max_size=80) | st.lists(st.sampled_from([b"NOOP", b" ", b"\t", b'"', b"\\", b"a", b"\xc3\xa4", b"\x01"]), max_size=20).map(b"".join))
def test_command_parser_never_breaks(line: bytes) -> None:
    from proxyd.protocols.submission import replies
    from proxyd.protocols.submission.server import _parse_command, _string_error

    parsed = _parse_command(line)
    if isinstance(parsed, bytes):
        assert parsed in (replies.INVALID_SYNTAX, replies.LINE_TOO_LONG)
        return
    name, params = parsed
    assert name.isascii()
    assert (name.isalpha() or not name)
    assert name == name.upper()
    assert not params.startswith(b" ")
    assert not params.endswith((b" ", b"\t"))
    params.decode("utf-8")  # lib-smtp accepts only valid UTF-8
    error = _string_error(params)
    assert error is None or error.startswith(("Invalid character", "Premature end"))
