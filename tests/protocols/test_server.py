"""ImapLoginServer against Dovecot 2.3's imap-login texts and limits.

Expected bytes were checked against a running Dovecot 2.3.19 (Debian 12) with
the same inputs, chunk by chunk.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from proxyd.protocols.engine import EngineUsageError
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
from proxyd.protocols.imap.server import ImapLoginServer, ImapOptions

from .script import Script

CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
OPEN = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False)
BAD = b"BAD Error in IMAP command received by server.\r\n"
AUTH_FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


def engine(policy: LoginPolicy = OPEN, **kwargs) -> ImapLoginServer:
    return ImapLoginServer(
        policy,
        hostname=lambda: "proxy1",
        clock=lambda: datetime(2024, 5, 6, 7, 8, 9),
        **kwargs,
    )


def script(policy: LoginPolicy = OPEN, **kwargs) -> Script:
    return Script(engine(policy, **kwargs))


def login_begin(user: bytes, password: bytes) -> AuthBegin:
    return AuthBegin("PLAIN", b"\0" + user + b"\0" + password, plaintext_login=True)


# -- greeting and capabilities ------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "caps"),
    [
        (OPEN, f"{CAPS} AUTH=PLAIN AUTH=LOGIN"),
        (replace(OPEN, tls_available=True), f"{CAPS} STARTTLS AUTH=PLAIN AUTH=LOGIN"),
        (
            replace(OPEN, tls_available=True, tls_active=True, secured=True),
            f"{CAPS} AUTH=PLAIN AUTH=LOGIN",
        ),
        (
            (OPEN, ImapOptions(capability="+XAPPLE")),
            f"{CAPS.replace(' LITERAL+', '')} XAPPLE LITERAL+ AUTH=PLAIN AUTH=LOGIN",
        ),
        ((OPEN, ImapOptions(capability="IMAP4rev1 ID")), "IMAP4rev1 ID AUTH=PLAIN AUTH=LOGIN"),
        # not secured, disable_plaintext_auth: LOGINDISABLED and no plaintext mechanisms
        (
            LoginPolicy(mechanisms=("PLAIN", "CRAM-MD5"), tls_available=True),
            f"{CAPS} STARTTLS LOGINDISABLED AUTH=CRAM-MD5",
        ),
        # ssl=required and not secured: no AUTH= at all
        (
            LoginPolicy(mechanisms=("PLAIN",), ssl="required", tls_available=True),
            f"{CAPS} STARTTLS LOGINDISABLED",
        ),
        # secured without PLAIN: LOGIN cannot work
        (
            LoginPolicy(mechanisms=("CRAM-MD5",), secured=True),
            f"{CAPS} LOGINDISABLED AUTH=CRAM-MD5",
        ),
        (LoginPolicy(mechanisms=("PLAIN",), secured=True), f"{CAPS} AUTH=PLAIN"),
    ],
)
def test_greeting_capabilities(policy, caps):
    policy, options = policy if isinstance(policy, tuple) else (policy, ImapOptions())
    greeting = engine(policy, options=options).data_to_send()
    assert greeting == f"* OK [CAPABILITY {caps}] Dovecot ready.\r\n".encode()


def test_greeting_text():
    assert (
        engine(replace(OPEN, greeting="Dovecot (Debian) ready."))
        .data_to_send()
        .endswith(b"] Dovecot (Debian) ready.\r\n")
    )


def test_capability_command():
    s = script(replace(OPEN, tls_available=True))
    s.recv(b"a CAPABILITY\r\n").expect(
        f"* CAPABILITY {CAPS} STARTTLS AUTH=PLAIN AUTH=LOGIN\r\n".encode(),
        b"a OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
    )
    assert s.engine.client_ignores_capability_resp_code


def test_capability_after_starttls_does_not_set_the_flag():
    s = script(replace(OPEN, tls_available=True))
    s.recv(b"a STARTTLS\r\n").expect(b"a OK Begin TLS negotiation now.\r\n", StartTLS())
    s.do("tls_started", replace(OPEN, tls_available=True, tls_active=True, secured=True))
    s.recv(b"b CAPABILITY\r\n").expect(
        f"* CAPABILITY {CAPS} AUTH=PLAIN AUTH=LOGIN\r\n".encode(),
        b"b OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
    )
    assert not s.engine.client_ignores_capability_resp_code


# -- simple commands ------------------------------------------------------------------


def test_noop():
    script().recv(b"a NOOP\r\n").expect(b"a OK NOOP completed.\r\n")


def test_command_names_are_case_insensitive():
    script().recv(b"a noop\r\n").expect(b"a OK NOOP completed.\r\n")


def test_enable():
    script().recv(b"a ENABLE CONDSTORE\r\n").expect(
        b"* ENABLED\r\n", b"a OK ENABLE ignored in non-authenticated state.\r\n"
    )


def test_logout():
    s = script()
    s.recv(b"a LOGOUT\r\nb NOOP\r\n").expect(
        b"* BYE Logging out\r\n",
        b"a OK Logout completed.\r\n",
        Close("Aborted login by logging out"),
    )
    assert s.engine.state == "CLOSED"
    s.recv(b"c NOOP\r\n").expect()  # nothing more is read


def test_eof():
    script().recv(b"a NOOP\r\n", b"").expect(
        b"a OK NOOP completed.\r\n", Close("Connection closed")
    )


def test_eof_mid_command():
    script().recv(b"a NO", b"").expect(Close("Connection closed"))


def test_pipelined_commands_in_one_read():
    script().recv(b"a NOOP\r\nb NOOP\r\nc ENABLE\r\n").expect(
        b"a OK NOOP completed.\r\nb OK NOOP completed.\r\n",
        b"* ENABLED\r\nc OK ENABLE ignored in non-authenticated state.\r\n",
    )


def test_command_byte_by_byte():
    s = script()
    for byte in b"a NOOP\r\n":
        s.recv(bytes([byte]))
    s.expect(b"a OK NOOP completed.\r\n")


def test_bare_lf_ends_a_line():
    script().recv(b"a NOOP\nb NOOP\n").expect(b"a OK NOOP completed.\r\nb OK NOOP completed.\r\n")


# -- bad commands -------------------------------------------------------------------


def test_unknown_command():
    script().recv(b"a FOO\r\n").expect(b"a " + BAD)


def test_empty_line_is_a_bad_command_without_tag():
    script().recv(b"\r\n").expect(b"* " + BAD)


@pytest.mark.parametrize("tag", [b"a+b", b"a*b", b"a(b", b'a"b', b"a]b", b"a%b", b"\xe4"])
def test_invalid_tag_is_never_echoed(tag):
    script().recv(tag + b" NOOP\r\n").expect(b"* " + BAD)


def test_tag_length_limit():
    script().recv(b"a" * 126 + b" NOOP\r\n").expect(b"a" * 126 + b" OK NOOP completed.\r\n")
    script().recv(b"a" * 127 + b" NOOP\r\n").expect(b"* " + BAD)


def test_invalid_command_name():
    script().recv(b"a NO(OP\r\n").expect(b"a " + BAD)


def test_third_bad_command_only_says_bye():
    script().recv(b"a FOO\r\nb NOOP\r\nc FOO\r\nd FOO\r\ne NOOP\r\n").expect(
        b"a " + BAD,
        b"b OK NOOP completed.\r\n",  # good commands do not reset the counter
        b"c " + BAD,
        b"* BYE Too many invalid IMAP commands.\r\n",
        Close("Too many invalid commands"),
    )


def test_max_bad_commands_comes_from_the_policy():
    script(replace(OPEN, max_bad_commands=1)).recv(b"a FOO\r\n").expect(
        b"* BYE Too many invalid IMAP commands.\r\n", Close("Too many invalid commands")
    )


def test_forgotten_tag():
    script().recv(b"LOGIN bob secret\r\n").expect(
        b"LOGIN BAD First parameter in line is IMAP's command tag, not the command name. "
        b"Add that before the command, like: a login user pass\r\n"
    )


def test_forgotten_tag_does_not_count_as_bad():
    s = script()
    s.recv(b"login a b\r\n" * 3 + b"a NOOP\r\n")
    output, events = s.take()
    assert output.endswith(b"a OK NOOP completed.\r\n")
    assert events == []


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"a NOOP (\r\n", b"a BAD Missing ')'\r\n"),
        (b"a NOOP )\r\n", b"a BAD Unexpected ')'\r\n"),
        (b'a NOOP "x\r\n', b"a BAD Missing '\"'\r\n"),
        (b"a NOOP \xc3\xa4\r\n", b"a BAD 8bit data in atom\r\n"),
        (b'a NOOP "a\0b"\r\n', b"a BAD NULs not allowed in strings\r\n"),
    ],
)
def test_parser_errors_reply_bad_with_the_parser_text(line, reply):
    script().recv(line).expect(reply)


def test_parser_errors_do_not_count_as_bad_commands():
    script().recv(b"a NOOP (\r\n" * 5 + b"b NOOP\r\n").expect(
        b"a BAD Missing ')'\r\n" * 5, b"b OK NOOP completed.\r\n"
    )


def test_arguments_are_parsed_before_the_command_is_looked_up():
    script().recv(b"a FOO (\r\n").expect(b"a BAD Missing ')'\r\n")


# -- limits (DoS countermeasures) ----------------------------------------------------


def test_input_buffer_full_on_a_long_tag():
    script().recv(b"a" * 1026 + b" NOOP\r\n").expect(
        b"* BYE Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_a_long_invalid_tag_that_fits():
    script().recv(b"a" * 1025 + b" NOOP\r\n").expect(b"* " + BAD)


def test_an_argument_must_fit_the_input_buffer():
    script().recv(b"a NOOP " + b"x" * 1025 + b"\r\n").expect(b"a OK NOOP completed.\r\n")
    script().recv(b"a NOOP " + b"x" * 1026 + b"\r\n").expect(
        b"* BYE Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_quoted_string_must_fit_the_input_buffer():
    script().recv(b'a NOOP "' + b"x" * 1024 + b'"\r\n').expect(b"a OK NOOP completed.\r\n")
    script().recv(b'a NOOP "' + b"x" * 1025 + b'"\r\n').expect(
        b"* BYE Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_many_small_arguments_hit_the_line_limit_not_the_buffer():
    script().recv(b"a NOOP " + b"x " * 4500 + b"\r\nb NOOP\r\n").expect(
        b"a BAD IMAP command line too large\r\n", b"b OK NOOP completed.\r\n"
    )


def test_literal_must_fit_the_input_buffer():
    script().recv(b"a NOOP {1026}\r\n", b"y" * 1026 + b"\r\n").expect(
        b"+ OK\r\n", b"a OK NOOP completed.\r\n"
    )
    script().recv(b"a NOOP {1027}\r\n", b"y" * 1027 + b"\r\n").expect(
        b"+ OK\r\n", b"* BYE Input buffer full, aborting\r\n", Close("Input buffer full")
    )


@pytest.mark.parametrize("literal", [b"{8180}", b"{9000}", b"{9000+}", b"{99999999999999999999}"])
def test_literal_too_large(literal):
    script().recv(b"a NOOP " + literal + b"\r\n").expect(
        b"* BYE Literal size too large\r\n", Close("Literal size too large")
    )


def test_limits_are_constructor_arguments():
    script(max_inbuf=16).recv(b"a NOOP " + b"x" * 16 + b"\r\n").expect(
        b"* BYE Input buffer full, aborting\r\n", Close("Input buffer full")
    )
    script(max_line=20).recv(b"a NOOP {20}\r\n").expect(
        b"* BYE Literal size too large\r\n", Close("Literal size too large")
    )


def test_large_pipelined_input_is_read_buffer_by_buffer():
    """2000 NOOPs in one chunk: read 1026 bytes at a time, never "buffer full"."""
    output, events = script().recv(b"a NOOP\r\n" * 2000).take()
    assert output == b"a OK NOOP completed.\r\n" * 2000
    assert events == []


# -- STARTTLS -----------------------------------------------------------------------


TLS = replace(OPEN, tls_available=True)
TLS_DONE = replace(OPEN, tls_available=True, tls_active=True, secured=True)


def test_starttls_not_enabled():
    script().recv(b"a STARTTLS\r\n").expect(b"a BAD TLS support isn't enabled.\r\n")


def test_starttls_already_active():
    script(TLS_DONE).recv(b"a STARTTLS\r\n").expect(b"a BAD TLS is already active.\r\n")


def test_starttls_leftovers_are_never_executed():
    s = script(TLS)
    s.recv(b"a STARTTLS\r\nb LOGIN bob secret\r\n").expect(
        b"a OK Begin TLS negotiation now.\r\n", StartTLS()
    )
    assert s.engine.state == "TLS_PENDING"
    s.recv(b"c LOGOUT\r\n").expect()  # still nothing parsed
    assert s.engine.trailing_data() == b"b LOGIN bob secret\r\nc LOGOUT\r\n"
    s.do("tls_started", TLS_DONE).expect()
    s.recv(b"d NOOP\r\n").expect(b"d OK NOOP completed.\r\n")


def test_starttls_handshake_bytes_after_leftovers_are_dropped_on_tls_started():
    s = script(TLS)
    s.recv(b"a STARTTLS\r\nb NOOP\r\n").expect(b"a OK Begin TLS negotiation now.\r\n", StartTLS())
    s.do("tls_started", TLS_DONE).expect()
    s.recv(b"c NOOP\r\n").expect(b"c OK NOOP completed.\r\n")


def test_after_starttls_the_capabilities_change():
    s = script(TLS)
    s.recv(b"a STARTTLS\r\n").expect(b"a OK Begin TLS negotiation now.\r\n", StartTLS())
    s.do("tls_started", TLS_DONE)
    s.recv(b"b CAPABILITY\r\n").expect(
        f"* CAPABILITY {CAPS} AUTH=PLAIN AUTH=LOGIN\r\n".encode(),
        b"b OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
    )


def test_tls_started_only_after_starttls():
    with pytest.raises(EngineUsageError):
        engine().tls_started(TLS_DONE)


# -- LOGIN ----------------------------------------------------------------------------


def test_login_atoms():
    s = script()
    s.recv(b"a LOGIN bob secret\r\n").expect(login_begin(b"bob", b"secret"))
    assert s.engine.state == "AUTHENTICATING"
    assert s.engine.current_tag == "a"
    assert s.engine.auth_attempts == 1


def test_login_quoted():
    script().recv(b'a LOGIN "bob" "se \\"cr\\\\et"\r\n').expect(login_begin(b"bob", b'se "cr\\et'))


def test_login_synchronizing_literals():
    script().recv(b"a LOGIN {3}\r\n", b"bob {6}\r\n", b"secret\r\n").expect(
        b"+ OK\r\n+ OK\r\n", login_begin(b"bob", b"secret")
    )


def test_login_nonsync_literals_in_one_read():
    script().recv(b"a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n").expect(login_begin(b"bob", b"secret"))


def test_login_literal_split_everywhere():
    s = script()
    data = b"a LOGIN {3}\r\nbob {6}\r\nsecret\r\n"
    for byte in data:
        s.recv(bytes([byte]))
    s.expect(b"+ OK\r\n+ OK\r\n", login_begin(b"bob", b"secret"))


def test_login_literal_with_nul_is_cut():
    script().recv(b"a LOGIN {3+}\r\nb\0b pw\r\n").expect(login_begin(b"b", b"pw"))


def test_login_nil_is_the_string_nil():
    script().recv(b"a LOGIN nil NIL\r\n").expect(login_begin(b"nil", b"NIL"))


@pytest.mark.parametrize("args", [b"", b" bob", b" bob pw extra", b" (bob) pw", b" bob (pw)"])
def test_login_needs_exactly_two_astrings(args):
    script().recv(b"a LOGIN" + args + b"\r\n").expect(b"a " + BAD)


def test_login_without_plain_mechanism():
    s = script(replace(OPEN, mechanisms=("LOGIN",)))
    s.recv(b"a LOGIN bob pw\r\n").expect(
        b"a NO [ALERT] Unsupported authentication mechanism.\r\n",
        AuthRefused("Authenticate PLAIN failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )


PLAINTEXT_NOTICE = (
    b"* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it "
    b"anyway. If anyone was listening, the password was exposed.\r\n"
)
PLAINTEXT_NO = b"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"


@pytest.mark.parametrize(
    "policy",
    [
        LoginPolicy(mechanisms=("PLAIN",)),  # disable_plaintext_auth=yes
        LoginPolicy(mechanisms=("PLAIN",), ssl="required", disable_plaintext_auth=False),
    ],
)
def test_login_plaintext_refused(policy):
    s = script(policy)
    s.recv(b"a LOGIN bob secret\r\nb NOOP\r\n").expect(
        PLAINTEXT_NOTICE,
        PLAINTEXT_NO,
        b"b OK NOOP completed.\r\n",
        AuthRefused("Login failed: Plaintext authentication disabled"),
    )
    assert s.engine.auth_attempts == 1


@pytest.mark.parametrize(
    ("policy", "allowed"),
    [
        (LoginPolicy(mechanisms=("PLAIN",)), False),
        (LoginPolicy(mechanisms=("PLAIN",), secured=True), True),
        (LoginPolicy(mechanisms=("PLAIN",), disable_plaintext_auth=False), True),
        (LoginPolicy(mechanisms=("PLAIN",), disable_plaintext_auth=False, ssl="required"), False),
        (LoginPolicy(mechanisms=("PLAIN",), ssl="required", secured=True), True),
        (LoginPolicy(mechanisms=("PLAIN",), ssl="no", disable_plaintext_auth=False), True),
    ],
)
def test_login_plaintext_matrix(policy, allowed):
    output, events = script(policy).recv(b"a LOGIN bob secret\r\n").take()
    if allowed:
        assert (output, events) == (b"", [login_begin(b"bob", b"secret")])
    else:
        assert output == PLAINTEXT_NOTICE + PLAINTEXT_NO


def test_login_password_never_echoed():
    output, _ = script(LoginPolicy()).recv(b"a LOGIN bob hunter2\r\n").take()
    assert b"hunter2" not in output


# -- AUTHENTICATE ---------------------------------------------------------------------


def test_authenticate_plain_with_initial_response():
    script().recv(b"a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n").expect(
        AuthBegin("PLAIN", b"\0bob\0secret")
    )


def test_authenticate_mechanism_case_insensitive():
    script().recv(b"a authenticate plain =\r\n").expect(AuthBegin("PLAIN", b""))


def test_authenticate_without_initial_response():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"AGJvYgBzZWNyZXQ=\r\n").expect(AuthContinue(b"\0bob\0secret"))


def test_authenticate_trailing_space_means_no_initial_response():
    script().recv(b"a AUTHENTICATE PLAIN \r\n").expect(AuthBegin("PLAIN", None))


def test_authenticate_login_dialogue():
    s = script()
    s.recv(b"a AUTHENTICATE LOGIN\r\n").expect(AuthBegin("LOGIN", None))
    s.do("sasl_challenge", b"Username:").expect(b"+ VXNlcm5hbWU6\r\n")
    s.recv(b"Ym9i\r\n").expect(AuthContinue(b"bob"))
    s.do("sasl_challenge", b"Password:").expect(b"+ UGFzc3dvcmQ6\r\n")
    s.recv(b"c2VjcmV0\r\n").expect(AuthContinue(b"secret"))
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(b"a " + AUTH_FAILED)
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_authenticate_response_pipelined_before_the_challenge():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n", AuthContinue(b"\0bob\0secret"))


def test_authenticate_abort():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"*\r\nb NOOP\r\n").expect(
        b"a BAD Authentication aborted by client.\r\n", b"b OK NOOP completed.\r\n", AuthAborted()
    )


def test_authenticate_continuation_with_non_base64_characters():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"AGJvYgBz ZWNyZXQ=\r\n").expect(
        b"a NO [ALERT] Invalid base64 in response\r\n",
        AuthRefused(
            "Authenticate PLAIN failed: Invalid base64 in response", during_exchange=True, fail_code="invalid_base64"
        ),
    )
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_authenticate_continuation_with_bad_padding():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n")
    s.do("sasl_challenge", b"").take()
    s.recv(b"=\r\n").expect(
        b"a BAD Invalid base64 data in continued response\r\n",
        AuthRefused(
            "Authenticate PLAIN failed: Invalid base64 data in continued response",
            during_exchange=True,
            fail_code="invalid_base64",
        ),
    )


def test_authenticate_initial_response_with_bad_base64():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN !!!!\r\nb NOOP\r\n").expect(
        b"a BAD Invalid base64 data in initial response\r\n",
        b"b OK NOOP completed.\r\n",
        AuthRefused("Authenticate PLAIN failed: Invalid base64 data in initial response", fail_code="invalid_base64"),
    )
    assert s.engine.auth_attempts == 1


def test_authenticate_initial_response_tolerates_white_space_like_dovecot():
    script().recv(b"a AUTHENTICATE PLAIN  AGJvYgBzZWNyZXQ=\r\n").expect(
        AuthBegin("PLAIN", b"\0bob\0secret")
    )


def test_authenticate_unknown_mechanism():
    s = script()
    s.recv(b"a AUTHENTICATE FOO\r\nb NOOP\r\n").expect(
        b"a NO [ALERT] Unsupported authentication mechanism.\r\n",
        b"b OK NOOP completed.\r\n",
        AuthRefused("Authenticate FOO failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )
    assert s.engine.auth_attempts == 1


def test_apop_is_private_to_pop3():
    """APOP in auth_mechanisms is neither advertised nor accepted by AUTHENTICATE (MECH_SEC_PRIVATE);
    the mechanisms that hide the password stay offered without TLS."""
    policy = LoginPolicy(mechanisms=("PLAIN", "APOP", "CRAM-MD5", "SCRAM-SHA-256"))
    s = script(policy)
    s.recv(b"c CAPABILITY\r\n")
    out, _ = s.take()
    assert b" AUTH=CRAM-MD5 AUTH=SCRAM-SHA-256" in out
    assert b"APOP" not in out
    assert b"AUTH=PLAIN" not in out
    s.recv(b"a AUTHENTICATE APOP\r\n").expect(
        b"a NO [ALERT] Unsupported authentication mechanism.\r\n",
        AuthRefused("Authenticate APOP failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )
    s.recv(b"b AUTHENTICATE CRAM-MD5\r\n").expect(AuthBegin("CRAM-MD5", None))


@pytest.mark.parametrize("line", [b"a AUTHENTICATE\r\n", b"a AUTHENTICATE  PLAIN\r\n"])
def test_authenticate_empty_mechanism(line):
    script().recv(line).expect(b"a " + BAD)


def test_authenticate_plaintext_mechanism_disabled():
    s = script(LoginPolicy(mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"), tls_available=True))
    s.recv(b"c AUTHENTICATE PLAIN\r\nd AUTHENTICATE LOGIN\r\ne AUTHENTICATE CRAM-MD5\r\n").expect(
        b"c NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n",
        b"d NO [PRIVACYREQUIRED] Plaintext authentication disabled.\r\n",
        AuthRefused("Authenticate PLAIN failed: Plaintext authentication disabled.", fail_code="mech_ssl_required"),
        AuthRefused("Authenticate LOGIN failed: Plaintext authentication disabled.", fail_code="mech_ssl_required"),
        AuthBegin("CRAM-MD5", None),
    )


def test_authenticate_ssl_required():
    s = script(LoginPolicy(mechanisms=("PLAIN", "CRAM-MD5"), ssl="required", tls_available=True))
    s.recv(b"c AUTHENTICATE CRAM-MD5\r\nd AUTHENTICATE FOO\r\n").expect(
        b"c NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is enabled.\r\n",
        b"d NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is enabled.\r\n",
        AuthRefused("Login failed: SSL required for authentication"),
        AuthRefused("Login failed: SSL required for authentication"),
    )
    assert s.engine.auth_attempts == 2


def test_authenticate_initial_response_limit():
    script().recv(b"a AUTHENTICATE PLAIN " + b"A" * 8190 + b"\r\n").expect(
        b"a BAD Invalid base64 data in initial response\r\n",
        AuthRefused("Authenticate PLAIN failed: Invalid base64 data in initial response", fail_code="invalid_base64"),
    )
    script().recv(b"a AUTHENTICATE PLAIN " + b"A" * 8193 + b"\r\n").expect(
        Close("Authentication response too large")
    )


def test_authenticate_continuation_limit():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n")
    s.do("sasl_challenge", b"").take()
    s.recv(b"A" * 8191 + b"\r\n").expect(
        b"a BAD Invalid base64 data in continued response\r\n",
        AuthRefused(
            "Authenticate PLAIN failed: Invalid base64 data in continued response",
            during_exchange=True,
            fail_code="invalid_base64",
        ),
    )
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n")
    s.do("sasl_challenge", b"").take()
    s.recv(b"A" * 8192 + b"\r\n").expect(Close("Authentication response too large"))


def test_eof_while_waiting_for_a_response():
    s = script()
    s.recv(b"a AUTHENTICATE PLAIN\r\n")
    s.do("sasl_challenge", b"").take()
    s.recv(b"").expect(Close("Connection closed"))


# -- while authenticating -------------------------------------------------------------


def test_commands_wait_while_authenticating():
    s = script()
    s.recv(b"a LOGIN bob secret\r\nb NOOP\r\n").expect(login_begin(b"bob", b"secret"))
    s.recv(b"c NOOP\r\n").expect()
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(
        b"a " + AUTH_FAILED, b"b OK NOOP completed.\r\nc OK NOOP completed.\r\n"
    )


def test_eof_while_authenticating_is_reported_after_the_verdict():
    s = script()
    s.recv(b"a LOGIN bob secret\r\n", b"").expect(login_begin(b"bob", b"secret"))
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(
        b"a " + AUTH_FAILED, Close("Connection closed")
    )


def test_buffered_input_over_the_limit_waits_while_authenticating():
    """Dovecot does not read while auth runs, so a flood cannot fill the buffer then."""
    s = script()
    s.recv(b"a LOGIN bob secret\r\n" + b"x" * 5000).expect(login_begin(b"bob", b"secret"))


def test_login_succeeded_hands_over_pipelined_bytes():
    s = script()
    s.recv(b"a LOGIN bob secret\r\nb SELECT INBOX\r\n").expect(login_begin(b"bob", b"secret"))
    s.do("login_succeeded", b"a OK [CAPABILITY IMAP4rev1] Logged in\r\n").expect(
        b"a OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    )
    assert s.engine.state == "PROXYING"
    s.recv(b"c NOOP\r\n").expect()
    assert s.engine.trailing_data() == b"b SELECT INBOX\r\nc NOOP\r\n"


def test_auth_backend_reply_is_sent_verbatim():
    s = script()
    s.recv(b"x1 LOGIN bob secret\r\n").take()
    s.do("auth_backend_reply", b"x1 NO [OVERQUOTA] Quota exceeded\r\n").expect(
        b"x1 NO [OVERQUOTA] Quota exceeded\r\n"
    )
    assert s.engine.state == "NOT_AUTHENTICATED"


@pytest.mark.parametrize(
    ("failure", "reason", "reply"),
    [
        (ClientFailure.AUTH_FAILED, None, b"NO [AUTHENTICATIONFAILED] Authentication failed."),
        (ClientFailure.AUTH_FAILED, "Go away", b"NO [ALERT] Go away"),
        (ClientFailure.AUTH_FAILED, "[OWN] code", b"NO [OWN] code"),
        (
            ClientFailure.TEMPFAIL,
            None,
            b"NO [UNAVAILABLE] Temporary authentication failure. [proxy1:2024-05-06 07:08:09]",
        ),
        (
            ClientFailure.TEMPFAIL,
            "Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
            b"NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
        ),
        (ClientFailure.LOGIN_DISABLED, None, b"NO [CONTACTADMIN] Login disabled for this user"),
        (ClientFailure.LOGIN_DISABLED, "Moved", b"NO [CONTACTADMIN] Moved"),
        (ClientFailure.LOGIN_DISABLED, "[X] Moved", b"NO [CONTACTADMIN] [X] Moved"),
        (ClientFailure.AUTHZ_FAILED, None, b"NO [AUTHORIZATIONFAILED] Authorization failed"),
        (ClientFailure.USER_DISABLED, None, b"NO [AUTHENTICATIONFAILED] Authentication failed."),
        (ClientFailure.USER_DISABLED, "Disabled", b"NO [ALERT] Disabled"),
        (ClientFailure.PASS_EXPIRED, None, b"NO [EXPIRED] Authentication failed."),
        (ClientFailure.PASS_EXPIRED, "Expired", b"NO [EXPIRED] Expired"),
        (ClientFailure.INVALID_BASE64, None, b"BAD Invalid base64 data in continued response"),
        (
            ClientFailure.PROXY_UNAVAILABLE,
            None,
            b"NO [UNAVAILABLE] Account is temporarily unavailable.",
        ),
        (
            ClientFailure.PROXY_SERVERBUG,
            None,
            b"NO [SERVERBUG] Account is temporarily unavailable.",
        ),
    ],
)
def test_auth_failed_texts(failure, reason, reply):
    s = script()
    s.recv(b"t7 LOGIN bob secret\r\n").take()
    s.do("auth_failed", failure, reason).expect(b"t7 " + reply + b"\r\n")
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_driver_calls_out_of_state_are_refused():
    e = engine()
    with pytest.raises(EngineUsageError):
        e.auth_failed(ClientFailure.AUTH_FAILED)
    with pytest.raises(EngineUsageError):
        e.sasl_challenge(b"")
    with pytest.raises(EngineUsageError):
        e.login_succeeded(b"a OK\r\n")


def test_close_with_bye():
    s = script()
    s.do("close", "Disconnected for inactivity.").expect(b"* BYE Disconnected for inactivity.\r\n")
    assert s.engine.state == "CLOSED"
    s2 = script()
    s2.do(
        "close",
        "Internal login failure. Refer to server log for more information.",
        resp_code="UNAVAILABLE",
    ).expect(
        b"* BYE [UNAVAILABLE] Internal login failure. Refer to server log for more information.\r\n"
    )


def test_auth_attempts_counts_every_attempt():
    s = script()
    s.recv(b"a AUTHENTICATE FOO\r\nb LOGIN bob pw\r\n").take()
    s.do("auth_failed", ClientFailure.AUTH_FAILED).take()
    assert s.engine.auth_attempts == 2


# -- ID ----------------------------------------------------------------------------------

ID_OK = b'* ID ("name" "Dovecot")\r\n'


@pytest.mark.parametrize(
    "line",
    [
        b"a ID NIL\r\n",
        b"a ID\r\n",
        b'a ID ("name" "mutt" "version" NIL)\r\n',
        b"a ID ()\r\n",
        b'a ID ("a")\r\n',
        b"a ID NIL junk\r\n",
        b'a ID ("k" {2}\r\nvv)\r\n',
    ],
)
def test_id_replies(line):
    output, events = script().recv(line).take()
    assert output in (
        ID_OK + b"a OK ID completed.\r\n",
        b"+ OK\r\n" + ID_OK + b"a OK ID completed.\r\n",
    )
    assert events == []


@pytest.mark.parametrize(
    "line",
    [
        b"a ID (a b)\r\n",
        b"a ID foo\r\n",
        b'a ID ("' + b"k" * 31 + b'" "x")\r\n',
        b'a ID ("k" ("x"))\r\n',
    ],
)
def test_id_invalid_parameters(line):
    script().recv(line + b"b FOO\r\nc FOO\r\nd NOOP\r\n").expect(
        b"a BAD Invalid ID parameters\r\n",
        b"b " + BAD,
        b"c " + BAD,
        b"d OK NOOP completed.\r\n",  # not counted as a bad command
    )


def test_id_key_of_30_chars_is_fine():
    script().recv(b'a ID ("' + b"k" * 30 + b'" "x")\r\n').expect(ID_OK, b"a OK ID completed.\r\n")


def test_id_missing_parenthesis():
    script().recv(b'a ID ("a" "b"\r\n').expect(b"a BAD Missing ')'\r\n")


def test_id_split_right_after_the_command_name_like_dovecot():
    """Dovecot's second ID call reads in list mode even before the list opened."""
    script().recv(b"a ID ", b'("a" "b")\r\n').expect(b"a BAD Missing ')'\r\n")
    script().recv(b"a ID (", b'"a" "b")\r\n').expect(ID_OK, b"a OK ID completed.\r\n")


