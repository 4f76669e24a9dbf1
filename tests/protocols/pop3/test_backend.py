"""Pop3BackendLogin: Dovecot 2.3's pop3-proxy dialogue, byte for byte."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from proxyd.protocols.backend_events import (
    BackendFailed,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.pop3.backend import Pop3BackendLogin, Pop3BackendParams
from tests.protocols.script import Script

PARAMS = Pop3BackendParams(
    user="alice",
    password="alicepw",
    remote_ip="192.0.2.7",
    remote_port=50000,
    session_id="sess1",
    proxy_ttl=4,
)
XCLIENT = b"XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=sess1 TTL=4\r\n"
LOGGED_IN = BackendLoggedIn(b"+OK Logged in.\r\n")


def script(params: Pop3BackendParams = PARAMS) -> Script:
    return Script(Pop3BackendLogin(params))


def test_user_pass_without_xclient():
    s = script().recv(b"+OK Dovecot ready.\r\n").expect(b"USER alice\r\n")
    assert s.engine.state_name == "login1"
    # PASS waits for USER's reply
    s.recv(b"+OK\r\n").expect(b"PASS alicepw\r\n")
    assert s.engine.state_name == "login2"
    s.recv(b"+OK Logged in.\r\n").expect(LOGGED_IN)


def test_xclient_is_pipelined_with_user_when_the_banner_offers_it():
    s = script().recv(b"+OK [XCLIENT] Dovecot ready.\r\n").expect(XCLIENT + b"USER alice\r\n")
    assert s.engine.state_name == "xclient"
    assert s.engine.xclient_offered
    s.recv(b"+OK Updated\r\n+OK\r\n").expect(b"PASS alicepw\r\n")
    s.recv(b"+OK Logged in.\r\n").expect(LOGGED_IN)


def test_xclient_forward_fields():
    params = replace(
        PARAMS, forward_fields=(("client", "roundcube"), ("x\ty", "a\nb"), ("bare", ""))
    )
    s = script(params).recv(b"+OK [XCLIENT] ready\r\n")
    out, _ = s.take()
    line = out.split(b"\r\n")[0]
    assert line.startswith(XCLIENT[:-2] + b" FORWARD=")
    forward = base64.b64decode(line.split(b"FORWARD=")[1])
    assert forward == b"client=roundcube\tx\x01ty=a\x01nb\tbare"


def test_proxy_not_trusted_sends_no_xclient():
    s = script(replace(PARAMS, not_trusted=True)).recv(b"+OK [XCLIENT] ready\r\n")
    s.expect(b"USER alice\r\n")


def test_xclient_needs_the_bracket_right_after_ok():
    script().recv(b"+OK ready [XCLIENT]\r\n").expect(b"USER alice\r\n")


def test_xclient_refused():
    s = script().recv(b"+OK [XCLIENT] ready\r\n")
    s.take()
    s.recv(b"-ERR not now\r\n").expect(
        BackendFailed(ProxyFailure.REMOTE, "XCLIENT failed: -ERR not now")
    )


def test_invalid_banner():
    script().recv(b"* OK IMAP here\r\n").expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Invalid banner: * OK IMAP here")
    )


def test_stls_then_login():
    s = script(replace(PARAMS, starttls=True)).recv(b"+OK [XCLIENT] ready\r\n")
    s.expect(b"STLS\r\n")
    assert s.engine.state_name == "starttls"
    s.recv(b"+OK Begin TLS negotiation now.\r\nleftover").expect(BackendNeedsTLS())
    assert s.engine.trailing_data() == b"leftover"
    s.do("tls_started").expect(XCLIENT + b"USER alice\r\n")
    s.recv(b"+OK\r\n+OK\r\n").expect(b"PASS alicepw\r\n")


def test_stls_refused():
    s = script(replace(PARAMS, starttls=True)).recv(b"+OK ready\r\n")
    s.take()
    s.recv(b"-ERR no TLS here\r\n").expect(
        BackendFailed(ProxyFailure.REMOTE, "STLS failed: -ERR no TLS here")
    )


def test_tls_started_only_after_needs_tls():
    with pytest.raises(RuntimeError):
        Pop3BackendLogin(PARAMS).tls_started()


def test_master_user_logs_in_with_auth_plain():
    params = replace(PARAMS, master_user="proxymaster", password="masterpw")
    s = script(params).recv(b"+OK ready\r\n")
    ir = base64.b64encode(b"alice\0proxymaster\0masterpw")
    s.expect(b"AUTH PLAIN " + ir + b"\r\n")
    assert s.engine.state_name == "login2"
    s.recv(b"+OK Logged in.\r\n").expect(LOGGED_IN)


def test_auth_plain_behind_xclient():
    params = replace(PARAMS, mech="plain")
    s = script(params).recv(b"+OK [XCLIENT] ready\r\n")
    ir = base64.b64encode(b"alice\0alice\0alicepw")
    s.expect(XCLIENT + b"AUTH PLAIN " + ir + b"\r\n")
    assert s.engine.state_name == "xclient"
    s.recv(b"+OK Updated\r\n")
    assert s.engine.state_name == "login2"
    s.recv(b"+OK Logged in.\r\n").expect(LOGGED_IN)


def test_auth_login_with_continuations():
    s = script(replace(PARAMS, mech="LOGIN")).recv(b"+OK ready\r\n").expect(b"AUTH LOGIN =\r\n")
    s.recv(b"+ VXNlcm5hbWU6\r\n").expect(b"YWxpY2U=\r\n")
    s.recv(b"+ UGFzc3dvcmQ6\r\n").expect(b"YWxpY2Vwdw==\r\n")
    s.recv(b"+OK Logged in.\r\n").expect(LOGGED_IN)


def test_auth_continuation_with_bad_base64():
    s = script(replace(PARAMS, mech="LOGIN")).recv(b"+OK ready\r\n")
    s.take()
    s.recv(b"+ !!\r\n").expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Invalid base64 data in AUTH response")
    )


def test_auth_plain_continuation_is_a_protocol_error():
    s = script(replace(PARAMS, mech="PLAIN")).recv(b"+OK ready\r\n")
    s.take()
    s.recv(b"+ \r\n").expect(
        BackendFailed(
            ProxyFailure.PROTOCOL,
            "Invalid authentication data: Server didn't finish authentication",
        )
    )


def test_unsupported_proxy_mech():
    script(replace(PARAMS, mech="SCRAM-SHA-1")).expect(
        BackendFailed(ProxyFailure.INTERNAL, "Unsupported SASL mechanism SCRAM-SHA-1")
    )


@pytest.mark.parametrize(("user", "password"), [("alice\r\nDELE 1", "pw"), ("alice", "pw\nQUIT")])
def test_line_breaks_in_user_or_password_are_never_sent(user, password):
    s = script(replace(PARAMS, user=user, password=password))
    out, events = s.take()
    assert out == b""
    [failed] = events
    assert failed.kind is ProxyFailure.INTERNAL
    assert "QUIT" not in failed.log_text
    assert "pw" not in failed.log_text


@pytest.mark.parametrize(
    ("line", "kind", "log_text", "client_reply"),
    [
        (
            b"-ERR [AUTH] Authentication failed.",
            ProxyFailure.AUTH,
            "[AUTH] Authentication failed.",
            b"-ERR [AUTH] Authentication failed.\r\n",
        ),
        # POP3 passes the backend's text on, unlike IMAP
        (
            b"-ERR [IN-USE] Mailbox is locked",
            ProxyFailure.AUTH,
            "[IN-USE] Mailbox is locked",
            b"-ERR [IN-USE] Mailbox is locked\r\n",
        ),
        (
            b"-ERR [SYS/TEMP] Try later",
            ProxyFailure.AUTH_TEMPFAIL,
            "[SYS/TEMP] Try later",
            b"-ERR [SYS/TEMP] Try later\r\n",
        ),
        (b"garbage", ProxyFailure.AUTH, "garbage", b"-ERR Authentication failed.\r\n"),
        (b"-ERR", ProxyFailure.AUTH, "-ERR", b"-ERR Authentication failed.\r\n"),
    ],
)
def test_pass_refused(line, kind, log_text, client_reply):
    s = script().recv(b"+OK ready\r\n", b"+OK\r\n")
    s.take()
    s.recv(line + b"\r\n").expect(BackendFailed(kind, log_text, client_reply))


def test_user_refused():
    s = script().recv(b"+OK ready\r\n")
    s.take()
    s.recv(b"-ERR [AUTH] No such user\r\n").expect(
        BackendFailed(ProxyFailure.AUTH, "[AUTH] No such user", b"-ERR [AUTH] No such user\r\n")
    )


def test_backend_bytes_after_the_ok_are_kept_for_the_relay():
    s = script().recv(b"+OK ready\r\n", b"+OK\r\n", b"+OK Logged in.\r\n+OK 1 212\r\n")
    s.take()
    assert s.engine.trailing_data() == b"+OK 1 212\r\n"


def test_eof_before_login():
    s = script().recv(b"+OK ready\r\n", b"")
    s.expect(
        b"USER alice\r\n",
        BackendFailed(ProxyFailure.CONNECT, "Disconnected by server: Connection closed"),
    )
    assert s.engine.state_name == "login1"
    s = script().recv(b"")
    s.expect(BackendFailed(ProxyFailure.CONNECT, "Disconnected by server: Connection closed"))
    assert s.engine.state_name == "banner"


def test_too_long_line():
    script().recv(b"+OK " + b"x" * 5000).expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Too long input line")
    )


def test_banner_split_across_reads():
    script().recv(b"+O", b"K [XCLI", b"ENT] ready\r", b"\n").expect(XCLIENT + b"USER alice\r\n")


def test_password_not_in_repr():
    assert "alicepw" not in repr(PARAMS)
