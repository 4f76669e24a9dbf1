"""ImapBackendLogin against scripted backends (Dovecot 2.3 banners and replies).

The Dovecot lines below were captured from a Dovecot 2.3.19 backend; the
engine's commands were checked against the same backend.
"""

from __future__ import annotations

import pytest

from proxyd.protocols.backend_events import (
    RETRYABLE_FAILURES,
    BackendFailed,
    BackendIgnored,
    BackendLoggedIn,
    BackendNeedsTLS,
    BackendUntagged,
    ProxyFailure,
)
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams

from .script import Script

PRE_CAPS = (
    b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN"
)
BANNER = b"* OK [CAPABILITY " + PRE_CAPS + b"] Dovecot (Debian) ready.\r\n"
BANNER_NO_CAPS = b"* OK Dovecot ready.\r\n"
BANNER_NO_ID = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] Cyrus ready.\r\n"
POST_CAPS = b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MOVE"
LOGGED_IN = b"L OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n"
IDS = (
    ("x-session-id", "k3/oAdZgiKJ/AAAB"),
    ("x-originating-ip", "192.0.2.7"),
    ("x-originating-port", "40000"),
    ("x-connected-ip", "127.0.0.1"),
    ("x-connected-port", "143"),
    ("x-proxy-ttl", "4"),
)
ID_CMD = (
    b'I ID ("x-session-id" "k3/oAdZgiKJ/AAAB" "x-originating-ip" "192.0.2.7" '
    b'"x-originating-port" "40000" "x-connected-ip" "127.0.0.1" "x-connected-port" "143" '
    b'"x-proxy-ttl" "4")\r\n'
)
LOGIN_CMD = b'L LOGIN "bob" "secret"\r\n'
GENERIC_FAIL = b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


def backend(**kwargs) -> Script:
    defaults = {"user": "bob", "password": "secret", "client_tag": "a1"}
    return Script(ImapBackendLogin(ImapBackendParams(**(defaults | kwargs))))


# -- the happy paths --------------------------------------------------------------------


def test_dovecot_pipelines_id_and_login():
    s = backend(id_pairs=IDS)
    s.recv(BANNER).expect(ID_CMD + LOGIN_CMD)
    assert s.engine.state_name == "id+login/banner"
    s.recv(b'* ID ("name" "Dovecot")\r\nI OK ID completed.\r\n').expect()
    s.recv(LOGGED_IN).expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n")
    )
    assert s.engine.state_name == "/login"


def test_retained_client_id_goes_first():
    s = backend(id_pairs=(("x-proxy-ttl", "4"),), client_id='"name" "mutt"')
    s.recv(BANNER).expect(b'I ID ("name" "mutt" "x-proxy-ttl" "4")\r\n' + LOGIN_CMD)


def test_id_values_are_quoted_or_nil():
    s = backend(id_pairs=(("x-forward-a", None), ("x-forward-b", 'q"v')))
    s.recv(BANNER).expect(b'I ID ("x-forward-a" NIL "x-forward-b" "q\\"v")\r\n' + LOGIN_CMD)


def test_no_id_when_the_banner_lacks_it():
    backend(id_pairs=IDS).recv(BANNER_NO_ID).expect(LOGIN_CMD)


def test_no_id_without_pairs_proxy_not_trusted():
    backend().recv(BANNER).expect(LOGIN_CMD)


def test_unknown_capabilities_are_asked_for():
    s = backend(id_pairs=IDS)
    s.recv(BANNER_NO_CAPS).expect(b"C CAPABILITY\r\n" + LOGIN_CMD)  # no ID: caps unknown
    assert s.engine.state_name == "capability+login/banner"
    s.recv(b"* CAPABILITY IMAP4rev1 ID XYZ\r\nC OK done\r\n").expect()
    s.recv(b"L OK Logged in\r\n").expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY IMAP4rev1 ID XYZ] Logged in\r\n")
    )