def test_id_may_be_longer_than_the_input_buffer():
    pairs = b" ".join(b'"k%d" "%s"' % (i, b"v" * 900) for i in range(20))
    script().recv(b"a ID (" + pairs + b")\r\n").expect(ID_OK, b"a OK ID completed.\r\n")


TRUSTED_ID = (
    b'a ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "40000" '
    b'"x-connected-ip" "[2001:db8::1]" "x-connected-port" "993" "x-proxy-ttl" "4" '
    b'"x-session-id" "abcdef" "X-Forward-Foo" "bar" "name" "mutt")\r\n'
)


def test_id_from_a_trusted_peer():
    script(replace(OPEN, trusted=True)).recv(TRUSTED_ID).expect(
        ID_OK,
        b"a OK ID completed.\r\n",
        TrustedClientInfo(
            remote_ip="192.0.2.7",
            remote_port=40000,
            local_ip="2001:db8::1",
            local_port=993,
            proxy_ttl=4,
            session_id="abcdef",
            forward_fields={"Foo": "bar"},
        ),
    )


def test_id_from_an_untrusted_peer_is_only_answered():
    script().recv(TRUSTED_ID).expect(ID_OK, b"a OK ID completed.\r\n")


def test_id_trusted_fields_only_on_the_first_id():
    s = script(replace(OPEN, trusted=True))
    s.recv(b'a ID ("x-proxy-ttl" "3")\r\n').expect(
        ID_OK, b"a OK ID completed.\r\n", TrustedClientInfo(proxy_ttl=3)
    )
    s.recv(b'b ID ("x-proxy-ttl" "2")\r\n').expect(ID_OK, b"b OK ID completed.\r\n")


