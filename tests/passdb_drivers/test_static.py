"""The static passdb driver."""

from __future__ import annotations

import base64
import hashlib

import pytest

from passdb_drivers.static import create
from proxyd.auth.passdb import Passdb, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthStatus
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from tests.auth.fakes import make_chain
from tests.auth.util import make_request

SHA_ABC = "{SHA}" + base64.b64encode(hashlib.sha1(b"abc").digest()).decode()


async def open_static(args: str) -> Passdb:
    async with create(PassdbSettings(driver="static", args=args)) as passdb:
        return passdb


async def test_fields_are_expanded_per_request() -> None:
    passdb = await open_static("proxy=y host=%d.backend port=1143 destuser=%n starttls")
    assert isinstance(passdb, Passdb)
    assert passdb.default_pass_scheme == "PLAIN"
    reply = await passdb.lookup(make_request("bob@example.com", "x"))
    assert reply.result is PassdbResult.OK
    assert list(reply.fields) == [
        ("proxy", "y"),
        ("host", "example.com.backend"),
        ("port", "1143"),
        ("destuser", "bob"),
        ("starttls", ""),
    ]


async def test_password_comes_last_with_its_scheme() -> None:
    passdb = await open_static(f"password={SHA_ABC} host=h")
    reply = await passdb.lookup(make_request("u", "x"))
    assert reply.fields[-1] == ("password", SHA_ABC)
    md5crypt = await open_static("password=$1$abc$xyz")
    assert (await md5crypt.lookup(make_request("u", "x"))).fields[-1] == (
        "password",
        "{MD5-CRYPT}$1$abc$xyz",
    )
    assert SHA_ABC not in repr(reply)


@pytest.mark.parametrize(
    ("args", "password", "ok"),
    [
        ("password=secret", "secret", True),
        ("password=secret", "Secret", False),
        (f"password={SHA_ABC}", "abc", True),
        ("password=%u-pw", "alice-pw", True),
        ("nopassword", "anything", True),
        ("nopassword=y proxy=y host=h", "anything", True),
        ("proxy=y host=h", "anything", False),  # neither password nor nopassword
        ("password= proxy", "", True),
    ],
)
async def test_password_check_through_the_chain(args: str, password: str, ok: bool) -> None:
    passdb = await open_static(args)
    reply = (
        await make_chain((passdb, {"driver": "static"})).authenticate(
            make_request("alice", password)
        )
    ).reply
    assert (reply.status is AuthStatus.OK) is ok


async def test_unknown_variable_is_a_tempfail() -> None:
    passdb = await open_static("host=%{nosuch}")
    with pytest.raises(PassdbTempFail, match="Unknown variable"):
        await passdb.lookup(make_request("u", "x"))


def test_empty_key_is_a_config_error() -> None:
    settings = PassdbSettings(driver="static", args="proxy =oops", location=Location("p.conf", 9))
    with pytest.raises(ConfigError, match=r"^p\.conf:9: passdb static: Invalid passdb template"):
        create(settings)


async def test_passdb_variables_see_earlier_passdbs_and_forwarded_fields() -> None:
    """``%{passdb:NAME}`` is what earlier passdbs set, and the ``forward_*`` fields a
    trusted proxy in front sent (Dovecot imports them as extra fields); a passdb's
    own ``forward_*`` value wins and everything travels on to the next hop."""
    first = await open_static("nopassword tenant=acme")
    second = await open_static(
        "nopassword proxy=y host=%{passdb:tenant}.backend destuser=%{passdb:forward_origin}-%n "
        "forward_plan=silver"
    )
    chain = make_chain(
        (first, {"driver": "static", "result_success": "continue"}), (second, {"driver": "static"})
    )
    reply = (
        await chain.authenticate(make_request("bob", "x", forward_fields={"origin": "eu", "plan": "gold"}))
    ).reply
    assert reply.status is AuthStatus.OK
    fields = dict(reply.fields)
    assert fields["host"] == "acme.backend"
    assert fields["destuser"] == "eu-bob"
    assert fields["forward_origin"] == "eu"
    assert fields["forward_plan"] == "silver"


async def test_a_template_without_variables_gives_the_same_fields_to_everyone() -> None:
    passdb = await open_static("proxy=y host=10.0.0.1 nopassword")
    first = await passdb.lookup(make_request("alice"))
    second = await passdb.lookup(make_request("bob@example.org", remote_ip="192.0.2.99"))
    assert first == second
    assert first.fields == (("proxy", "y"), ("host", "10.0.0.1"), ("nopassword", ""))