def test_client_that_asked_capability_gets_an_untagged_capability_line():
    s = backend(client_ignores_capability_resp_code=True)
    s.recv(BANNER).expect(b"C CAPABILITY\r\n" + LOGIN_CMD)
    # A Dovecot backend that saw CAPABILITY answers the login with an untagged list.
    s.recv(
        b"* CAPABILITY IMAP4rev1 X\r\nC OK done\r\n* CAPABILITY "
        + POST_CAPS
        + b"\r\nL OK Logged in\r\n"
    ).expect(BackendLoggedIn(b"* CAPABILITY " + POST_CAPS + b"\r\na1 OK Logged in\r\n"))


def test_client_that_asked_capability_and_a_tagged_capability():
    s = backend(client_ignores_capability_resp_code=True)
    s.recv(BANNER).take()
    s.recv(b"C OK done\r\n" + LOGGED_IN).expect(
        BackendLoggedIn(
            b"* CAPABILITY "
            + POST_CAPS
            + b"\r\na1 OK [CAPABILITY "
            + POST_CAPS
            + b"] Logged in\r\n"
        )
    )


def test_capability_is_injected_when_the_ok_has_none():
    s = backend()
    s.recv(BANNER).take()
    s.recv(b"L OK Logged in\r\n").expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + PRE_CAPS + b"] Logged in\r\n")
    )


def test_injected_capability_replaces_another_resp_code():
    s = backend()
    s.recv(BANNER).take()
    s.recv(b"L OK [READ-WRITE] Logged in\r\n").expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + PRE_CAPS + b"] Logged in\r\n")
    )


def test_untagged_capability_updates_what_is_injected():
    s = backend()
    s.recv(BANNER).take()
    s.recv(b"* CAPABILITY IMAP4rev1 NEW\r\nL OK Logged in\r\n").expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY IMAP4rev1 NEW] Logged in\r\n")
    )


def test_no_capability_known_at_all():
    s = backend()
    s.recv(BANNER_NO_CAPS).take()
    s.recv(b"C OK done\r\nL OK Logged in\r\n").expect(BackendLoggedIn(b"a1 OK Logged in\r\n"))


def test_backend_bytes_after_the_ok_are_trailing():
    s = backend()
    s.recv(BANNER).take()
    s.recv(LOGGED_IN + b"* 1 EXISTS\r\n").take()
    assert s.engine.trailing_data() == b"* 1 EXISTS\r\n"
    s.recv(b"more").take()
    assert s.engine.trailing_data() == b"more"


def test_login_with_literal_ignores_the_continuation():
    s = backend(password="pässword")
    s.recv(BANNER).expect(b'L LOGIN "bob" {9}\r\np\xc3\xa4ssword\r\n')
    s.recv(b"+ OK\r\n" + LOGGED_IN).expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n")
    )


def test_split_lines_and_bare_lf():
    s = backend()
    for byte in BANNER:
        s.recv(bytes([byte]))
    s.expect(LOGIN_CMD)
    s.recv(b"L OK Logged in\n").expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + PRE_CAPS + b"] Logged in\r\n")
    )


# -- SASL ---------------------------------------------------------------------------------


def test_master_user_uses_plain_with_sasl_ir():
    s = backend(master_user="proxymaster", password="masterpw")
    s.recv(BANNER).expect(b"L AUTHENTICATE PLAIN Ym9iAHByb3h5bWFzdGVyAG1hc3RlcnB3\r\n")
    assert s.engine.state_name == "authenticate/banner"
    s.recv(LOGGED_IN).expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n")
    )


def test_plain_without_sasl_ir_waits_for_the_continuation():
    s = backend(mech="plain")
    s.recv(BANNER_NO_ID).expect(b"L AUTHENTICATE PLAIN\r\n")
    s.recv(b"+ \r\n").expect(b"Ym9iAGJvYgBzZWNyZXQ=\r\n")
    assert s.engine.state_name == "auth-continue/auth-continue"


def test_login_mechanism_dialogue():
    s = backend(mech="LOGIN")
    s.recv(BANNER).expect(b"L AUTHENTICATE LOGIN =\r\n")
    s.recv(b"+ VXNlcm5hbWU6\r\n").expect(b"Ym9i\r\n")
    s.recv(b"+ UGFzc3dvcmQ6\r\n").expect(b"c2VjcmV0\r\n")
    s.recv(b"+ \r\n").expect(
        BackendFailed(
            ProxyFailure.PROTOCOL,
            "Invalid authentication data: Server didn't finish authentication",
        )
    )