@pytest.mark.parametrize(
    "pair",
    [
        b'"x-originating-ip" "not-an-ip"',
        b'"x-originating-port" "0"',
        b'"x-originating-port" "65536"',
        b'"x-proxy-ttl" "-1"',
        b'"x-session-id" "' + b"s" * 65 + b'"',
        b'"x-originating-ip" NIL',
    ],
)
def test_id_invalid_trusted_values_are_ignored(pair):
    output, events = script(replace(OPEN, trusted=True)).recv(b"a ID (" + pair + b")\r\n").take()
    assert output == ID_OK + b"a OK ID completed.\r\n"
    assert events in ([], [TrustedClientInfo()])


def test_id_retain_keeps_non_special_pairs():
    s = script(replace(OPEN, trusted=True), options=ImapOptions(id_retain=True))
    assert s.engine.client_id is None
    s.recv(b'a ID ("name" "Mutt\\"X" "x-session-id" "s1" "os" NIL "v" "\xc3\xa4b")\r\n').take()
    assert s.engine.client_id == '"name" "Mutt\\"X" "os" NIL "v" "b"'


def test_id_retain_limit():
    s = script(OPEN, options=ImapOptions(id_retain=True))
    s.recv(b'a ID ("k1" "' + b"v" * 200 + b'" "k2" "' + b"w" * 60 + b'" "k3" "x")\r\n').take()
    assert s.engine.client_id == '"k1" "' + "v" * 200 + '" "k3" "x"'


def test_id_retain_off():
    s = script()
    s.recv(b'a ID ("name" "mutt")\r\n').take()
    assert s.engine.client_id is None


def test_id_literal_too_large_is_fatal():
    script().recv(b"a ID ({9000}\r\n").expect(
        b"* BYE Literal size too large\r\n", Close("Literal size too large")
    )
