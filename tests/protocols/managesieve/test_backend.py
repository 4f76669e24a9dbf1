"""ManageSieveBackendLogin: Pigeonhole's managesieve-proxy dialogue, byte for byte."""

from __future__ import annotations

import base64
from dataclasses import replace

from proxyd.protocols.backend_events import (
    BackendFailed,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.managesieve.backend import ManageSieveBackendLogin, SieveBackendParams
from tests.protocols.script import Script

PARAMS = SieveBackendParams(
    user="alice",
    password="alicepw",
    remote_ip="192.0.2.7",
    remote_port=50000,
    session_id="sess1",
    proxy_ttl=4,
)
CAPS = (
    b'"IMPLEMENTATION" "Dovecot (Debian) Pigeonhole"\r\n'
    b'"SIEVE" "fileinto vacation"\r\n'
    b'"NOTIFY" "mailto"\r\n'
    b'"SASL" "PLAIN LOGIN"\r\n'
    b'"VERSION" "1.0"\r\n'
)
GREETING = CAPS + b'OK "Dovecot ready."\r\n'
AUTH = b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"alice\0alice\0alicepw") + b'"\r\n'
XCLIENT = b"XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=sess1 TTL=4\r\n"
FAILED = b'NO "Authentication failed."\r\n'


def script(params: SieveBackendParams = PARAMS) -> Script:
    return Script(ManageSieveBackendLogin(params))


def test_plain_login() -> None:
    s = script()
    s.recv(CAPS).expect()
    assert s.engine.state_name == "none"
    s.recv(b'OK "Dovecot ready."\r\n').expect(AUTH)
    assert s.engine.state_name == "auth"
    s.recv(b'OK "Logged in."\r\n').expect(BackendLoggedIn(b'OK "Logged in."\r\n'))


def test_xclient_when_offered() -> None:
    s = script().recv(CAPS + b'"XCLIENT"\r\nOK "ready"\r\n').expect(XCLIENT)
    assert s.engine.state_name == "xclient"
    s.recv(b'OK "Updated"\r\n').expect(AUTH)
    s.recv(b"OK\r\n").expect(BackendLoggedIn(b"OK\r\n"))


def test_xclient_not_sent_when_not_trusted() -> None:
    script(replace(PARAMS, not_trusted=True)).recv(CAPS + b'"XCLIENT"\r\nOK "x"\r\n').expect(AUTH)


def test_xclient_refused() -> None:
    s = script()
    s.recv(CAPS + b'"XCLIENT"\r\nOK "r"\r\n').expect(XCLIENT)
    s.recv(b'NO "You are not from trusted IP"\r\n').expect(
        BackendFailed(ProxyFailure.REMOTE, 'Remote XCLIENT failed: NO "You are not from trusted IP"')
    )


def test_master_user_logs_in_as_the_user() -> None:
    s = script(replace(PARAMS, master_user="admin", password="adminpw"))
    ir = base64.b64encode(b"alice\0admin\0adminpw")
    s.recv(GREETING).expect(b'AUTHENTICATE "PLAIN" "' + ir + b'"\r\n')


def test_starttls() -> None:
    s = script(replace(PARAMS, starttls=True))
    s.recv(CAPS + b'"STARTTLS"\r\nOK "ready"\r\n').expect(b"STARTTLS\r\n")
    s.recv(b'OK "Begin TLS negotiation now."\r\n').expect(BackendNeedsTLS())
    s.do("tls_started").expect()
    assert s.engine.state_name == "tls-ready"
    s.recv(GREETING).expect(AUTH)


def test_starttls_not_offered() -> None:
    script(replace(PARAMS, starttls=True)).recv(GREETING).expect(
        BackendFailed(ProxyFailure.REMOTE_CONFIG, "Remote doesn't support STARTTLS")
    )


def test_no_sasl_no_login() -> None:
    script().recv(b'"IMPLEMENTATION" "x"\r\n"SASL" ""\r\nOK "x"\r\n').expect(
        BackendFailed(ProxyFailure.REMOTE_CONFIG, "Server has disabled authentication (TLS required?)")
    )


def test_refusal_is_hidden() -> None:
    s = script()
    s.recv(GREETING).expect(AUTH)
    s.recv(b'NO "Authentication failed for alice."\r\n').expect(
        BackendFailed(ProxyFailure.AUTH, "Authentication failed for alice.", FAILED)
    )


def test_trylater_is_a_tempfail() -> None:
    s = script()
    s.recv(GREETING).expect(AUTH)
    s.recv(b'NO (TRYLATER) "Too busy"\r\n').expect(
        BackendFailed(ProxyFailure.AUTH_TEMPFAIL, "Too busy", b'NO (TRYLATER) "Too busy"\r\n')
    )


def test_sasl_challenge_from_the_backend() -> None:
    s = script(replace(PARAMS, mech="LOGIN"))
    s.recv(GREETING).expect(b'AUTHENTICATE "LOGIN"\r\n')
    s.recv(b'"' + base64.b64encode(b"Username:") + b'"\r\n').expect(
        b'"' + base64.b64encode(b"alice") + b'"\r\n'
    )
    s.recv(b'"' + base64.b64encode(b"Password:") + b'"\r\n').expect(
        b'"' + base64.b64encode(b"alicepw") + b'"\r\n'
    )


def test_bad_greetings() -> None:
    script().recv(b'NO "go away"\r\n').expect(
        BackendFailed(
            ProxyFailure.PROTOCOL, "Remote sent unexpected NO/BYE instead of capability response"
        )
    )
    script().recv(b"HELLO\r\n").expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Remote sent invalid response: HELLO")
    )
    script().recv(b'"SASL"\r\n').expect(
        BackendFailed(ProxyFailure.PROTOCOL, "Server returned erroneous SASL capability")
    )
    script().recv(b"").expect(
        BackendFailed(ProxyFailure.CONNECT, "Disconnected by server: Connection closed")
    )
