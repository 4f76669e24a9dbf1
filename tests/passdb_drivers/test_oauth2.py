"""The oauth2 passdb against a small introspection / tokeninfo server in the tests, and
XOAUTH2 / OAUTHBEARER logins through proxyd that the proxy checks itself."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passdb_drivers.oauth2 import _check_known_fields, _Failed, _flatten, create
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.secret import Secret
from tests.auth.util import make_request
from tests.fixtures.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotBackend
from tests.fixtures.net import PROXYD_ADDRESS
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import IMAP4, fetch_subjects

#: what the server knows: token -> introspection answer
TOKENS: dict[str, dict[str, Any]] = {
    "good": {"active": True, "email": "Alice@Example.com", "scope": "mail openid", "host": "10.0.0.1"},
    "alice": {"active": True, "email": "alice", "scope": "mail"},
    "revoked": {"active": False, "email": "alice@example.com"},
    "noscope": {"active": True, "email": "alice@example.com", "scope": "openid"},
    "weird": {"active": True, "email": "alice@example.com", "token_type": "mac"},
}


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, token: str | None) -> None:
        if token == "broken":
            self.send_response(500)
            self.end_headers()
            return
        body = TOKENS.get(token or "")
        status = 200 if body is not None else 401
        data = json.dumps(body if body is not None else {"active": False}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        self.seen.append({"method": "GET", "path": url.path, "auth": auth, **{k: v[0] for k, v in query.items()}})
        if url.path == "/tokeninfo":
            self._answer(query.get("access_token", [""])[0])
        elif url.path == "/introspect" and "token" in query:
            self._answer(query["token"][0])
        else:
            self._answer(auth.removeprefix("Bearer "))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        self.seen.append({"method": "POST", **{k: v[0] for k, v in form.items()}})
        self._answer(form.get("token", [""])[0])


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[str]:
    server = ThreadingHTTPServer((PROXYD_ADDRESS, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{PROXYD_ADDRESS}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def conf(tmp_path: Path, text: str) -> PassdbSettings:
    path = tmp_path / "dovecot-oauth2.conf.ext"
    path.write_text(text)
    return PassdbSettings(driver="oauth2", args=str(path))


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("auth", ""), ("get", "?token="), ("post", "")],
)
async def test_introspection_modes(tmp_path: Path, oauth_server: str, mode: str, extra: str) -> None:
    settings = conf(
        tmp_path,
        f"introspection_url = {oauth_server}/introspect{extra}\nintrospection_mode = {mode}\n"
        "client_id = proxyd\nclient_secret = s3\npass_attrs = proxy=y host=%{oauth2:host} scope=%$\n",
    )
    _Handler.seen.clear()
    async with create(settings) as passdb:
        reply = await passdb.verify_plain(make_request("alice@example.com", "good"), Secret("good"))  # type: ignore[attr-defined]
    assert reply.result is PassdbResult.OK
    assert dict(reply.fields) == {"proxy": "y", "host": "10.0.0.1", "scope": "mail openid", "token": "good"}
    request = _Handler.seen[-1]
    if mode == "auth":
        assert request["auth"] == "Bearer good"
    else:
        assert (request["client_id"], request["client_secret"]) == ("proxyd", "s3")
        assert request["method"] == ("POST" if mode == "post" else "GET")


@pytest.mark.parametrize(
    ("token", "user", "result", "message"),
    [
        ("revoked", "alice@example.com", PassdbResult.PASSWORD_MISMATCH, "Introspection failed: Provided token is not valid"),
        ("good", "bob@example.com", PassdbResult.USER_UNKNOWN, "Introspection failed: Username 'bob@example.com' did not match 'alice@example.com'"),
        ("noscope", "alice@example.com", PassdbResult.USER_DISABLED, "Introspection failed: Token is not valid for scope 'mail'"),
    ],
)
async def test_refusals(
    tmp_path: Path, oauth_server: str, caplog: pytest.LogCaptureFixture,
    token: str, user: str, result: PassdbResult, message: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    settings = conf(tmp_path, f"introspection_url = {oauth_server}/introspect\nscope = mail\n")
    async with create(settings) as passdb:
        reply = await passdb.verify_plain(make_request(user, token), Secret(token))  # type: ignore[attr-defined]
    assert reply.result is result
    assert f"oauth2 failed: {message}" in caplog.text


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("broken", "oauth2 failed: Introspection failed: 500 Internal Server Error"),
        ("weird", "oauth2 failed: Introspection failed: Expected Bearer token, got 'mac'"),
    ],
)
async def test_server_trouble_is_a_temporary_failure(
    tmp_path: Path, oauth_server: str, token: str, message: str
) -> None:
    settings = conf(tmp_path, f"introspection_url = {oauth_server}/introspect\n")
    async with create(settings) as passdb:
        with pytest.raises(PassdbTempFail, match=message):
            await passdb.verify_plain(make_request("alice@example.com", token), Secret(token))  # type: ignore[attr-defined]


async def test_unreachable_server(tmp_path: Path) -> None:
    settings = conf(tmp_path, "introspection_url = http://127.0.0.1:9/introspect\ntimeout_msecs = 2000\n")
    async with create(settings) as passdb:
        with pytest.raises(PassdbTempFail, match="oauth2 failed: Introspection failed: "):
            await passdb.verify_plain(make_request("a", "good"), Secret("good"))  # type: ignore[attr-defined]


async def test_tokeninfo_then_introspection(tmp_path: Path, oauth_server: str) -> None:
    """tokeninfo answers; its fields lack what pass_attrs needs, so introspection follows;
    an unknown token is refused by tokeninfo's 401 alone."""
    settings = conf(
        tmp_path,
        f"tokeninfo_url = {oauth_server}/tokeninfo?access_token=\n"
        f"introspection_url = {oauth_server}/introspect\npass_attrs = host=%{{oauth2:host}} x=%{{oauth2:missing:dflt}}\n",
    )
    async with create(settings) as passdb:
        ok = await passdb.verify_plain(make_request("alice@example.com", "good"), Secret("good"))  # type: ignore[attr-defined]
        assert dict(ok.fields)["x"] == "dflt"
        bad = await passdb.verify_plain(make_request("alice@example.com", "nope"), Secret("nope"))  # type: ignore[attr-defined]
    assert ok.result is PassdbResult.OK
    assert bad.result is PassdbResult.PASSWORD_MISMATCH


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scope = x\n", "Password grant, tokeninfo, introspection URL or validation key dictionary must be given"),
        ("introspection_url = http://x/\nintrospection_mode = local\n", "local_validation_key_dict is required for local introspection."),
        ("introspection_url = http://x/\nintrospection_mode = bogus\n", "Invalid value 'bogus' for introspection mode"),
        ("introspection_url = http://x/\ngrant_url = http://x/\n", "setting 'grant_url' is not supported yet"),
        ("introspection_url = http://x/\nbogus = 1\n", "Unknown setting: bogus"),
    ],
)
def test_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create(conf(tmp_path, text))


