"""The passdb chain: Dovecot's field rules and result_* / skip semantics, with in-memory passdbs."""

from __future__ import annotations

import logging
import time

import pytest

from proxyd.auth.chain import ChainEntry
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from proxyd.errors import ConfigError
from tests.auth.fakes import FakePassdb, FakeVerifyingPassdb, make_chain, passdb_settings
from tests.auth.util import make_request

ALICE = {"alice": [("password", "{PLAIN}secret")]}


async def test_success_returns_user_and_fields() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("host", "10.0.0.1"), ("port", "1143")]})
    result = await make_chain(passdb).authenticate(make_request("alice", "secret"))
    assert result.reply.status is AuthStatus.OK
    assert result.reply.user == "alice"
    assert dict(result.reply.fields) == {"host": "10.0.0.1", "port": "1143"}
    assert result.reply.fail_code is None
    assert result.delay_until is None


async def test_wrong_password_fails_without_fields() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "secret"), ("reason", "secret reason"), ("host", "h")]}
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "wrong"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.AUTH_FAILED
    assert reply.reason is None
    assert dict(reply.fields) == {}


async def test_unknown_user_fails() -> None:
    passdb = FakePassdb(ALICE)
    reply = (await make_chain(passdb).authenticate(make_request("bob", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.AUTH_FAILED
    assert passdb.calls == ["bob"]


async def test_default_scheme_of_the_passdb_applies() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "5ebe2294ecd0e0f08eab7690d2a6ee69")]}, scheme="PLAIN-MD5"
    )
    chain = make_chain(passdb)
    assert (await chain.authenticate(make_request("alice", "secret"))).reply.status is AuthStatus.OK
    assert (
        await chain.authenticate(make_request("alice", "Secret"))
    ).reply.status is AuthStatus.FAIL


async def test_password_noscheme_ignores_braces() -> None:
    passdb = FakePassdb({"alice": [("password_noscheme", "{weird}pw")]})
    chain = make_chain(passdb)
    assert (
        await chain.authenticate(make_request("alice", "{weird}pw"))
    ).reply.status is AuthStatus.OK


# -- proxy / pass forwarding ------------------------------------------------------------


async def test_proxy_reply_gets_client_password() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("proxy", "Y"), ("host", "10.0.0.1")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"proxy": "", "host": "10.0.0.1", "pass": "secret"}
    assert "secret" not in repr(reply)


async def test_proxy_reply_keeps_passdb_pass() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("proxy", ""), ("pass", "backendpw")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.fields["pass"] == "backendpw"


async def test_no_pass_without_proxy_or_without_password() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("host", "10.0.0.1")]})
    chain = make_chain(passdb)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert "pass" not in reply.fields
    proxy_passdb = FakePassdb({"alice": [("proxy", "y"), ("host", "h")]})
    lookup = (await make_chain(proxy_passdb).lookup(make_request("alice"))).reply
    assert lookup.status is AuthStatus.OK
    assert "pass" not in lookup.fields


# -- nopassword / nologin / reason --------------------------------------------------------


async def test_nopassword_accepts_any_password() -> None:
    passdb = FakePassdb({"alice": [("nopassword", "Y"), ("proxy", "y")]})
    chain = make_chain(passdb)
    reply = (await chain.authenticate(make_request("alice", "anything"))).reply
    assert reply.status is AuthStatus.OK
    assert "nopassword" not in reply.fields  # specific to one passdb, never returned


async def test_nopassword_with_a_password_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("nopassword", "y")]})
    chain = make_chain(passdb)
    assert (
        await chain.authenticate(make_request("alice", "other"))
    ).reply.status is AuthStatus.FAIL
    assert "nopassword set but password is non-empty" in caplog.text
    assert (await chain.authenticate(make_request("alice", "secret"))).reply.status is AuthStatus.OK


async def test_nopassword_with_empty_password_is_fine() -> None:
    passdb = FakePassdb({"alice": [("password", "{PLAIN}"), ("nopassword", "")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "x"))).reply
    assert reply.status is AuthStatus.OK


