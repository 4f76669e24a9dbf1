"""Both engines wired together with no network (h11's ConnectionPair idea).

A client talks to the proxy's ImapLoginServer; a minimal synchronous driver
runs SASL and a password table; ImapBackendLogin then logs in to a "Dovecot
backend", which is another ImapLoginServer (Dovecot's backend imap-login is the
same program) that trusts the proxy.  Bytes move between the engines until
nothing more happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxyd.protocols.backend_events import BackendFailed, BackendLoggedIn, BackendUntagged
from proxyd.protocols.events import (
    NEED_DATA,
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    ClientFailure,
    LoginPolicy,
    TrustedClientInfo,
)
from proxyd.protocols.imap.backend import ImapBackendLogin, ImapBackendParams
from proxyd.protocols.imap.server import ImapLoginServer
from proxyd.protocols.sasl import Challenge, Credentials, SaslServer

FRONT = LoginPolicy(mechanisms=("PLAIN", "LOGIN"), disable_plaintext_auth=False)
BACKEND = LoginPolicy(
    mechanisms=("PLAIN", "LOGIN"),
    disable_plaintext_auth=False,
    trusted=True,
    greeting="Backend ready.",
)
POST_LOGIN_CAPS = b"IMAP4rev1 SASL-IR ID IDLE MOVE"


@dataclass
class Backend:
    """The backend's imap-login plus what its post-login imap process would say."""

    passwords: dict[str, str]
    engine: ImapLoginServer = field(default_factory=lambda: ImapLoginServer(BACKEND))
    trusted_info: list[TrustedClientInfo] = field(default_factory=list)
    sasl: SaslServer | None = None

    def handle(self) -> None:
        while (event := self.engine.next_event()) is not NEED_DATA:
            if isinstance(event, TrustedClientInfo):
                self.trusted_info.append(event)
            elif isinstance(event, AuthBegin):
                self.sasl = SaslServer.create(event.mech)
                self._step(self.sasl.start(event.initial_response))
            elif isinstance(event, AuthContinue):
                assert self.sasl is not None
                self._step(self.sasl.step(event.response))

    def _step(self, step: Any) -> None:
        if isinstance(step, Challenge):
            self.engine.sasl_challenge(step.data)
        elif isinstance(step, Credentials) and self.passwords.get(step.authcid) == step.password:
            tag = self.engine.current_tag.encode()
            if self.engine.client_ignores_capability_resp_code:
                reply = b"* CAPABILITY " + POST_LOGIN_CAPS + b"\r\n" + tag + b" OK Logged in\r\n"
            else:
                reply = tag + b" OK [CAPABILITY " + POST_LOGIN_CAPS + b"] Logged in\r\n"
            self.engine.login_succeeded(reply)
        else:
            self.engine.auth_failed(ClientFailure.AUTH_FAILED)


