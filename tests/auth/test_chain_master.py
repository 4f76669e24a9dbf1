"""Master passdbs and credentials lookups in the passdb chain (Dovecot's auth-request.c rules)."""

from __future__ import annotations

import logging

import pytest

from proxyd.auth import schemes
from proxyd.auth.opening import open_authenticator
from proxyd.auth.request import AuthStatus, FailCode
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError
from tests.auth.fakes import FakePassdb, make_chain, passdb_settings
from tests.auth.util import make_request

MASTERS = {"admin": [("password", "{PLAIN}adminpw")]}
USERS = {"alice": [("password", "{PLAIN}alicepw"), ("proxy", ""), ("host", "10.0.0.1")]}


async def test_master_login_continues_with_the_users_passdb(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    masters, users = FakePassdb(MASTERS), FakePassdb(USERS)
    chain = make_chain((masters, {"master": True, "pass_": True}), users)
    reply = (await chain.authenticate(make_request("admin", "adminpw", login_user="alice"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.user == "alice"
    # the typed (master) password is forwarded with the master user, as Dovecot does;
    # original_user is the name that authenticated, as there
    assert dict(reply.fields) == {
        "proxy": "", "host": "10.0.0.1", "original_user": "admin", "auth_user": "admin",
        "pass": "adminpw", "master": "admin",
    }  # fmt: skip
    assert masters.calls == ["admin"]
    assert users.calls == ["alice"]
    assert "Master user logging in as alice" in caplog.text


async def test_master_login_without_pass_stops_at_the_master_passdb() -> None:
    users = FakePassdb(USERS)
    chain = make_chain((FakePassdb(MASTERS), {"master": True}), users)
    reply = (await chain.authenticate(make_request("admin", "adminpw", login_user="alice"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.user == "alice"
    assert users.calls == []


async def test_master_password_is_checked() -> None:
    chain = make_chain((FakePassdb(MASTERS), {"master": True, "pass_": True}), FakePassdb(USERS))
    reply = (await chain.authenticate(make_request("admin", "wrong", login_user="alice"))).reply
    assert reply.fail_code is FailCode.AUTH_FAILED


async def test_unknown_login_user_is_an_authorization_failure() -> None:
    chain = make_chain((FakePassdb(MASTERS), {"master": True, "pass_": True}), FakePassdb(USERS))
    reply = (await chain.authenticate(make_request("admin", "adminpw", login_user="nobody"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.AUTHZ_FAIL


async def test_a_normal_login_never_runs_master_passdbs() -> None:
    masters = FakePassdb(MASTERS)
    chain = make_chain((masters, {"master": True}), FakePassdb(USERS))
    assert (await chain.authenticate(make_request("alice", "alicepw"))).reply.status is AuthStatus.OK
    assert (await chain.authenticate(make_request("admin", "adminpw"))).reply.status is AuthStatus.FAIL
    assert masters.calls == []


async def test_master_login_without_master_passdbs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    chain = make_chain(FakePassdb(USERS))
    reply = (await chain.authenticate(make_request("admin", "adminpw", login_user="alice"))).reply
    assert reply.status is AuthStatus.FAIL
    assert "Master user login attempted without master passdbs" in caplog.text


async def test_last_passdb_cannot_have_pass() -> None:
    settings = Settings(passdbs=(passdb_settings("static", args="password=x", pass_=True, line=7),))
    with pytest.raises(ConfigError) as info:
        async with open_authenticator(settings):
            pass
    assert str(info.value) == "/etc/proxyd/proxyd.conf:7: Last passdb can't have pass=yes"


# -- credentials lookups -------------------------------------------------------------------


async def test_credentials_from_plaintext() -> None:
    chain = make_chain(FakePassdb(USERS))
    result = await chain.lookup_credentials(make_request("alice"), "CRAM-MD5", "alice")
    assert result.reply.status is AuthStatus.OK
    assert result.credentials == schemes.credentials("{PLAIN}alicepw", "PLAIN", "CRAM-MD5", "")
    assert "pass" not in result.reply.fields  # no typed password to forward


async def test_credentials_scheme_not_available(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    passdb = FakePassdb({"alice": [("password", "{SSHA256}" + "A" * 48)]})
    result = await make_chain(passdb).lookup_credentials(make_request("alice"), "CRAM-MD5", "alice")
    assert result.reply.fail_code is FailCode.AUTH_FAILED
    assert result.credentials is None
    assert "Requested CRAM-MD5 scheme, but we have only SSHA256" in caplog.text


async def test_credentials_with_nopassword(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxyd.auth")
    passdb = FakePassdb({"alice": [("nopassword", "")]})
    result = await make_chain(passdb).lookup_credentials(make_request("alice"), "SCRAM-SHA-1", "alice")
    assert result.credentials is None
    assert "Requested SCRAM-SHA-1 scheme, but we have a NULL password" in caplog.text


async def test_credentials_user_unknown_beats_scheme_not_available() -> None:
    """One passdb had the user with the wrong scheme, another did not know it: unknown user."""
    first = FakePassdb({"alice": [("password", "{SSHA256}" + "A" * 48)]})
    chain = make_chain(first, FakePassdb({}))
    result = await chain.lookup_credentials(make_request("alice"), "CRAM-MD5", "alice")
    assert result.reply.fail_code is FailCode.AUTH_FAILED
