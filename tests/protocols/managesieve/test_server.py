"""ManageSieveLoginServer: Pigeonhole's managesieve-login dialogue, byte for byte."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime

import pytest

from proxyd.protocols.events import (
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    ClientFailure,
    Close,
    LoginPolicy,
    StartTLS,
    TrustedClientInfo,
)
from proxyd.protocols.managesieve.replies import SieveOptions
from proxyd.protocols.managesieve.server import ManageSieveLoginServer
from tests.protocols.script import Script

OPEN = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False)
OPTIONS = SieveOptions(implementation="Dovecot Pigeonhole", sieve_capability="fileinto vacation")
CAPS = (
    b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n'
    b'"SIEVE" "fileinto vacation"\r\n'
    b'"NOTIFY" "mailto"\r\n'
    b'"SASL" "PLAIN LOGIN"\r\n'
)
VERSION = b'"VERSION" "1.0"\r\n'
BAD = b'NO "Error in MANAGESIEVE command received by server."\r\n'


def engine(policy: LoginPolicy = OPEN, options: SieveOptions = OPTIONS) -> ManageSieveLoginServer:
    return ManageSieveLoginServer(
        policy, options, hostname=lambda: "proxy1", clock=lambda: datetime(2024, 5, 6, 7, 8, 9)
    )


def script(policy: LoginPolicy = OPEN, options: SieveOptions = OPTIONS) -> Script:
    return Script(engine(policy, options))


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_greeting_is_the_capabilities_then_ok() -> None:
    greeting = engine().data_to_send()
    assert greeting == CAPS + VERSION + b'OK "Dovecot ready."\r\n'


def test_greeting_with_tls_and_trusted_peer() -> None:
    policy = replace(OPEN, tls_available=True, trusted=True, greeting="Hi there.")
    greeting = engine(policy).data_to_send()
    assert greeting == CAPS + b'"STARTTLS"\r\n' + VERSION + b'"XCLIENT"\r\n' + b'OK "Hi there."\r\n'


def test_no_notify_line_when_the_capability_is_empty() -> None:
    greeting = engine(options=replace(OPTIONS, notify_capability="")).data_to_send()
    assert b"NOTIFY" not in greeting


def test_sasl_line_follows_the_plaintext_rules() -> None:
    policy = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), tls_available=True)
    assert b'"SASL" ""\r\n' in engine(policy).data_to_send()


def test_capability_noop_logout() -> None:
    s = script()
    s.recv(b"CAPABILITY\r\n").expect(CAPS + VERSION + b'OK "Capability completed."\r\n')
    s.recv(b"noop\r\n").expect(b'OK "NOOP Completed"\r\n')
    s.recv(b'NOOP "tag1"\r\n').expect(b'OK (TAG "tag1") "Done"\r\n')
    s.recv(b"NOOP atom\r\n").expect(b'NO "Invalid echo tag."\r\n')
    s.recv(b"LOGOUT\r\n").expect(b'OK "Logout completed."\r\n', Close("Disconnected: Aborted login by logging out"))


def test_literal_arguments() -> None:
    s = script()
    s.recv(b"NOOP {4+}\r\nab", b"cd\r\n").expect(b'OK (TAG "abcd") "Done"\r\n')


def test_bad_commands_end_the_session_on_the_third() -> None:
    s = script()
    s.recv(b"FOO\r\n").expect(BAD)
    s.recv(b"CAPABILITY x\r\n").expect(BAD)
    s.recv(b"BAR\r\n").expect(
        b'BYE "Too many invalid MANAGESIEVE commands."\r\n', Close("Too many invalid commands.")
    )


def test_a_good_command_resets_the_bad_counter() -> None:
    s = script()
    s.recv(b"FOO\r\nFOO\r\nNOOP\r\nFOO\r\n").expect(BAD, BAD, b'OK "NOOP Completed"\r\n', BAD)


def test_syntax_errors_are_no_and_not_counted() -> None:
    s = script()
    s.recv(b'NOOP "a\\x"\r\n').expect(
        b'NO "Escaped quoted-string character is not a QUOTED-SPECIAL."\r\n'
    )
    s.recv(b"NOOP {x}\r\n").expect(b'NO "Invalid literal size"\r\n')
    s.recv(b"NOOP\r\n").expect(b'OK "NOOP Completed"\r\n')


def test_a_literal_too_large_is_fatal() -> None:
    s = script()
    s.recv(b"NOOP {99999+}\r\n").expect(
        b'BYE "Literal size too large"\r\n', Close("Literal size too large")
    )


def test_starttls_sends_the_capabilities_again() -> None:
    policy = replace(OPEN, tls_available=True)
    s = script(policy)
    s.recv(b"STARTTLS\r\n").expect(b'OK "Begin TLS negotiation now."\r\n', StartTLS())
    secured = replace(policy, tls_active=True, secured=True)
    s.do("tls_started", secured).expect(CAPS + VERSION + b'OK "TLS negotiation successful."\r\n')
    s.recv(b"STARTTLS\r\n").expect(b'NO "TLS is already active."\r\n')


def test_starttls_without_tls() -> None:
    script().recv(b"STARTTLS\r\n").expect(b'NO "TLS support isn\'t enabled."\r\n')


def test_authenticate_plain_with_initial_response() -> None:
    ir = b"\0alice\0pw"
    s = script()
    s.recv(b'AUTHENTICATE "PLAIN" "' + b64(ir) + b'"\r\n').expect(AuthBegin("PLAIN", ir))
    assert s.engine.state == "AUTHENTICATING"
    s.do("login_succeeded", b'OK "Logged in."\r\n').expect(b'OK "Logged in."\r\n')
    assert s.engine.state == "PROXYING"


def test_authenticate_login_with_challenges_and_literal_response() -> None:
    s = script()
    s.recv(b'AUTHENTICATE "LOGIN"\r\n').expect(AuthBegin("LOGIN", None))
    s.do("sasl_challenge", b"Username:").expect(b'"VXNlcm5hbWU6"\r\n')
    s.recv(b'"' + b64(b"alice") + b'"\r\n').expect(AuthContinue(b"alice"))
    s.do("sasl_challenge", b"Password:").expect(b'"UGFzc3dvcmQ6"\r\n')
    s.recv(b"{4+}\r\n" + b64(b"pw") + b"\r\n").expect(AuthContinue(b"pw"))
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(b'NO "Authentication failed."\r\n')
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_authenticate_abort() -> None:
    s = script()
    s.recv(b'AUTHENTICATE "PLAIN"\r\n').expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b'""\r\n')
    s.recv(b'"*"\r\n').expect(b'NO "Authentication aborted by client."\r\n', AuthAborted())


def test_authenticate_bad_response_line() -> None:
    s = script()
    s.recv(b'AUTHENTICATE "PLAIN"\r\n').expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b'""\r\n')
    s.recv(b"\r\n").expect(
        b'NO "Received empty AUTHENTICATE client response line."\r\n',
        AuthRefused(
            "Authenticate PLAIN failed: Received empty AUTHENTICATE client response line.",
            during_exchange=True,
        ),
    )


@pytest.mark.parametrize(
    ("failure", "reply"),
    [
        (
            ClientFailure.TEMPFAIL,
            b'NO (TRYLATER) "Temporary authentication failure. [proxy1:2024-05-06 07:08:09]"\r\n',
        ),
        (ClientFailure.PROXY_UNAVAILABLE, b'NO (TRYLATER) "Account is temporarily unavailable."\r\n'),
        (ClientFailure.PROXY_SERVERBUG, b'NO "Account is temporarily unavailable."\r\n'),
        (ClientFailure.AUTHZ_FAILED, b'NO "Authorization failed"\r\n'),
    ],
)
def test_failure_texts(failure: ClientFailure, reply: bytes) -> None:
    s = script()
    s.recv(b'AUTHENTICATE "PLAIN" "' + b64(b"\0a\0b") + b'"\r\n').take()
    s.do("auth_failed", failure).expect(reply)


def test_authenticate_refusals() -> None:
    s = script(LoginPolicy(mechanisms=("PLAIN",), tls_available=True))
    s.recv(b'AUTHENTICATE "PLAIN"\r\n').expect(
        b'NO "Plaintext authentication disabled."\r\n',
        AuthRefused("Authenticate PLAIN failed: Plaintext authentication disabled.", fail_code="mech_ssl_required"),
    )
    s.recv(b'AUTHENTICATE "CRAM-MD5"\r\n').expect(
        b'NO "Unsupported authentication mechanism."\r\n',
        AuthRefused("Authenticate CRAM-MD5 failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )
    s = script(LoginPolicy(ssl="required", tls_available=True))
    s.recv(b'AUTHENTICATE "PLAIN"\r\n').expect(
        b'NO (ENCRYPT-NEEDED) "Authentication not allowed until SSL/TLS is enabled."\r\n',
        AuthRefused("Login failed: SSL required for authentication"),
    )
    s = script()
    s.recv(b'AUTHENTICATE "PLAIN" "!!"\r\n').expect(
        b'NO "Invalid base64 data in initial response"\r\n',
        AuthRefused("Authenticate PLAIN failed: Invalid base64 data in initial response", fail_code="invalid_base64"),
    )
    s.recv(b'AUTHENTICATE "PLAIN" "a" "b"\r\n').expect(b'NO "Invalid AUTHENTICATE initial response."\r\n')
    # the mechanism must be a string, not an atom
    s.recv(b"AUTHENTICATE PLAIN\r\n").expect(BAD)


def test_xclient_from_a_trusted_peer() -> None:
    s = script(replace(OPEN, trusted=True))
    s.take()
    s.recv(b"XCLIENT ADDR=192.0.2.9 PORT=4711 SESSION=abc TTL=3\r\n").expect(
        TrustedClientInfo(remote_ip="192.0.2.9", remote_port=4711, session_id="abc", proxy_ttl=3),
        b'OK "Updated"\r\n',
    )


def test_xclient_from_anyone_else() -> None:
    script().recv(b"XCLIENT ADDR=192.0.2.9\r\n").expect(b'NO "You are not from trusted IP"\r\n')


def test_input_split_anywhere_gives_the_same_result() -> None:
    data = b'NOOP "x"\r\nAUTHENTICATE "PLAIN" "' + b64(b"\0u\0p") + b'"\r\n'
    whole = script().recv(data).take()
    split = script().recv(*[data[i : i + 1] for i in range(len(data))]).take()
    assert whole == split
    assert whole[1] == [AuthBegin("PLAIN", b"\0u\0p")]


def test_eof_closes() -> None:
    script().recv(b"NOO", b"").expect(Close("Connection closed"))


def test_a_line_longer_than_the_limit_is_refused_and_skipped() -> None:
    s = script()
    s.recv(b"NOOP " + b"a" * 9000 + b"\r\n").expect(b'NO "MANAGESIEVE command line too large"\r\n')
    s.recv(b"NOOP\r\n").expect(b'OK "NOOP Completed"\r\n')
