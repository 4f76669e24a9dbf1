"""Pop3LoginServer against Dovecot 2.3's pop3-login texts and limits.

Expected bytes were checked against a running Dovecot 2.3.19 (Debian 12)
pop3-login with the same inputs, read by read (see also tests/e2e/test_pop3.py,
which runs the same dialogues against Dovecot's own proxy in reference mode).
"""

from __future__ import annotations

import base64
import hashlib
import re
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
from proxyd.protocols.pop3.server import Pop3LoginServer
from tests.protocols.script import Script

OPEN = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False)
TRUSTED = replace(OPEN, trusted=True, secured=True)
#: an untrusted client on another IP, no TLS yet, Dovecot's default disable_plaintext_auth
INSECURE = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), tls_available=True)
UNKNOWN = b"-ERR Unknown command.\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
PLAINTEXT_REFUSED = (
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
)
CAPA_HEAD = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"


def engine(policy: LoginPolicy = OPEN, **kwargs) -> Pop3LoginServer:
    return Pop3LoginServer(
        policy,
        hostname=lambda: "proxy1",
        clock=lambda: datetime(2024, 5, 6, 7, 8, 9),
        **kwargs,
    )


def script(policy: LoginPolicy = OPEN, **kwargs) -> Script:
    return Script(engine(policy, **kwargs))


def login_begin(user: bytes, password: bytes) -> AuthBegin:
    return AuthBegin("PLAIN", b"\0" + user + b"\0" + password, plaintext_login=True)


# -- greeting and CAPA ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "greeting"),
    [
        (OPEN, b"+OK Dovecot ready.\r\n"),
        (TRUSTED, b"+OK [XCLIENT] Dovecot ready.\r\n"),
        (replace(OPEN, greeting="Dovecot (Debian) ready."), b"+OK Dovecot (Debian) ready.\r\n"),
    ],
)
def test_greeting(policy, greeting):
    s = Script(engine(policy), keep_greeting=True)
    s.expect(greeting)