async def test_no_password_and_no_nopassword_fails(caplog: pytest.LogCaptureFixture) -> None:
    passdb = FakePassdb({"alice": [("host", "h")]})
    caplog.set_level(logging.INFO, "proxyd.auth")
    reply = (await make_chain(passdb).authenticate(make_request("alice", "x"))).reply
    assert reply.status is AuthStatus.FAIL
    assert "No password returned (and no nopassword)" in caplog.text


async def test_nologin_with_reason_after_correct_password() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "secret"), ("nologin", "N"), ("reason", "Moved to the new server")]}
    )
    chain = make_chain(passdb)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.LOGIN_DISABLED
    assert reply.reason == "Moved to the new server"
    assert reply.fields["nologin"] == ""
    wrong = (await chain.authenticate(make_request("alice", "wrong"))).reply
    assert wrong.fail_code is FailCode.AUTH_FAILED
    assert wrong.reason is None
    assert "nologin" not in wrong.fields
    assert "reason" not in wrong.fields


async def test_nologin_without_reason_and_referral_host() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "secret"), ("nologin", ""), ("host", "imap2.example.com")]}
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.fail_code is FailCode.LOGIN_DISABLED
    assert reply.reason is None
    assert reply.fields["host"] == "imap2.example.com"  # the login side turns this into a referral


async def test_proxy_wins_over_nologin() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "secret"), ("nologin", "y"), ("proxy", "y"), ("host", "h")]}
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields["proxy"] == ""


# -- user names ---------------------------------------------------------------------------


async def test_username_is_lowercased_before_lookup() -> None:
    passdb = FakePassdb(ALICE)
    reply = (await make_chain(passdb).authenticate(make_request("AlIcE", "secret"))).reply
    assert passdb.calls == ["alice"]
    assert reply.status is AuthStatus.OK
    assert reply.user == "alice"
    assert reply.fields["original_user"] == "AlIcE"