@dataclass
class Proxy:
    """A synchronous stand-in for proxyd.login.session: front engine, SASL, backend engine."""

    proxy_passwords: dict[str, str]
    backend: Backend
    front: ImapLoginServer = field(default_factory=lambda: ImapLoginServer(FRONT))
    to_client: bytearray = field(default_factory=bytearray)
    sasl: SaslServer | None = None
    events: list[Any] = field(default_factory=list)
    relayed_to_backend: bytes = b""

    def client_sends(self, data: bytes) -> bytes:
        self.front.receive_data(data)
        self._handle_front()
        out = bytes(self.to_client)
        self.to_client.clear()
        return out

    def _handle_front(self) -> None:
        while (event := self.front.next_event()) is not NEED_DATA:
            self.events.append(event)
            if isinstance(event, AuthBegin):
                self.sasl = SaslServer.create(event.mech)
                self._step(self.sasl.start(event.initial_response))
            elif isinstance(event, AuthContinue):
                assert self.sasl is not None
                self._step(self.sasl.step(event.response))
            elif isinstance(event, (AuthAborted, AuthRefused)):
                self.sasl = None
            self.to_client += self.front.data_to_send()
        self.to_client += self.front.data_to_send()

    def _step(self, step: Any) -> None:
        if isinstance(step, Challenge):
            self.front.sasl_challenge(step.data)
        elif (
            isinstance(step, Credentials)
            and self.proxy_passwords.get(step.authcid) == step.password
        ):
            self._proxy(step)
        else:
            self.front.auth_failed(ClientFailure.AUTH_FAILED)

    def _proxy(self, credentials: Credentials) -> None:
        params = ImapBackendParams(
            user=credentials.authcid,
            password=credentials.password,
            id_pairs=(
                ("x-session-id", "sess1"),
                ("x-originating-ip", "192.0.2.7"),
                ("x-proxy-ttl", "4"),
            ),
            client_tag=self.front.current_tag,
            client_ignores_capability_resp_code=self.front.client_ignores_capability_resp_code,
        )
        login = ImapBackendLogin(params)
        server = self.backend.engine
        login.receive_data(server.data_to_send())  # the banner
        while True:
            event = login.next_event()
            server.receive_data(login.data_to_send())
            self.backend.handle()
            reply = server.data_to_send()
            if event is NEED_DATA:
                assert reply, "the backend has nothing more to say"
                login.receive_data(reply)
                continue
            if isinstance(event, BackendUntagged):
                self.to_client += event.line
            elif isinstance(event, BackendLoggedIn):
                self.front.login_succeeded(event.client_reply)
                self.relayed_to_backend = self.front.trailing_data()
                return
            elif isinstance(event, BackendFailed):
                if event.client_reply is not None:
                    self.front.auth_backend_reply(event.client_reply)
                else:
                    self.front.auth_failed(ClientFailure.PROXY_UNAVAILABLE)
                return


def make(proxy_password: str = "secret", backend_password: str = "secret") -> Proxy:
    proxy = Proxy({"bob": proxy_password}, Backend({"bob": backend_password}))
    proxy.front.data_to_send()
    return proxy


def test_login_through_the_proxy_injects_backend_capabilities():
    proxy = make()
    out = proxy.client_sends(b"a LOGIN bob secret\r\nb SELECT INBOX\r\n")
    assert out == b"a OK [CAPABILITY " + POST_LOGIN_CAPS + b"] Logged in\r\n"
    assert proxy.front.state == "PROXYING"
    assert proxy.relayed_to_backend == b"b SELECT INBOX\r\n"
    # the backend trusted the proxy and took the client's address from the ID
    assert proxy.backend.trusted_info == [
        TrustedClientInfo(remote_ip="192.0.2.7", proxy_ttl=4, session_id="sess1")
    ]


def test_client_that_asked_capability_gets_it_untagged():
    proxy = make()
    proxy.client_sends(b"a CAPABILITY\r\n")
    out = proxy.client_sends(b"b AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n")
    assert out == b"* CAPABILITY " + POST_LOGIN_CAPS + b"\r\nb OK Logged in\r\n"


def test_authenticate_login_through_the_proxy():
    proxy = make()
    assert proxy.client_sends(b"a AUTHENTICATE LOGIN\r\n") == b"+ VXNlcm5hbWU6\r\n"
    assert proxy.client_sends(b"Ym9i\r\n") == b"+ UGFzc3dvcmQ6\r\n"
    assert (
        proxy.client_sends(b"c2VjcmV0\r\n")
        == b"a OK [CAPABILITY " + POST_LOGIN_CAPS + b"] Logged in\r\n"
    )


def test_wrong_password_at_the_proxy():
    proxy = make()
    assert (
        proxy.client_sends(b"a LOGIN bob nope\r\n")
        == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    )
    assert proxy.front.state == "NOT_AUTHENTICATED"


def test_backend_refuses_and_the_client_may_retry():
    proxy = make(backend_password="other")
    out = proxy.client_sends(b"a LOGIN bob secret\r\n")
    assert out == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert proxy.front.state == "NOT_AUTHENTICATED"
    assert proxy.client_sends(b"b NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_passwords_do_not_leak_to_the_client():
    proxy = make(proxy_password="hunter2", backend_password="hunter2")
    out = proxy.client_sends(b"a LOGIN bob hunter2\r\n")
    assert b"hunter2" not in out
    assert proxy.front.state == "PROXYING"
