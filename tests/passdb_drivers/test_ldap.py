"""The ldap passdb on a real OpenLDAP slapd: search, auth_bind, escaping, outages, the cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trustme

import passdb_drivers.ldap as ldap_driver
import passdb_drivers.ldap.config as ldap_config
from proxyd.auth.passdb import PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus, FailCode
from proxyd.errors import ConfigError
from proxyd.secret import Secret
from tests.auth.util import make_request
from tests.fixtures.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SlapdFactory, SlapdServer
from tests.fixtures.tls import TlsFiles, issue_tls_files
from tests.passdb_drivers.util import DEAD_ADDRESS, authenticator, passdb, write_args

# Dovecot 2.3 syntax, as in its documentation's proxy examples
PASS_ATTRS = (
    "uid=user, userPassword=password, =proxy=y, =host=%{ldap:proxyMailHost}, proxyMailPort=port"
)


def conf(
    tmp_path: Path, server: SlapdServer | str, *extra: str, dnpass: str = SERVICE_PASSWORD
) -> Path:
    uris = server.uri if isinstance(server, SlapdServer) else server
    lines = [
        f"uris = {uris}",
        f"dn = {SERVICE_DN}",
        f"dnpass = {dnpass}",
        f"base = {PEOPLE}",
        "scope = subtree",
        "deref = never",
        "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))",
        f"pass_attrs = {PASS_ATTRS}",
        "default_pass_scheme = SSHA",
        *extra,
    ]
    return write_args(tmp_path, "\n".join(lines) + "\n", stem="dovecot-ldap")


@pytest.fixture(scope="module")
def people(slapd: SlapdServer) -> dict[str, str]:
    """Users of these tests: uid -> password."""
    users = {"l_alice": "alicepw", "l_bob": "bobpw", "l_multi1": "m", "l_multi2": "m"}
    slapd.add_user("l_alice", users["l_alice"], host="127.0.0.2", port=1143)
    slapd.add_user("l_bob", users["l_bob"])
    slapd.add_user("l_multi1", "m", mail="shared@example.test")
    slapd.add_user("l_multi2", "m", mail="shared@example.test")
    return users


async def test_search_returns_password_and_templated_fields(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str]
) -> None:
    async with authenticator([passdb("ldap", conf(tmp_path, slapd))]) as auth:
        alice = await auth.authenticate(make_request("l_alice", "alicepw"))
        assert alice.status is AuthStatus.OK
        assert alice.fields == {"proxy": "", "host": "127.0.0.2", "port": "1143", "pass": "alicepw"}
        assert (await auth.authenticate(make_request("l_alice", "bobpw"))).status is AuthStatus.FAIL
        assert (await auth.authenticate(make_request("l_nobody", "x"))).status is AuthStatus.FAIL
    async with ldap_driver.create(passdb("ldap", conf(tmp_path, slapd))) as db:
        bob = await db.lookup(make_request("l_bob"))
    # no proxyMailHost: the template gives an empty host; no proxyMailPort: no port field
    fields = dict(bob.fields)
    assert fields.pop("password").startswith("{SSHA}")
    assert fields == {"user": "l_bob", "proxy": "y", "host": ""}


@pytest.mark.parametrize(
    "user", ["*", "l_a*", "l_alice)(uid=*", "*)(|(uid=*", "l_alice\\", "(uid=l_bob)"]
)
async def test_filter_injection_attempts_find_nothing(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str], user: str
) -> None:
    async with ldap_driver.create(passdb("ldap", conf(tmp_path, slapd))) as db:
        assert (await db.lookup(make_request(user))).result is PassdbResult.USER_UNKNOWN


async def test_several_entries_are_a_temporary_failure(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str]
) -> None:
    path = conf(tmp_path, slapd, "pass_filter = (&(uid=l_multi*)(mail=%u))")
    async with ldap_driver.create(passdb("ldap", path)) as db:
        with pytest.raises(PassdbTempFail, match="pass_filter matched multiple objects"):
            await db.lookup(make_request("shared@example.test"))


async def test_auth_bind(tmp_path: Path, slapd: SlapdServer, people: dict[str, str]) -> None:
    """The password is checked by binding as the entry found; pass_attrs still give fields."""
    path = conf(tmp_path, slapd, "auth_bind = yes")
    async with ldap_driver.create(passdb("ldap", path)) as db:
        assert isinstance(db, ldap_driver.LdapBindPassdb)
        ok = await db.verify_plain(make_request("l_alice"), Secret("alicepw"))
        assert ok.result is PassdbResult.OK
        assert dict(ok.fields) == {
            "user": "l_alice",
            "proxy": "y",
            "host": "127.0.0.2",
            "port": "1143",
        }
        bad = await db.verify_plain(make_request("l_alice"), Secret("wrong"))
        assert bad.result is PassdbResult.PASSWORD_MISMATCH
        # an empty password would be an anonymous bind, which succeeds
        empty = await db.verify_plain(make_request("l_alice"), Secret(""))
        assert empty.result is PassdbResult.PASSWORD_MISMATCH
        unknown = await db.verify_plain(make_request("l_nobody"), Secret("x"))
        assert unknown.result is PassdbResult.USER_UNKNOWN
        looked_up = await db.lookup(make_request("l_alice"))
        assert "password" not in dict(looked_up.fields)
    async with authenticator([passdb("ldap", path)]) as auth:
        reply = await auth.authenticate(make_request("l_alice", "alicepw"))
        assert reply.status is AuthStatus.OK
        assert reply.fields["host"] == "127.0.0.2"


async def test_auth_bind_userdn_binds_without_search(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str]
) -> None:
    path = conf(tmp_path, slapd, "auth_bind = yes", f"auth_bind_userdn = uid=%u,{PEOPLE}")
    async with ldap_driver.create(passdb("ldap", path)) as db:
        assert (
            await db.verify_plain(make_request("l_bob"), Secret("bobpw"))
        ).result is PassdbResult.OK
        assert (
            await db.verify_plain(make_request("l_bob"), Secret("nope"))
        ).result is PassdbResult.PASSWORD_MISMATCH
        # a DN-changing user name is escaped: it names no entry
        hostile = await db.verify_plain(make_request(f"x,{PEOPLE}"), Secret("bobpw"))
        assert hostile.result is PassdbResult.PASSWORD_MISMATCH


async def test_wrong_service_password_is_a_temporary_failure(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str]
) -> None:
    async with authenticator([passdb("ldap", conf(tmp_path, slapd, dnpass="wrong"))]) as auth:
        reply = await auth.authenticate(make_request("l_alice", "alicepw"))
    assert (reply.status, reply.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)


async def test_failover_to_the_second_uri(
    tmp_path: Path, slapd: SlapdServer, people: dict[str, str]
) -> None:
    uris = f"ldap://{DEAD_ADDRESS}:{slapd.port} {slapd.uri}"
    async with authenticator([passdb("ldap", conf(tmp_path, uris))]) as auth:
        for _ in range(2):
            assert (
                await auth.authenticate(make_request("l_alice", "alicepw"))
            ).status is AuthStatus.OK


@pytest.fixture
def private_slapd(slapd_factory: SlapdFactory) -> SlapdServer:
    server = slapd_factory.create()
    server.add_user("l_carol", "carolpw", host="10.3.3.3")
    return server


async def test_server_down_then_back(tmp_path: Path, private_slapd: SlapdServer) -> None:
    """Spec: LDAP down gives the temporary failure at once; it works again without a restart."""
    server = private_slapd
    async with authenticator([passdb("ldap", conf(tmp_path, server))]) as auth:
        assert (await auth.authenticate(make_request("l_carol", "carolpw"))).status is AuthStatus.OK
        server.stop()
        started = time.monotonic()
        down = await auth.authenticate(make_request("l_carol", "carolpw"))
        assert (down.status, down.fail_code) == (AuthStatus.TEMPFAIL, FailCode.TEMP_FAIL)
        assert time.monotonic() - started < 2
        server.start()
        await trio.sleep(1.1)  # the failed server is skipped for a second
        assert (await auth.authenticate(make_request("l_carol", "carolpw"))).status is AuthStatus.OK


async def test_hanging_server_is_cut_by_the_timeouts(
    tmp_path: Path, private_slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ldap_config, "CONNECT_TIMEOUT", 1)
    monkeypatch.setattr(ldap_config, "RECEIVE_TIMEOUT", 1)
    server = private_slapd
    async with authenticator([passdb("ldap", conf(tmp_path, server))]) as auth:
        assert (await auth.authenticate(make_request("l_carol", "carolpw"))).status is AuthStatus.OK
        server.pause()
        try:
            started = time.monotonic()
            reply = await auth.authenticate(make_request("l_carol", "carolpw"))
            elapsed = time.monotonic() - started
        finally:
            server.resume()
    assert reply.status is AuthStatus.TEMPFAIL
    assert elapsed < 6


async def test_cached_auth_bind_logins_survive_an_outage(
    tmp_path: Path, private_slapd: SlapdServer
) -> None:
    """auth_cache: the password that bound is kept (hashed) and works while the server is down.

    Another password asks the server (it may have changed); with the server down that falls
    back to the cached entry, whose last check now failed: a mismatch, as in Dovecot.
    """
    server = private_slapd
    path = conf(tmp_path, server, "auth_bind = yes")
    async with authenticator([passdb("ldap", path)], auth_cache_size=1 << 20) as auth:
        assert (await auth.authenticate(make_request("l_carol", "carolpw"))).status is AuthStatus.OK
        server.replace(f"uid=l_carol,{PEOPLE}", "proxyMailHost", "10.4.4.4")
        server.stop()
        cached = await auth.authenticate(make_request("l_carol", "carolpw"))
        assert cached.status is AuthStatus.OK
        assert cached.fields["host"] == "10.3.3.3"  # the row changed, the cache did not
        other = await auth.authenticate(make_request("l_carol", "maybe-new"))
        assert (other.status, other.fail_code) == (AuthStatus.FAIL, FailCode.AUTH_FAILED)
        server.start()
        await trio.sleep(1.1)
        assert (await auth.authenticate(make_request("l_carol", "carolpw"))).status is AuthStatus.OK


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sasl_bind = yes", "setting 'sasl_bind = yes' is not supported yet"),
        ("pass_attrs = @mail=uid", "DN sub-lookups (@field) are not supported yet"),
        ("scope = sideways", "LDAP: Unknown scope option 'sideways'"),
        ("bogus = 1", "Unknown setting: bogus"),
        ("ldap_version = 2", "ldap_version 2 is not supported (only 3)"),
    ],
)
def test_configuration_errors(tmp_path: Path, line: str, message: str) -> None:
    path = conf(tmp_path, "ldap://127.0.0.1:389", line)
    with pytest.raises(ConfigError) as info:
        ldap_driver.create(passdb("ldap", path))
    assert str(info.value).endswith(message)
    assert str(info.value).startswith(str(path))


def test_defaults_and_hosts(tmp_path: Path) -> None:
    path = write_args(tmp_path, "hosts = ldap1 ldap2:3389\nbase = dc=x\n", stem="dovecot-ldap")
    config = ldap_driver.read_ldap_config(passdb("ldap", path))
    assert config.servers == ((False, "ldap1", 389), (False, "ldap2", 3389))
    assert config.pass_filter == "(&(objectClass=posixAccount)(uid=%u))"
    assert [(f.ldap_attr, f.name) for f in config.fields] == [
        ("uid", "user"),
        ("userPassword", "password"),
    ]
    assert config.default_pass_scheme == "CRYPT"
    missing_base = write_args(tmp_path, "hosts = ldap1\n", stem="dovecot-ldap")
    with pytest.raises(ConfigError, match="No base given"):
        ldap_driver.read_ldap_config(passdb("ldap", missing_base))


def test_attrs_syntax() -> None:
    fields, attributes = ldap_driver.parse_attrs(
        "uid=user, userPassword=password, =proxy=y, mailHost=host=imap-, !uidNumber, "
        "cn, =reason=%{ldap:description:no reason} for %{ldap:uidNumber}"
    )
    assert [(f.ldap_attr, f.name, f.template) for f in fields] == [
        ("uid", "user", None),
        ("userPassword", "password", None),
        ("", "proxy", "y%$"),
        ("mailHost", "host", "imap-%$"),
        ("uidNumber", "", None),
        ("cn", "cn", None),
        ("", "reason", "%{ldap:description:no reason} for %{ldap:uidNumber}"),
    ]
    assert attributes == ("uid", "userPassword", "mailHost", "uidNumber", "cn", "description")


@pytest.fixture(scope="module")
def tls_slapd(
    slapd_factory: SlapdFactory, tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SlapdServer, TlsFiles]:
    """A slapd with a certificate for 127.0.0.1 from the session's CA."""
    files = issue_tls_files(tls_ca, tmp_path_factory.mktemp("slapd-tls"), "127.0.0.1")
    server = slapd_factory.create(tls=files)
    server.add_user("l_tls", "tlspw", host="10.6.6.6")
    return server, files


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
async def test_tls_with_a_verified_certificate(
    tmp_path: Path, tls_slapd: tuple[SlapdServer, TlsFiles], mode: str
) -> None:
    server, files = tls_slapd
    uri = server.uri if mode == "starttls" else server.ldaps_uri
    extra = ["tls = yes"] if mode == "starttls" else []
    path = conf(
        tmp_path, uri, *extra, f"tls_ca_cert_file = {files.ca_pem}", "tls_require_cert = demand"
    )
    async with authenticator([passdb("ldap", path)]) as auth:
        reply = await auth.authenticate(make_request("l_tls", "tlspw"))
    assert reply.status is AuthStatus.OK
    assert reply.fields["host"] == "10.6.6.6"
    # auth_bind binds over TLS too
    bind = conf(tmp_path, uri, *extra, "auth_bind = yes", f"tls_ca_cert_file = {files.ca_pem}")
    async with authenticator([passdb("ldap", bind)]) as auth:
        assert (await auth.authenticate(make_request("l_tls", "tlspw"))).status is AuthStatus.OK


async def test_tls_with_an_unknown_ca_is_a_temporary_failure(
    tmp_path: Path, tls_slapd: tuple[SlapdServer, TlsFiles]
) -> None:
    server, _ = tls_slapd
    other_ca = trustme.CA()
    ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(ca_file))
    path = conf(tmp_path, server.uri, "tls = yes", f"tls_ca_cert_file = {ca_file}")
    async with authenticator([passdb("ldap", path)]) as auth:
        reply = await auth.authenticate(make_request("l_tls", "tlspw"))
    assert reply.status is AuthStatus.TEMPFAIL