async def test_user_rewrite() -> None:
    passdb = FakePassdb(
        {"alice": [("password", "secret"), ("user", "alice@example.com"), ("host", "h")]}
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.user == "alice@example.com"
    assert "user" not in reply.fields


@pytest.mark.parametrize(
    ("user", "field", "value", "expected"),
    [
        ("alice@old.example", "username", "bob", "bob@old.example"),
        ("alice@old.example", "username", "bob@new.example", "bob@new.example"),
        ("alice@old.example", "domain", "new.example", "alice@new.example"),
        ("alice", "domain", "new.example", "alice@new.example"),
    ],
)
async def test_username_and_domain_rewrites(
    user: str, field: str, value: str, expected: str
) -> None:
    passdb = FakePassdb({user: [("password", "pw"), (field, value)]})
    reply = (await make_chain(passdb).authenticate(make_request(user, "pw"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.user == expected


async def test_rewrite_to_empty_user_fails() -> None:
    passdb = FakePassdb({"alice": [("password", "pw"), ("user", "")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "pw"))).reply
    assert reply.status is AuthStatus.FAIL


@pytest.mark.parametrize("user", ["al ice", "alice%d", "al/ice", "älice", "", "alice\r\n"])
async def test_disallowed_user_names_never_reach_a_passdb(user: str) -> None:
    passdb = FakePassdb({user.lower(): [("nopassword", "")]})
    reply = (await make_chain(passdb).authenticate(make_request(user, "pw"))).reply
    assert reply.status is AuthStatus.FAIL
    assert passdb.calls == []


@pytest.mark.parametrize("password", ["a\tb", "a\rb", "a\nb", "a\x01b"])
async def test_passwords_with_illegal_chars_are_not_looked_up(password: str) -> None:
    passdb = FakePassdb({"alice": [("nopassword", "")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", password))).reply
    assert reply.status is AuthStatus.FAIL
    assert passdb.calls == []


async def test_master_user_login_is_refused() -> None:
    passdb = FakePassdb({"admin": [("nopassword", "")]})
    request = make_request("admin", "pw", login_user="alice")
    assert (await make_chain(passdb).authenticate(request)).reply.status is AuthStatus.FAIL
    same = make_request("admin", "pw", login_user="admin")
    assert (await make_chain(passdb).authenticate(same)).reply.status is AuthStatus.OK


# -- several passdbs, tempfail -----------------------------------------------------------------


async def test_mismatch_in_first_falls_through_to_second() -> None:
    first = FakePassdb({"alice": [("password", "old")]})
    second = FakePassdb({"alice": [("password", "new"), ("host", "second")]})
    reply = (await make_chain(first, second).authenticate(make_request("alice", "new"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"host": "second"}
    assert first.calls == ["alice"]
    assert second.calls == ["alice"]


async def test_tempfail_then_next_passdb_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    down = FakePassdb(error=PassdbTempFail("connect to db failed"))
    up = FakePassdb(ALICE)
    reply = (await make_chain(down, up).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("connect to db failed" in r.getMessage() for r in errors)


async def test_tempfail_alone_and_before_a_failure() -> None:
    down = FakePassdb(error=PassdbTempFail("down"))
    reply = (await make_chain(down).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL
    assert reply.fail_code is FailCode.TEMP_FAIL
    # the failing passdb might have had the right password: still temporary
    other = FakePassdb({"alice": [("password", "different")]})
    reply = (await make_chain(down, other).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL


async def test_driver_bug_is_a_tempfail(caplog: pytest.LogCaptureFixture) -> None:
    broken = FakePassdb(error=RuntimeError("boom"))
    reply = (await make_chain(broken).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL
    assert "Unexpected error in passdb lookup" in caplog.text


async def test_internal_failure_result_from_driver() -> None:
    passdb = FakePassdb(ALICE, result=PassdbResult.INTERNAL_FAILURE)
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL


async def test_user_disabled_and_pass_expired_end_the_chain() -> None:
    disabled = FakePassdb(
        {"alice": [("reason", "Account locked")]}, result=PassdbResult.USER_DISABLED
    )
    later = FakePassdb(ALICE)
    reply = (await make_chain(disabled, later).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.USER_DISABLED
    assert reply.reason == "Account locked"
    assert later.calls == []
    expired = FakePassdb({"alice": []}, result=PassdbResult.PASS_EXPIRED)
    reply = (await make_chain(expired).authenticate(make_request("alice", "secret"))).reply
    assert reply.fail_code is FailCode.PASS_EXPIRED
    assert reply.reason == "Password expired"


async def test_unknown_scheme_is_a_plain_failure(caplog: pytest.LogCaptureFixture) -> None:
    passdb = FakePassdb({"alice": [("password", "{NOSUCH}secret")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert reply.fail_code is FailCode.AUTH_FAILED
    assert "Unknown scheme NOSUCH" in caplog.text


async def test_invalid_password_data_is_a_tempfail(caplog: pytest.LogCaptureFixture) -> None:
    passdb = FakePassdb({"alice": [("password", "{SSHA}AAAA")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL
    assert "Password data is not valid for scheme SSHA" in caplog.text
    assert "AAAA" not in caplog.text


# -- result_* actions -------------------------------------------------------------------------


def two(first_rule: str, second_users: dict[str, list[tuple[str, str | None]]] | None = None):
    first = FakePassdb({"alice": [("password", "secret"), ("from_first", "1")]})
    second = FakePassdb(
        second_users if second_users is not None else {"alice": [("from_second", "2")]}
    )
    return first, second, make_chain((first, {"result_success": first_rule}), second)


async def test_result_success_return_ok() -> None:
    _first, second, chain = two("return-ok")
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"from_first": "1"}
    assert second.calls == []


async def test_result_success_return_fail() -> None:
    _first, second, chain = two("return-fail")
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert second.calls == []


async def test_result_success_return_without_earlier_success_fails() -> None:
    _first, second, chain = two("return")
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    assert second.calls == []


async def test_result_success_continue_skips_second_password_check() -> None:
    # the second passdb has no password at all: the first one already verified it
    _first, second, chain = two("continue")
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"from_first": "1", "from_second": "2"}
    assert second.calls == ["alice"]


async def test_result_success_continue_needs_a_later_success() -> None:
    _first, _second, chain = two("continue", second_users={})
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL


async def test_result_success_continue_ok() -> None:
    # second does not know the user: continue-ok already made this a success,
    # and the failed second passdb's fields are rolled back
    _first, second, chain = two("continue-ok", second_users={})
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"from_first": "1"}
    assert second.calls == ["alice"]


async def test_result_success_continue_fail() -> None:
    # continue-fail does not count the password as verified: the next passdb checks it again
    second_users: dict[str, list[tuple[str, str | None]]] = {
        "alice": [("password", "secret"), ("from_second", "2")]
    }
    _first, _second, chain = two("continue-fail", second_users)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK  # the second passdb's return-ok decides
    assert reply.fields == {"from_first": "1", "from_second": "2"}
    _first, _second, chain = two("continue-fail")  # second has no password
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL
    _first, _second, chain = two("continue-fail", second_users={})
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.FAIL


async def test_result_failure_return_fail_stops_the_chain() -> None:
    first = FakePassdb({"alice": [("password", "old")]})
    second = FakePassdb({"alice": [("password", "new")]})
    chain = make_chain((first, {"result_failure": "return-fail"}), second)
    reply = (await chain.authenticate(make_request("alice", "new"))).reply
    assert reply.status is AuthStatus.FAIL
    assert second.calls == []


async def test_result_failure_continue_ok_grants_success() -> None:
    first = FakePassdb({"alice": [("password", "other")]})
    second = FakePassdb({"bob": [("password", "x")]})
    chain = make_chain((first, {"result_failure": "continue-ok"}), second)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    # Dovecot: passdb_success was set, and the last result (unknown user) does not undo it
    assert reply.status is AuthStatus.OK


async def test_result_internalfail_return_fail_is_still_temporary() -> None:
    down = FakePassdb(error=PassdbTempFail("down"))
    up = FakePassdb(ALICE)
    chain = make_chain((down, {"result_internalfail": "return-fail"}), up)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL
    assert up.calls == []


async def test_result_internalfail_continue_fail_then_success() -> None:
    down = FakePassdb(error=PassdbTempFail("down"))
    up = FakePassdb(ALICE)
    chain = make_chain((down, {"result_internalfail": "continue-fail"}), up)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK


# -- skip ---------------------------------------------------------------------------------------


async def test_skip_authenticated_and_unauthenticated() -> None:
    verifier = FakePassdb({"alice": [("password", "secret")]})
    routing = FakePassdb({"alice": [("proxy", "y"), ("host", "10.0.0.5")]})
    unused = FakePassdb({"alice": [("host", "never")]})
    chain = make_chain(
        (routing, {"skip": "unauthenticated"}),  # skipped: nothing verified yet
        (verifier, {"result_success": "continue-ok"}),
        (unused, {"skip": "authenticated"}),  # skipped: the password is verified now
        (routing, {"skip": "unauthenticated"}),
    )
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"proxy": "", "host": "10.0.0.5", "pass": "secret"}
    assert routing.calls == ["alice"]
    assert unused.calls == []


async def test_all_passdbs_skipped_is_a_tempfail() -> None:
    passdb = FakePassdb(ALICE)
    chain = make_chain((passdb, {"skip": "unauthenticated"}))
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL


# -- noauthenticate ----------------------------------------------------------------------------


async def test_noauthenticate_continues_to_the_next_passdb() -> None:
    extra = FakePassdb({"alice": [("noauthenticate", ""), ("host", "from-extra")]})
    real = FakePassdb(ALICE)
    reply = (await make_chain(extra, real).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"host": "from-extra"}
    assert "noauthenticate" not in reply.fields
    wrong = (await make_chain(extra, real).authenticate(make_request("alice", "bad"))).reply
    assert wrong.status is AuthStatus.FAIL


async def test_noauthenticate_in_the_last_passdb_is_an_internal_failure() -> None:
    extra = FakePassdb({"alice": [("noauthenticate", "")]})
    reply = (await make_chain(extra).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.TEMPFAIL


# -- default_fields / override_fields / field syntax ----------------------------------------------


async def test_default_and_override_fields() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("host", "from-passdb"), ("port", "1")]})
    chain = make_chain(
        (
            passdb,
            {
                "default_fields": "host=default proxy=y destuser=%n@example.com",
                "override_fields": "port=993 ssl=any-cert",
            },
        )
    )
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.fields["host"] == "from-passdb"
    assert reply.fields["destuser"] == "alice@example.com"
    assert reply.fields["port"] == "993"
    assert reply.fields["ssl"] == "any-cert"
    assert reply.fields["proxy"] == ""


async def test_protected_and_remove_suffixes() -> None:
    passdb = FakePassdb(
        {
            "alice": [
                ("password", "secret"),
                ("host", "first"),
                ("host:protected", "second"),
                ("port:protected", "1143"),
                ("destuser", "x"),
                ("destuser:remove", ""),
            ]
        }
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.fields == {"host": "first", "port": "1143"}


async def test_null_fields_are_skipped_and_empty_values_enable_booleans() -> None:
    passdb = FakePassdb(
        {
            "alice": [
                ("password", "secret"),
                ("proxy", None),
                ("nologin", None),
                ("starttls", ""),
                ("", "x"),
            ]
        }
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"starttls": ""}


async def test_userdb_fields_are_dropped_and_passdb_import_applies() -> None:
    passdb = FakePassdb(
        {
            "alice": [
                ("password", "secret"),
                ("userdb_home", "/home/a"),
                ("passdb_import", "host=h\tproxy"),
            ]
        }
    )
    reply = (await make_chain(passdb).authenticate(make_request("alice", "secret"))).reply
    assert reply.fields == {"host": "h", "proxy": "", "pass": "secret"}


async def test_multiple_passwords_keep_the_first(caplog: pytest.LogCaptureFixture) -> None:
    passdb = FakePassdb({"alice": [("password", "first"), ("password", "second")]})
    chain = make_chain(passdb)
    assert (await chain.authenticate(make_request("alice", "first"))).reply.status is AuthStatus.OK
    assert (
        await chain.authenticate(make_request("alice", "second"))
    ).reply.status is AuthStatus.FAIL
    assert "Multiple password values not supported" in caplog.text


async def test_fail_field_fails_this_passdb_only() -> None:
    first = FakePassdb({"alice": [("password", "secret"), ("fail", "")]})
    second = FakePassdb({"alice": [("password", "secret"), ("host", "two")]})
    assert (await make_chain(first).authenticate(make_request("alice", "secret"))).reply.status is (
        AuthStatus.FAIL
    )
    reply = (await make_chain(first, second).authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"host": "two"}


# -- allow_nets / delay_until ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nets", "rip", "ok"),
    [
        ("192.0.2.0/24", "192.0.2.10", True),
        ("10.0.0.0/8, 192.0.2.10", "192.0.2.10", True),
        ("10.0.0.0/8", "192.0.2.10", False),
        ("local", "", True),
        ("local", "192.0.2.10", False),
        ("bogus 192.0.2.0/24", "192.0.2.10", True),
        ("2001:db8::/32", "2001:db8::1", True),
        ("192.0.2.0/24", "::ffff:192.0.2.7", True),
        ("192.0.2.0/24", "", False),
    ],
)
async def test_allow_nets(nets: str, rip: str, ok: bool) -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("allow_nets", nets)]})
    reply = (
        await make_chain(passdb).authenticate(make_request("alice", "secret", remote_ip=rip))
    ).reply
    assert (reply.status is AuthStatus.OK) is ok
    assert "allow_nets" not in reply.fields


async def test_allow_real_nets_uses_the_socket_address() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("allow_real_nets", "127.0.0.0/8")]})
    request = make_request("alice", "secret", remote_ip="127.0.0.1", real_remote_ip="192.0.2.99")
    assert (await make_chain(passdb).authenticate(request)).reply.status is AuthStatus.FAIL


async def test_delay_until() -> None:
    soon = int(time.time()) + 30
    passdb = FakePassdb({"alice": [("password", "secret"), ("delay_until", str(soon))]})
    result = await make_chain(passdb).authenticate(make_request("alice", "secret"))
    assert result.reply.status is AuthStatus.OK
    assert result.delay_until is not None
    assert soon - 1 <= result.delay_until <= soon + 1
    assert "delay_until" not in result.reply.fields

    far = int(time.time()) + 400
    passdb = FakePassdb({"alice": [("password", "secret"), ("delay_until", f"{far}")]})
    result = await make_chain(passdb).authenticate(make_request("alice", "secret"))
    assert result.reply.status is AuthStatus.FAIL

    past = FakePassdb({"alice": [("password", "secret"), ("delay_until", "1000+5")]})
    result = await make_chain(past).authenticate(make_request("alice", "secret"))
    assert result.reply.status is AuthStatus.OK
    assert result.delay_until is None

    bad = FakePassdb({"alice": [("password", "secret"), ("delay_until", "soon")]})
    assert (await make_chain(bad).authenticate(make_request("alice", "secret"))).reply.status is (
        AuthStatus.FAIL
    )


# -- lookups, verifying passdbs ----------------------------------------------------------------------


async def test_lookup_checks_no_password() -> None:
    passdb = FakePassdb({"alice": [("password", "secret"), ("host", "h")]})
    reply = (await make_chain(passdb).lookup(make_request("alice"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"host": "h"}
    missing = (await make_chain(passdb).lookup(make_request("bob"))).reply
    assert missing.status is AuthStatus.FAIL


async def test_authenticate_without_password_fails() -> None:
    passdb = FakePassdb({"alice": [("nopassword", "")]})
    reply = (await make_chain(passdb).authenticate(make_request("alice"))).reply
    assert reply.status is AuthStatus.FAIL
    assert passdb.calls == []


async def test_verifying_passdb_checks_the_password_itself() -> None:
    passdb = FakeVerifyingPassdb({"alice": [("host", "h")]}, {"alice": "secret"})
    chain = make_chain(passdb)
    reply = (await chain.authenticate(make_request("alice", "secret"))).reply
    assert reply.status is AuthStatus.OK
    assert reply.fields == {"host": "h"}
    assert (await chain.authenticate(make_request("alice", "nope"))).reply.status is AuthStatus.FAIL
    assert passdb.verify_calls == ["alice", "alice"]
    assert (await chain.lookup(make_request("alice"))).reply.status is AuthStatus.OK
    assert passdb.calls == ["alice"]


# -- logging ---------------------------------------------------------------------------------------


async def test_verbose_log_lines_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "proxyd.auth")
    passdb = FakePassdb({"alice": [("password", "{PLAIN}s3cr3t-stored")]})
    chain = make_chain((passdb, {"driver": "passwd-file"}), verbose=True, debug=True)
    await chain.authenticate(make_request("alice", "typed-Pa55", remote_ip="1.2.3.4"))
    await chain.authenticate(make_request("nobody", "typed-Pa55", remote_ip="1.2.3.4"))
    messages = [r.getMessage() for r in caplog.records]
    assert "passwd-file(alice,1.2.3.4,<sess1>): Password mismatch" in messages
    assert "passwd-file(nobody,1.2.3.4,<sess1>): unknown user" in messages
    assert all(r.name.startswith("proxyd.auth") for r in caplog.records)
    assert "typed-Pa55" not in caplog.text
    assert "s3cr3t-stored" not in caplog.text


async def test_quiet_without_auth_verbose(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "proxyd.auth")
    chain = make_chain(FakePassdb(ALICE), verbose=False)
    await chain.authenticate(make_request("alice", "wrong"))
    assert caplog.records == []


async def test_named_passdb_in_log_prefix(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxyd.auth")
    chain = make_chain((FakePassdb(ALICE), {"name": "users"}))
    await chain.authenticate(make_request("alice", "wrong", session_id=""))
    assert "users(alice,192.0.2.10): Password mismatch" in [r.getMessage() for r in caplog.records]


# -- configuration checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"result_success": "return-maybe"},
        {"result_failure": "stop"},
        {"result_internalfail": ""},
        {"skip": "sometimes"},
        {"default_fields": "=value"},
        {"override_fields": "ok=1 =x"},
    ],
)
def test_bad_chain_settings_are_config_errors(kw: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        ChainEntry.build(passdb_settings(line=42, **kw), FakePassdb())
    assert str(info.value).startswith("/etc/proxyd/proxyd.conf:42: ")