@pytest.mark.parametrize(
    ("policy", "tail"),
    [
        # Dovecot on loopback with TLS configured: what a secured, trusted client sees
        (replace(TRUSTED, tls_available=True), b"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
        (OPEN, b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
        # insecure with disable_plaintext_auth: no USER, no plaintext mechanisms
        (INSECURE, b"STLS\r\nSASL\r\n.\r\n"),
        (replace(INSECURE, mechanisms=("PLAIN", "CRAM-MD5")), b"STLS\r\nSASL CRAM-MD5\r\n.\r\n"),
        # a bearer token counts as a password (Dovecot's MECH_SEC_PLAINTEXT)
        (replace(INSECURE, mechanisms=("XOAUTH2", "OAUTHBEARER")), b"STLS\r\nSASL\r\n.\r\n"),
        # after STLS: no STLS line, everything allowed
        (
            replace(INSECURE, tls_active=True, secured=True),
            b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n",
        ),
        # ssl=required: no mechanisms at all; USER depends on disable_plaintext_auth only
        (replace(OPEN, ssl="required", tls_available=True), b"STLS\r\nUSER\r\nSASL\r\n.\r\n"),
    ],
)
def test_capa(policy, tail):
    script(policy).recv(b"CAPA\r\n").expect(CAPA_HEAD + tail)


def test_command_names_are_case_insensitive_and_arguments_are_ignored():
    script().recv(b"capa\r\n", b"cApA whatever\r\n").expect(
        (CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n") * 2
    )


def test_pipelined_commands_in_one_read():
    script().recv(b"CAPA\r\nNOOP\r\nUSER x\r\n").expect(
        CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n" + UNKNOWN + b"+OK\r\n"
    )


def test_command_byte_by_byte():
    data = b"USER alice\r\n"
    s = script()
    for i in range(len(data)):
        s.recv(data[i : i + 1])
    s.expect(b"+OK\r\n")


def test_bare_lf_ends_a_line():
    script().recv(b"USER a\nPASS b\n").expect(b"+OK\r\n", login_begin(b"a", b"b"))


# -- command name rules (client_read_cmd_name) -----------------------------------------


def test_noop_is_refused_before_login():
    script().recv(b"NOOP\r\n").expect(UNKNOWN)


def test_command_name_is_at_most_eight_characters():
    # "CAPABILITY" reads as "CAPABILI" with arguments "TY"; "USERNAMEX" as "USERNAME"
    script().recv(b"CAPABILITY\r\n", b"USERNAMEX bob\r\n").expect(UNKNOWN * 2)


def test_ninth_character_is_left_for_the_arguments():
    # "AAAAAAAAAAAAAAAAAAAA" is one unknown command, not two
    script().recv(b"A" * 20 + b"\r\n").expect(UNKNOWN)


def test_carriage_returns_inside_a_command_name_are_skipped():
    script().recv(b"US\rER bob\r\n").expect(b"+OK\r\n")


def test_nul_ends_the_command_name_and_the_arguments():
    # "USER a\0b" remembers "a"; the PASS that follows logs in as "a"
    s = script().recv(b"USER a\0b\r\n").expect(b"+OK\r\n")
    s.recv(b"PASS pw\0rest\r\n").expect(login_begin(b"a", b"pw"))


def test_one_space_after_the_name_is_consumed_the_rest_is_argument():
    script().recv(b"USER  bob\r\nPASS x\r\n").expect(b"+OK\r\n", login_begin(b" bob", b"x"))


def test_empty_line_is_an_unknown_command():
    script().recv(b"\r\n").expect(UNKNOWN)


# -- bad command counter ----------------------------------------------------------------


def test_third_bad_command_in_a_row_closes():
    s = script().recv(b"NOOP\r\n", b"FOO\r\n").expect(UNKNOWN * 2)
    s.recv(b"BAR\r\n").expect(
        UNKNOWN + b"-ERR Too many invalid bad commands.\r\n", Close("Too many bad commands")
    )
    assert s.engine.state == "CLOSED"


def test_a_good_command_resets_the_bad_counter():
    s = script().recv(b"NOOP\r\nFOO\r\nCAPA\r\nNOOP\r\nFOO\r\n")
    out, events = s.take()
    assert out.count(UNKNOWN) == 4
    assert events == []
    s.recv(b"BAR\r\n").expect(
        UNKNOWN + b"-ERR Too many invalid bad commands.\r\n", Close("Too many bad commands")
    )


@pytest.mark.parametrize(
    "good",
    [b"USER x\r\n", b"PASS x\r\n", b"APOP a b\r\n", b"STLS\r\n", b"XCLIENT ADDR=x\r\n"],
)
def test_every_known_command_resets_the_counter(good):
    # two bad ones, a known one (even when it answers -ERR), then two bad ones again: still open
    s = script().recv(b"X\r\nY\r\n", good, b"Z\r\nW\r\n")
    assert s.engine.state == "NOT_AUTHENTICATED"
    s.take()
    s.recv(b"V\r\n").expect(
        UNKNOWN + b"-ERR Too many invalid bad commands.\r\n", Close("Too many bad commands")
    )


def test_auth_neither_resets_nor_raises_the_counter():
    # NOOP (1), AUTH list, NOOP (2), NOOP (3): closed, as Dovecot does
    s = script().recv(b"NOOP\r\n", b"AUTH\r\n", b"NOOP\r\n")
    s.take()
    s.recv(b"NOOP\r\n").expect(
        UNKNOWN + b"-ERR Too many invalid bad commands.\r\n", Close("Too many bad commands")
    )


def test_max_bad_commands_comes_from_the_policy():
    script(replace(OPEN, max_bad_commands=1)).recv(b"X\r\n").expect(
        UNKNOWN + b"-ERR Too many invalid bad commands.\r\n", Close("Too many bad commands")
    )


# -- QUIT, EOF, input buffer --------------------------------------------------------------


def test_quit():
    s = script().recv(b"QUIT\r\nCAPA\r\n")
    s.expect(b"+OK Logging out\r\n", Close("Aborted login by logging out"))
    assert s.engine.state == "CLOSED"


def test_eof():
    script().recv(b"").expect(Close("Connection closed"))


def test_eof_mid_command():
    script().recv(b"USER bo", b"").expect(Close("Connection closed"))


def test_input_buffer_full():
    script().recv(b"USER " + b"a" * 1100 + b"\r\n").expect(
        b"-ERR Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_only_the_arguments_must_fit_the_buffer():
    # 1027 bytes in all: the command name was consumed before the rest arrived (as in Dovecot)
    script().recv(b"USER " + b"a" * 1020 + b"\r\n").expect(b"+OK\r\n")


def test_arguments_that_just_fit_the_buffer():
    script().recv(b"USER " + b"a" * 1024 + b"\r\n").expect(b"+OK\r\n")


def test_arguments_longer_than_the_buffer():
    script().recv(b"USER " + b"a" * 1025 + b"\r\n").expect(
        b"-ERR Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_limits_are_constructor_arguments():
    script(max_inbuf=20).recv(b"USER " + b"a" * 30 + b"\r\n").expect(
        b"-ERR Input buffer full, aborting\r\n", Close("Input buffer full")
    )


def test_large_pipelined_input_is_read_buffer_by_buffer():
    s = script().recv(b"CAPA\r\n" * 400)
    out, events = s.take()
    assert out.count(b"+OK\r\n") == 400
    assert events == []


# -- USER / PASS ------------------------------------------------------------------------------


def test_user_pass():
    s = script().recv(b"USER alice\r\n").expect(b"+OK\r\n")
    s.recv(b"PASS alicepw\r\n").expect(login_begin(b"alice", b"alicepw"))
    assert s.engine.state == "AUTHENTICATING"


def test_pass_without_user():
    script().recv(b"PASS x\r\n").expect(b"-ERR No username given.\r\n")


def test_pass_forgets_the_user():
    s = script().recv(b"USER alice\r\nPASS a\r\n")
    s.take()
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(AUTH_FAILED)
    s.recv(b"PASS b\r\n").expect(b"-ERR No username given.\r\n")


def test_last_user_wins():
    script().recv(b"USER alice\r\nUSER bob\r\nPASS x\r\n").expect(
        b"+OK\r\n+OK\r\n", login_begin(b"bob", b"x")
    )


def test_empty_user():
    script().recv(b"USER\r\nPASS x\r\n").expect(b"+OK\r\n", login_begin(b"", b"x"))


def test_user_pass_refused_without_plaintext():
    s = script(INSECURE).recv(b"USER alice\r\n")
    s.expect(PLAINTEXT_REFUSED, AuthRefused("Login failed: Plaintext authentication disabled"))
    s.recv(b"PASS alicepw\r\n").expect(
        PLAINTEXT_REFUSED, AuthRefused("Login failed: Plaintext authentication disabled")
    )
    assert s.engine.auth_attempts == 2


def test_pass_without_user_refused_without_plaintext():
    script(INSECURE).recv(b"PASS alicepw\r\n").expect(
        PLAINTEXT_REFUSED, AuthRefused("Login failed: Plaintext authentication disabled")
    )


def test_user_pass_needs_the_plain_mechanism():
    s = script(replace(OPEN, mechanisms=("LOGIN",))).recv(b"USER a\r\nPASS b\r\n")
    s.expect(
        b"+OK\r\n-ERR [AUTH] Unsupported authentication mechanism.\r\n",
        AuthRefused("Authenticate PLAIN failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )


def test_password_never_echoed():
    s = script().recv(b"USER bob\r\nPASS Hunter2-secret\r\n")
    out, events = s.take()
    assert b"Hunter2" not in out
    assert all("Hunter2" not in repr(event) for event in events)


# -- APOP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [b"alice 0123456789abcdef0123456789abcdef", b"x", b""])
def test_apop_is_not_enabled(args):
    script().recv(b"APOP " + args + b"\r\n").expect(
        b"-ERR APOP not enabled.\r\n", AuthRefused("APOP failed: APOP not enabled")
    )


APOP_ON = replace(OPEN, mechanisms=("PLAIN", "APOP"))


def _apop_script() -> tuple[Script, bytes]:
    s = Script(engine(APOP_ON), keep_greeting=True)
    greeting = s.output
    s.output = b""
    match = re.fullmatch(rb"\+OK Dovecot ready\. (<[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+\.[A-Za-z0-9+/=]+@proxy1>)\r\n", greeting)
    assert match is not None, greeting
    return s, match.group(1)


def test_apop_challenge_in_the_greeting_and_the_command():
    """The challenge, the user and the binary digest go to the auth process as APOP's data;
    APOP is never listed nor accepted by AUTH."""
    s, challenge = _apop_script()
    digest = hashlib.md5(challenge + b"secret").hexdigest().encode()
    s.recv(b"CAPA\r\nAUTH\r\n")
    out, _ = s.take()
    assert b"SASL PLAIN\r\n" in out
    assert out.endswith(b"+OK\r\nPLAIN\r\n.\r\n")
    s.recv(b"AUTH APOP\r\n").expect(
        b"-ERR [AUTH] Unsupported authentication mechanism.\r\n",
        AuthRefused("Authenticate APOP failed: Unsupported authentication mechanism.", fail_code="mech_invalid"),
    )
    s.recv(b"APOP alice " + digest + b"\r\n").expect(
        AuthBegin("APOP", challenge + b"\0alice\0" + bytes.fromhex(digest.decode()), plaintext_login=True)
    )


@pytest.mark.parametrize(
    ("args", "reply", "log"),
    [
        (b"alice", b"-ERR Invalid parameters.\r\n", "APOP failed: Invalid parameters"),
        (b"alice abc", b"-ERR Invalid parameters.\r\n", "APOP failed: Invalid parameters"),
        (b"alice " + b"z" * 32, b"-ERR Invalid characters in MD5 response.\r\n",
         "APOP failed: Invalid characters in MD5 response"),
    ],
)  # fmt: skip
def test_apop_bad_arguments(args, reply, log):
    s, _challenge = _apop_script()
    s.recv(b"APOP " + args + b"\r\n").expect(reply, AuthRefused(log))


# -- AUTH ------------------------------------------------------------------------------------


def test_auth_without_mechanism_lists_the_mechanisms():
    script().recv(b"AUTH\r\n").expect(b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")


@pytest.mark.parametrize("line", [b"AUTH \r\n", b"AUTH  PLAIN\r\n", b"auth\n"])
def test_auth_list_forms(line):
    script().recv(line, b"CAPA\r\n").expect(
        b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n" + CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n"
    )


def test_auth_list_without_plaintext():
    script(INSECURE).recv(b"AUTH\r\n").expect(b"+OK\r\n.\r\n")


def test_auth_plain_with_initial_response():
    ir = base64.b64encode(b"\0alice\0alicepw")
    script().recv(b"AUTH PLAIN " + ir + b"\r\n").expect(AuthBegin("PLAIN", b"\0alice\0alicepw"))


def test_auth_mechanism_case_insensitive():
    script().recv(b"auth plain =\r\n").expect(AuthBegin("PLAIN", b""))


def test_auth_without_initial_response():
    s = script().recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"AGFsaWNlAGFsaWNlcHc=\r\n").expect(AuthContinue(b"\0alice\0alicepw"))


def test_auth_login_dialogue():
    s = script().recv(b"AUTH LOGIN\r\n").expect(AuthBegin("LOGIN", None))
    s.do("sasl_challenge", b"Username:").expect(b"+ VXNlcm5hbWU6\r\n")
    s.recv(b"YWxpY2U=\r\n").expect(AuthContinue(b"alice"))
    s.do("sasl_challenge", b"Password:").expect(b"+ UGFzc3dvcmQ6\r\n")
    s.recv(b"YWxpY2Vwdw==\r\n").expect(AuthContinue(b"alicepw"))
    s.do("login_succeeded", b"+OK Logged in.\r\n").expect(b"+OK Logged in.\r\n")
    assert s.engine.state == "PROXYING"


def test_auth_abort():
    s = script().recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"*\r\nCAPA\r\n").expect(
        b"-ERR Authentication aborted by client.\r\n",
        AuthAborted(),
        CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n",
    )


def test_auth_continuation_with_non_base64_characters():
    s = script().recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"!!!\r\n").expect(
        b"-ERR [AUTH] Invalid base64 in response\r\n",
        AuthRefused(
            "Authenticate PLAIN failed: Invalid base64 in response", during_exchange=True, fail_code="invalid_base64"
        ),
    )
    assert s.engine.state == "NOT_AUTHENTICATED"


def test_auth_continuation_with_bad_padding():
    s = script().recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"AAAA=\r\n").expect(
        b"-ERR [AUTH] Invalid base64 data in continued response\r\n",
        AuthRefused(
            "Authenticate PLAIN failed: Invalid base64 data in continued response",
            during_exchange=True,
            fail_code="invalid_base64",
        ),
    )


def test_auth_initial_response_with_bad_base64():
    script().recv(b"AUTH PLAIN !!!\r\n").expect(
        b"-ERR [AUTH] Invalid base64 data in initial response\r\n",
        AuthRefused("Authenticate PLAIN failed: Invalid base64 data in initial response", fail_code="invalid_base64"),
    )


def test_auth_unknown_mechanism():
    s = script().recv(b"AUTH FOO\r\nCAPA\r\n")
    out, events = s.take()
    assert out.startswith(b"-ERR [AUTH] Unsupported authentication mechanism.\r\n+OK\r\nCAPA")
    assert events == [AuthRefused("Authenticate FOO failed: Unsupported authentication mechanism.", fail_code="mech_invalid")]


def test_auth_plaintext_mechanism_disabled():
    script(INSECURE).recv(b"AUTH PLAIN\r\n").expect(
        b"-ERR [AUTH] Plaintext authentication disabled.\r\n",
        AuthRefused("Authenticate PLAIN failed: Plaintext authentication disabled.", fail_code="mech_ssl_required"),
    )


def test_auth_ssl_required():
    script(replace(OPEN, ssl="required")).recv(b"AUTH PLAIN =\r\n").expect(
        b"-ERR [AUTH] Authentication not allowed until SSL/TLS is enabled.\r\n",
        AuthRefused("Login failed: SSL required for authentication"),
    )


def test_auth_initial_response_may_be_longer_than_the_input_buffer():
    ir = base64.b64encode(b"\0alice\0" + b"p" * 3000)
    s = script().recv(b"AUTH PLAIN " + ir[:1000], ir[1000:2500], ir[2500:] + b"\r\n")
    s.expect(AuthBegin("PLAIN", b"\0alice\0" + b"p" * 3000))


def test_auth_initial_response_limit():
    s = script().recv(b"AUTH PLAIN " + b"A" * 9000 + b"\r\n")
    s.expect(Close("Authentication response too large"))


def test_auth_continuation_limit():
    s = script().recv(b"AUTH PLAIN\r\n").expect(AuthBegin("PLAIN", None))
    s.do("sasl_challenge", b"").expect(b"+ \r\n")
    s.recv(b"A" * 5000, b"A" * 5000).expect(Close("Authentication response too large"))


def test_commands_wait_while_authenticating():
    s = script().recv(b"USER a\r\nPASS b\r\nCAPA\r\n").expect(b"+OK\r\n", login_begin(b"a", b"b"))
    s.recv(b"QUIT\r\n").expect()
    s.do("auth_failed", ClientFailure.AUTH_FAILED).expect(
        AUTH_FAILED,
        CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n",
        b"+OK Logging out\r\n",
        Close("Aborted login by logging out"),
    )


def test_login_succeeded_hands_over_pipelined_bytes():
    s = script().recv(b"USER a\r\nPASS b\r\nSTAT\r\nLIST\r\n")
    s.take()
    s.do("login_succeeded", b"+OK Logged in.\r\n").expect(b"+OK Logged in.\r\n")
    assert s.engine.trailing_data() == b"STAT\r\nLIST\r\n"


def test_auth_backend_reply_is_sent_verbatim():
    s = script().recv(b"USER a\r\nPASS b\r\n")
    s.take()
    s.do("auth_backend_reply", b"-ERR [IN-USE] Mailbox locked\r\n").expect(
        b"-ERR [IN-USE] Mailbox locked\r\n"
    )
    assert s.engine.state == "NOT_AUTHENTICATED"


@pytest.mark.parametrize(
    ("failure", "reason", "reply"),
    [
        (ClientFailure.AUTH_FAILED, None, AUTH_FAILED),
        (ClientFailure.AUTH_FAILED, "Go away", b"-ERR [AUTH] Go away\r\n"),
        (ClientFailure.AUTH_FAILED, "[IN-USE] Busy", b"-ERR [IN-USE] Busy\r\n"),
        (ClientFailure.USER_DISABLED, None, AUTH_FAILED),
        (
            ClientFailure.TEMPFAIL,
            None,
            b"-ERR [SYS/TEMP] Temporary authentication failure. [proxy1:2024-05-06 07:08:09]\r\n",
        ),
        (ClientFailure.LOGIN_DISABLED, None, b"-ERR [AUTH] Login disabled for this user\r\n"),
        (ClientFailure.LOGIN_DISABLED, "Moved", b"-ERR [AUTH] Moved\r\n"),
        (ClientFailure.AUTHZ_FAILED, None, b"-ERR [AUTH] Authorization failed\r\n"),
        (ClientFailure.PASS_EXPIRED, None, AUTH_FAILED),
        (
            ClientFailure.INVALID_BASE64,
            None,
            b"-ERR [AUTH] Invalid base64 data in continued response\r\n",
        ),
        (
            ClientFailure.PROXY_UNAVAILABLE,
            None,
            b"-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n",
        ),
        (ClientFailure.PROXY_SERVERBUG, None, b"-ERR Account is temporarily unavailable.\r\n"),
    ],
)
def test_auth_failed_texts(failure, reason, reply):
    s = script().recv(b"AUTH PLAIN =\r\n")
    s.take()
    s.do("auth_failed", failure, reason).expect(reply)


def test_auth_attempts_counts_every_attempt():
    s = script(replace(OPEN, mechanisms=("PLAIN",))).recv(b"AUTH FOO\r\nAUTH LOGIN\r\n")
    s.recv(b"USER a\r\nPASS b\r\n")
    assert s.engine.auth_attempts == 3


def test_driver_calls_out_of_state_are_refused():
    e = engine()
    with pytest.raises(EngineUsageError):
        e.sasl_challenge(b"")
    with pytest.raises(EngineUsageError):
        e.login_succeeded(b"+OK\r\n")
    with pytest.raises(EngineUsageError):
        e.tls_started(OPEN)


def test_close_by_the_driver():
    s = script()
    s.do("close", "Disconnected for inactivity.").expect(b"-ERR Disconnected for inactivity.\r\n")
    assert s.engine.state == "CLOSED"
    s = script()
    s.do("close", "Internal login failure.", internal_error=True).expect(
        b"-ERR [SYS/TEMP] Internal login failure.\r\n"
    )


# -- STLS ------------------------------------------------------------------------------------


def test_stls_not_enabled():
    script().recv(b"STLS\r\n").expect(b"-ERR TLS support isn't enabled.\r\n")


def test_stls_already_active():
    script(replace(OPEN, tls_available=True, tls_active=True)).recv(b"STLS\r\n").expect(
        b"-ERR TLS is already active.\r\n"
    )


def test_stls_leftovers_are_never_executed():
    s = script(INSECURE).recv(b"STLS\r\nUSER a\r\nPASS b\r\n")
    s.expect(b"+OK Begin TLS negotiation now.\r\n", StartTLS())
    assert s.engine.state == "TLS_PENDING"
    assert s.engine.trailing_data() == b"USER a\r\nPASS b\r\n"
    secured = replace(INSECURE, tls_active=True, secured=True)
    s.do("tls_started", secured).expect()
    s.recv(b"CAPA\r\n").expect(CAPA_HEAD + b"USER\r\nSASL PLAIN LOGIN\r\n.\r\n")
    s.recv(b"USER a\r\nPASS b\r\n").expect(b"+OK\r\n", login_begin(b"a", b"b"))


def test_stls_drops_what_arrived_before_tls_started():
    s = script(INSECURE).recv(b"STLS\r\n").expect(b"+OK Begin TLS negotiation now.\r\n", StartTLS())
    s.recv(b"\x16\x03\x01garbage")
    s.do("tls_started", replace(INSECURE, tls_active=True, secured=True)).expect()
    s.recv(b"USER a\r\n").expect(b"+OK\r\n")


# -- XCLIENT / XOIP ----------------------------------------------------------------------------


def test_xclient_from_an_untrusted_peer_is_ignored():
    script().recv(b"XCLIENT ADDR=1.2.3.4\r\n").expect(
        b"+OK You are not from trusted IP - ignoring\r\n"
    )


def test_xclient_from_a_trusted_peer():
    forward = base64.b64encode(b"client=roundcube\tx\x01ty=a\x01tb")
    s = script(TRUSTED).recv(
        b"XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=abc TTL=3 FORWARD=" + forward + b"\r\n"
    )
    s.expect(
        b"+OK Updated\r\n",
        TrustedClientInfo(
            remote_ip="192.0.2.7",
            remote_port=50000,
            session_id="abc",
            proxy_ttl=3,
            forward_fields={"client": "roundcube", "x\ty": "a\tb"},
        ),
    )


def test_xclient_keys_are_case_insensitive_and_unknown_ones_ignored():
    script(TRUSTED).recv(b"xclient addr=[2001:db8::1] login=x HELO=y port=1\r\n").expect(
        b"+OK Updated\r\n", TrustedClientInfo(remote_ip="2001:db8::1", remote_port=1)
    )


@pytest.mark.parametrize(
    ("args", "applied"),
    [
        (b"PORT=0", TrustedClientInfo()),
        (b"PORT=65536", TrustedClientInfo()),
        (b"TTL=x", TrustedClientInfo()),
        (b"ADDR=1.2.3.4 TTL=-1", TrustedClientInfo(remote_ip="1.2.3.4")),
        (b"ADDR=bad", TrustedClientInfo()),
        (b"FORWARD=!!!", TrustedClientInfo()),
    ],
)
def test_xclient_invalid_parameters(args, applied):
    s = script(TRUSTED).recv(b"XCLIENT " + args + b"\r\n")
    out, events = s.take()
    assert out == b"-ERR Invalid parameters\r\n"
    # valid values before or after an invalid one still count, as in Dovecot
    assert events == ([applied] if applied != TrustedClientInfo() else [])


def test_xclient_overlong_session_id_is_ignored():
    script(TRUSTED).recv(b"XCLIENT SESSION=" + b"s" * 65 + b" TTL=2\r\n").expect(
        b"+OK Updated\r\n", TrustedClientInfo(proxy_ttl=2)
    )


def test_xoip():
    s = script(TRUSTED).recv(b"XOIP 5.6.7.8\r\n", b"XOIP bad\r\n")
    s.expect(
        b"+OK Updated\r\n", TrustedClientInfo(remote_ip="5.6.7.8"), b"-ERR Invalid parameters\r\n"
    )