@pytest.mark.parametrize("line", [b"+\r\n", b"+ !!!\r\n", b"+x\r\n"])
def test_bad_continuation(line):
    s = backend(mech="PLAIN")
    s.recv(BANNER_NO_ID).take()
    s.recv(line).expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Invalid base64 data in AUTHENTICATE response")
    )


def test_plain_challenge_must_be_empty():
    s = backend(mech="PLAIN")
    s.recv(BANNER_NO_ID).take()
    s.recv(b"+ aGk=\r\n").expect(
        BackendFailed(
            ProxyFailure.PROTOCOL,
            "Invalid authentication data: Server sent non-empty initial response",
        )
    )


def test_unsupported_proxy_mech():
    s = backend(mech="SCRAM-SHA-1")
    s.expect(BackendFailed(ProxyFailure.INTERNAL, "Unsupported SASL mechanism SCRAM-SHA-1"))
    s.recv(BANNER).expect()


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "failure"),
    [
        (
            b"L NO [AUTHENTICATIONFAILED] Authentication failed.",
            BackendFailed(
                ProxyFailure.AUTH, "[AUTHENTICATIONFAILED] Authentication failed.", GENERIC_FAIL
            ),
        ),
        (
            b"L NO Login failed: no such user",
            BackendFailed(ProxyFailure.AUTH, "Login failed: no such user", GENERIC_FAIL),
        ),
        (b"L BAD what?", BackendFailed(ProxyFailure.AUTH, "BAD what?", GENERIC_FAIL)),
        (
            b"L NO [UNAVAILABLE] Temporary authentication failure. [b1:2024-01-01 00:00:00]",
            BackendFailed(
                ProxyFailure.AUTH_TEMPFAIL,
                "[UNAVAILABLE] Temporary authentication failure. [b1:2024-01-01 00:00:00]",
                b"a1 NO [UNAVAILABLE] Temporary authentication failure. [b1:2024-01-01 00:00:00]\r\n",
            ),
        ),
        (
            b"L NO [CONTACTADMIN] Moved",
            BackendFailed(
                ProxyFailure.AUTH, "[CONTACTADMIN] Moved", b"a1 NO [CONTACTADMIN] Moved\r\n"
            ),
        ),
        (
            # Dovecot matches "NO [" case-sensitively: this one is hidden
            b"L no [EXPIRED] old",
            BackendFailed(ProxyFailure.AUTH, "[EXPIRED] old", GENERIC_FAIL),
        ),
    ],
)
def test_login_failures(line, failure):
    s = backend()
    s.recv(BANNER).take()
    s.recv(line + b"\r\n").expect(failure)


def test_retryable_kinds():
    assert ProxyFailure.AUTH_TEMPFAIL in RETRYABLE_FAILURES
    assert ProxyFailure.AUTH not in RETRYABLE_FAILURES


def test_invalid_banner():
    backend().recv(b"+OK POP3 ready\r\n").expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Invalid banner: +OK POP3 ready")
    )


def test_invalid_banner_is_sanitised():
    s = backend()
    s.recv(b"\x01" + b"x" * 300 + b"\r\n")
    (_, events) = s.take()
    assert events[0].log_text == "Invalid banner: ?" + "x" * 156 + "..."


def test_logindisabled_without_tls():
    backend().recv(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n").expect(
        BackendFailed(
            ProxyFailure.REMOTE_CONFIG, "LOGINDISABLED advertised, but SSL/TLS not enabled"
        )
    )


def test_logindisabled_with_ssl():
    backend(tls_active=True).recv(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n").expect(
        LOGIN_CMD
    )


def test_logindisabled_does_not_matter_for_authenticate():
    backend(mech="PLAIN").recv(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGINDISABLED] ready\r\n"
    ).expect(b"L AUTHENTICATE PLAIN Ym9iAGJvYgBzZWNyZXQ=\r\n")


def test_eof():
    s = backend()
    s.recv(BANNER).take()
    s.recv(b"").expect(
        BackendFailed(ProxyFailure.CONNECT, "Disconnected by server: Connection closed")
    )
    assert s.engine.state_name == "login/banner"


