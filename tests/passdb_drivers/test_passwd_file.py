"""The passwd-file passdb driver, with real files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from passdb_drivers.passwd_file import create, parse_args, parse_passwd_file
from proxyd.auth.passdb import Passdb, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus
from proxyd.auth.schemes import hash_password
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from tests.auth.fakes import make_chain
from tests.auth.util import make_request

WHERE = Location("/etc/proxyd/proxyd.conf", 20)


def settings(args: str, config_dir: str = "/etc/proxyd") -> PassdbSettings:
    return PassdbSettings(driver="passwd-file", args=args, location=WHERE, config_dir=config_dir)


async def open_passdb(args: str, config_dir: str = "/etc/proxyd") -> Passdb:
    async with create(settings(args, config_dir)) as passdb:
        return passdb


# -- args -----------------------------------------------------------------------------------------


def test_parse_args() -> None:
    parsed = parse_args(settings("/etc/users"))
    assert (parsed.path, parsed.scheme, parsed.username_format) == ("/etc/users", "CRYPT", "%u")
    parsed = parse_args(settings("scheme=SHA512-CRYPT username_format=%n /etc/my users"))
    assert (parsed.path, parsed.scheme, parsed.username_format) == (
        "/etc/my users",
        "SHA512-CRYPT",
        "%n",
    )
    assert parse_args(settings("users", "/srv/conf")).path == "/srv/conf/users"
    assert parse_args(settings("scheme=plain conf.d/users", "/srv")).path == "/srv/conf.d/users"
    assert parse_args(settings("/etc/passwd.d/%d")).path == "/etc/passwd.d/%d"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("", "Missing args"),
        ("scheme=PLAIN", "Missing args"),
        ("bogus=1 /etc/users", "Unknown setting: bogus"),
        ("scheme=NOPE /etc/users", "Unknown scheme: NOPE"),
    ],
)
def test_bad_args(args: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        create(settings(args))
    assert str(info.value).startswith(f"{WHERE}: passdb passwd-file: {message}")


# -- file format ----------------------------------------------------------------------------------


def test_parse_file_format(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "# comment\n"
        "\n"
        ":no user name\n"
        "alice:{PLAIN}pw:1000:1000:Alice A:/home/alice:/bin/sh:proxy=y host=10.0.0.1 reason=a:b\n"
        "bob:{PLAIN}first\n"
        "bob:{PLAIN}second\n"
        "carol\n"
        "dave:::::::\r\n"
        "erin:5ebe2294ecd0e0f08eab7690d2a6ee69[34]\n"
        "frank:abcdefghijklm[13]\n"
        "old:{PLAIN}x:1:1::/home:/bin/sh::mail=maildir:~/Maildir\n"
    )
    users = parse_passwd_file(text, "/f")
    assert set(users) == {"alice", "bob", "carol", "dave", "erin", "frank", "old"}
    assert users["alice"].password == "{PLAIN}pw"
    assert users["alice"].extra_fields == ("proxy=y", "host=10.0.0.1", "reason=a:b")
    assert users["bob"].password == "{PLAIN}first"
    assert "User bob exists more than once" in caplog.text
    assert users["carol"].password is None
    assert users["dave"].password == ""
    assert users["dave"].extra_fields == ()
    assert users["erin"].password == "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69"
    assert users["frank"].password == "{CRYPT}abcdefghijklm"
    assert users["old"].extra_fields == ()


# -- lookups ----------------------------------------------------------------------------------------


async def test_lookup_and_extra_fields(tmp_path: Path) -> None:
    (tmp_path / "users").write_text(
        "alice:{PLAIN}secret::::::proxy=y host=%d.backend destuser=%n nologin\n"
    )
    passdb = await open_passdb("users", str(tmp_path))
    assert passdb.default_pass_scheme == "CRYPT"
    reply = await passdb.lookup(make_request("alice", "x"))
    assert reply.result is PassdbResult.OK
    assert list(reply.fields) == [
        ("password", "{PLAIN}secret"),
        ("proxy", "y"),
        ("host", ".backend"),
        ("destuser", "alice"),
        ("nologin", ""),
    ]
    assert "secret" not in repr(reply)
    assert (await passdb.lookup(make_request("bob", "x"))).result is PassdbResult.USER_UNKNOWN


async def test_default_scheme_and_chain(tmp_path: Path) -> None:
    crypt = hash_password("pw-a", "SHA512-CRYPT").partition("}")[2]
    plain_md5 = hash_password("pw-b", "PLAIN-MD5").partition("}")[2]
    md5crypt = hash_password("pw-c", "MD5-CRYPT").partition("}")[2]
    (tmp_path / "users").write_text(f"a:{crypt}\nb:{plain_md5}\nc:{md5crypt}\nd:\n")
    chain_crypt = make_chain(
        (await open_passdb(str(tmp_path / "users")), {"driver": "passwd-file"})
    )
    assert (await chain_crypt.authenticate(make_request("a", "pw-a"))).reply.status is AuthStatus.OK
    assert (
        await chain_crypt.authenticate(make_request("a", "pw-b"))
    ).reply.status is AuthStatus.FAIL
    # a bare $1$ hash is MD5-CRYPT whatever the default scheme
    assert (await chain_crypt.authenticate(make_request("c", "pw-c"))).reply.status is AuthStatus.OK
    # an empty password never matches
    assert (await chain_crypt.authenticate(make_request("d", ""))).reply.status is AuthStatus.FAIL
    md5_passdb = await open_passdb(f"scheme=PLAIN-MD5 {tmp_path / 'users'}")
    chain_md5 = make_chain(md5_passdb)
    assert (await chain_md5.authenticate(make_request("b", "pw-b"))).reply.status is AuthStatus.OK


async def test_username_format(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("alice:{PLAIN}pw\n")
    passdb = await open_passdb(f"username_format=%n {tmp_path / 'users'}")
    assert (await passdb.lookup(make_request("alice@example.com"))).result is PassdbResult.OK
    exact = await open_passdb(str(tmp_path / "users"))
    assert (
        await exact.lookup(make_request("alice@example.com"))
    ).result is PassdbResult.USER_UNKNOWN


async def test_file_changes_are_picked_up(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}one\n")
    passdb = await open_passdb(str(users))
    assert (await passdb.lookup(make_request("alice"))).fields[0] == ("password", "{PLAIN}one")
    # atomic replacement (new inode)
    new = tmp_path / "users.new"
    new.write_text("alice:{PLAIN}two\nbob:{PLAIN}b\n")
    os.replace(new, users)
    assert (await passdb.lookup(make_request("alice"))).fields[0] == ("password", "{PLAIN}two")
    assert (await passdb.lookup(make_request("bob"))).result is PassdbResult.OK
    # in-place rewrite with the same size: the mtime tells
    stat = users.stat()
    users.write_text("alice:{PLAIN}six\nbob:{PLAIN}b\n")
    os.utime(users, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (await passdb.lookup(make_request("alice"))).fields[0] == ("password", "{PLAIN}six")


async def test_unchanged_file_is_not_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import passdb_drivers.passwd_file as module

    users = tmp_path / "users"
    users.write_text("alice:{PLAIN}one\n")
    passdb = await open_passdb(str(users))
    loads: list[str] = []
    original = module._load

    def counting_load(path: str):
        loads.append(path)
        return original(path)

    monkeypatch.setattr(module, "_load", counting_load)
    for _ in range(3):
        assert (await passdb.lookup(make_request("alice"))).result is PassdbResult.OK
    assert loads == []


async def test_missing_fixed_file_is_a_tempfail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users"
    passdb = await open_passdb(str(path))  # opening succeeds; the problem is logged
    assert "missing passwd file" in caplog.text
    with pytest.raises(PassdbTempFail, match="missing passwd file"):
        await passdb.lookup(make_request("alice"))
    path.write_text("alice:{PLAIN}pw\n")  # fixed without a restart
    assert (await passdb.lookup(make_request("alice"))).result is PassdbResult.OK
    path.unlink()
    with pytest.raises(PassdbTempFail):
        await passdb.lookup(make_request("alice"))


async def test_missing_file_through_the_chain(tmp_path: Path) -> None:
    passdb = await open_passdb(str(tmp_path / "nope"))
    reply = (await make_chain(passdb).authenticate(make_request("alice", "pw"))).reply
    assert reply.status is AuthStatus.TEMPFAIL


async def test_unreadable_file_is_a_tempfail(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    passdb = await open_passdb(str(tmp_path / "users"))
    with pytest.raises(PassdbTempFail, match="Is a directory"):
        await passdb.lookup(make_request("alice"))


async def test_variable_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "proxyd.auth")
    (tmp_path / "example.com").write_text("alice@example.com:{PLAIN}pw\n")
    (tmp_path / "example.org").write_text("alice@example.org:{PLAIN}other\n")
    passdb = await open_passdb(f"{tmp_path}/%d")
    reply = await passdb.lookup(make_request("alice@example.com"))
    assert reply.fields[0] == ("password", "{PLAIN}pw")
    reply = await passdb.lookup(make_request("alice@example.org"))
    assert reply.fields[0] == ("password", "{PLAIN}other")
    # no such domain file: the user is unknown, as in Dovecot
    assert (
        await passdb.lookup(make_request("alice@example.net"))
    ).result is PassdbResult.USER_UNKNOWN
    # a "/" in the domain cuts the value: "evil/../example.com" reads the file "evil"
    (tmp_path / "example.com").write_text("x@evil/../example.com:{PLAIN}leak\n")
    (tmp_path / "evil").write_text("someone@evil:{PLAIN}pw\n")
    unknown = await passdb.lookup(make_request("x@evil/../example.com"))
    assert unknown.result is PassdbResult.USER_UNKNOWN


async def test_variable_path_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "domains").mkdir()
    (tmp_path / "domains" / "example.com").write_text("bob@example.com:{PLAIN}pw\n")
    passdb = await open_passdb("domains/%d", str(tmp_path))
    assert (await passdb.lookup(make_request("bob@example.com"))).result is PassdbResult.OK


async def test_extra_field_with_unknown_variable(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("alice:{PLAIN}pw::::::host=%{nosuch}\n")
    passdb = await open_passdb(str(tmp_path / "users"))
    with pytest.raises(PassdbTempFail, match="Failed to expand extra field"):
        await passdb.lookup(make_request("alice"))


async def test_nologin_reason_split_at_spaces(tmp_path: Path) -> None:
    """Extra fields are split at spaces: a reason keeps only its first word (spec §11)."""
    (tmp_path / "users").write_text("alice:{PLAIN}pw::::::nologin=y reason=Account disabled\n")
    passdb = await open_passdb(str(tmp_path / "users"))
    reply = (await make_chain(passdb).authenticate(make_request("alice", "pw"))).reply
    assert reply.reason == "Account"
    assert reply.fields["disabled"] == ""