@pytest.mark.e2e
@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_bearer_token_login_checked_by_the_proxy(
    proxyd: ProxydRunner, backend_a: DovecotBackend, oauth_server: str, mech: str
) -> None:
    """The proxy checks the token at the introspection server and logs in to the backend
    with the master user from pass_attrs; a revoked token gets Dovecot's JSON error first."""
    path = proxyd.workdir / "dovecot-oauth2.conf.ext"
    path.write_text(
        f"introspection_url = {oauth_server}/introspect\nusername_attribute = email\n"
        f"pass_attrs = proxy=y host={backend_a.address} port={backend_a.imap_port} "
        f"master={MASTER_USER} pass={MASTER_PASSWORD}\n"
    )
    path.chmod(0o644)
    config = proxyd.config(None, auth_mechanisms="plain xoauth2 oauthbearer")
    config.passdbs = [{"driver": "oauth2", "args": str(path)}]
    running = proxyd.start(config)

    def message(token: str) -> bytes:
        if mech == "XOAUTH2":
            return f"user=alice\x01auth=Bearer {token}\x01\x01".encode()
        return f"n,a=alice,\x01auth=Bearer {token}\x01\x01".encode()

    with IMAP4(running.address(), running.port()) as client:
        assert client.authenticate(mech, lambda _challenge: message("alice"))[0] == "OK"
        assert fetch_subjects(client) == [backend_a.subject_for("alice")]
        client.logout()
    challenges: list[bytes] = []

    def revoked(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return message("revoked") if len(challenges) == 1 else b""

    with IMAP4(running.address(), running.port()) as client, pytest.raises(IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate(mech, revoked)
    assert b'"status"' in challenges[-1]
    running.wait_for_log(r"oauth2\(alice,.*\): oauth2 failed: Introspection failed: Provided token is not valid")


@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
).map(lambda value: json.dumps(value).encode())))
def test_fuzz_response_parser(body: bytes) -> None:
    """Any answer from the server: its scalar members as strings, or Dovecot's refusal text."""
    refused: _Failed | None = None
    fields: dict[str, str] = {}
    try:
        fields = _flatten(body)
        _check_known_fields(fields)
    except _Failed as failed:
        refused = failed
    if refused is not None:
        assert refused.result is PassdbResult.INTERNAL_FAILURE
        assert refused.error.startswith(("Invalid response data", "Malformed number", "Expected Bearer"))
    assert all(isinstance(value, str) for value in fields.values())