def test_eof_before_the_banner():
    s = backend()
    s.recv(b"").expect(
        BackendFailed(ProxyFailure.CONNECT, "Disconnected by server: Connection closed")
    )
    assert s.engine.state_name == "/none"


def test_line_length_limit():
    s = backend()
    s.recv(BANNER).take()
    s.recv(b"* " + b"x" * 4093 + b"\n").expect(BackendUntagged(b"* " + b"x" * 4093 + b"\r\n"))
    s.recv(b"* " + b"x" * 4094 + b"\n").expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Too long input line")
    )


def test_untagged_lines():
    s = backend()
    s.recv(BANNER).take()
    s.recv(
        b'* OK [ALERT] maintenance at 5\r\n* BYE going\r\n* ID ("name" "x")\r\nX OK what\r\n'
    ).expect(
        BackendUntagged(b"* OK [ALERT] maintenance at 5\r\n"),
        BackendIgnored("Unexpected input, ignoring: X OK what"),
    )


# -- STARTTLS -------------------------------------------------------------------------------


def test_starttls():
    s = backend(starttls=True, id_pairs=IDS)
    s.recv(BANNER).expect(ID_CMD + b"S STARTTLS\r\n")
    s.recv(b"I OK ID completed.\r\nS OK Begin TLS negotiation now.\r\nleftover").expect(
        BackendNeedsTLS()
    )
    assert s.engine.state_name == "/starttls"
    assert s.engine.trailing_data() == b"leftover"
    s.do("tls_started").expect(LOGIN_CMD)  # pre-TLS capabilities are reused
    s.recv(LOGGED_IN).expect(
        BackendLoggedIn(b"a1 OK [CAPABILITY " + POST_CAPS + b"] Logged in\r\n")
    )


def test_starttls_without_known_capabilities():
    s = backend(starttls=True)
    s.recv(BANNER_NO_CAPS).expect(b"S STARTTLS\r\n")
    s.recv(b"S OK go\r\n").expect(BackendNeedsTLS())
    s.do("tls_started").expect(b"C CAPABILITY\r\n" + LOGIN_CMD)


def test_starttls_not_advertised():
    backend(starttls=True).recv(BANNER_NO_ID).expect(
        BackendFailed(ProxyFailure.REMOTE_CONFIG, "STARTTLS not supported")
    )


def test_starttls_refused():
    s = backend(starttls=True)
    s.recv(BANNER).take()
    s.recv(b"S NO not now\r\n").expect(
        BackendFailed(ProxyFailure.REMOTE, "STARTTLS failed: not now")
    )


def test_starttls_with_logindisabled_is_fine():
    s = backend(starttls=True)
    s.recv(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n").expect(
        b"S STARTTLS\r\n"
    )
    s.recv(b"S OK go\r\n").take()
    s.do("tls_started").expect(LOGIN_CMD)


def test_tls_started_only_when_asked():
    with pytest.raises(RuntimeError):
        ImapBackendLogin(ImapBackendParams(user="u", password="p")).tls_started()


# -- nopipelining ---------------------------------------------------------------------------


def test_nopipelining_waits_for_id_and_capability():
    s = backend(nopipelining=True, id_pairs=IDS, client_ignores_capability_resp_code=True)
    s.recv(BANNER).expect(ID_CMD)
    s.recv(b"I OK ID completed.\r\n").expect(b"C CAPABILITY\r\n")
    s.recv(b"* CAPABILITY X\r\nC OK done\r\n").expect(LOGIN_CMD)
    s.recv(b"L OK Logged in\r\n").expect(BackendLoggedIn(b"* CAPABILITY X\r\na1 OK Logged in\r\n"))


def test_nopipelining_starttls_after_id():
    s = backend(nopipelining=True, id_pairs=IDS, starttls=True)
    s.recv(BANNER).expect(ID_CMD)
    s.recv(b"I OK ID completed.\r\n").expect(b"S STARTTLS\r\n")


def test_params_repr_hides_the_password():
    assert "hunter2" not in repr(ImapBackendParams(user="bob", password="hunter2"))
