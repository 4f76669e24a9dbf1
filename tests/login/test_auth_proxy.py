"""The auth process's proxy decisions (proxyd.auth.proxy): proxy_maybe, host names, hostip.

Dovecot's ``auth_request_proxy_finish()`` is the reference; the resolver is a
fake so that no test depends on DNS.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from proxyd.auth.proxy import ProxyFinisher, split_master_user
from proxyd.auth.request import AuthReply, AuthStatus, FailCode
from proxyd.config.settings import HostList, LocalBackend, Settings
from tests.auth.util import make_request

NAMES = {
    "self.example": ["10.9.9.9", "127.0.0.1"],  # one of its addresses is ours
    "other.example": ["192.0.2.50", "192.0.2.51"],
    "local.example": ["127.0.0.44"],
}


class FakeDns:
    def __init__(self, names: dict[str, list[str]] | None = None, *, hang: bool = False) -> None:
        self.names = NAMES if names is None else names
        self.asked: list[str] = []
        self.hang = hang

    async def __call__(self, name: str) -> Sequence[str]:
        self.asked.append(name)
        if self.hang:
            await trio.sleep_forever()
        if name not in self.names:
            raise OSError(-2, "Name or service not known")
        await trio.lowlevel.checkpoint()
        return self.names[name]


def ok(**fields: str) -> AuthReply:
    return AuthReply(status=AuthStatus.OK, user="alice", fields=fields)


async def finish(finisher: ProxyFinisher, reply: AuthReply, **conn: object) -> AuthReply:
    return await finisher.finish(make_request("alice", "typed-pw", **conn), reply)


# -- proxy_maybe with an IP ---------------------------------------------------------------


async def test_proxy_maybe_to_another_host_becomes_proxy() -> None:
    reply = await finish(ProxyFinisher(), ok(proxy_maybe="y", host="192.0.2.5"))
    assert reply.fields == {"proxy": "", "host": "192.0.2.5", "pass": "typed-pw"}


async def test_proxy_maybe_to_our_real_local_ip_without_local_backend_is_no_proxy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply = await finish(
        ProxyFinisher(), ok(proxy_maybe="y", host="127.0.0.1", destuser="x", port="143")
    )
    assert reply.status is AuthStatus.OK
    assert reply.fields == {}
    assert "proxyd_local_backend is not set" in caplog.text


async def test_proxy_maybe_self_goes_to_the_local_backend() -> None:
    finisher = ProxyFinisher(local_backend=LocalBackend("127.0.0.44", 10143))
    reply = await finish(finisher, ok(proxy_maybe="y", host="127.0.0.1", destuser="bob", ssl="yes"))
    # destuser is dropped (a local login is the user's own); other fields stay
    assert reply.fields == {
        "proxy": "",
        "host": "127.0.0.44",
        "port": "10143",
        "ssl": "yes",
        "pass": "typed-pw",
    }


async def test_local_backend_given_by_name_is_resolved() -> None:
    dns = FakeDns()
    finisher = ProxyFinisher(local_backend=LocalBackend("local.example", 143), resolver=dns)
    reply = await finish(finisher, ok(proxy_maybe="y", host="127.0.0.1"))
    assert reply.fields["hostip"] == "127.0.0.44"
    assert reply.fields["host"] == "local.example"


async def test_the_forwarded_local_ip_does_not_count_as_self() -> None:
    # Dovecot compares with real_lip: a trusted proxy in front forwarding its own lip changes nothing
    reply = await finish(
        ProxyFinisher(),
        ok(proxy_maybe="y", host="198.51.100.1"),
        local_ip="198.51.100.1",
        real_local_ip="127.0.0.1",
    )
    assert "proxy" in reply.fields


async def test_auth_proxy_self_addresses_count_as_self() -> None:
    finisher = ProxyFinisher(
        self_ips=frozenset({"10.1.1.1"}), local_backend=LocalBackend("127.0.0.44", 143)
    )
    reply = await finish(finisher, ok(proxy_maybe="y", host="10.1.1.1"))
    assert reply.fields["host"] == "127.0.0.44"


@pytest.mark.parametrize(("port", "is_self"), [("", True), ("143", True), ("993", False)])
async def test_port_is_compared_only_when_given(port: str, is_self: bool) -> None:
    finisher = ProxyFinisher(local_backend=LocalBackend("127.0.0.44", 10143))
    fields = {"proxy_maybe": "y", "host": "127.0.0.1"} | ({"port": port} if port else {})
    reply = await finish(finisher, ok(**fields), local_port=143)
    assert (reply.fields["host"] == "127.0.0.44") is is_self
    assert "proxy" in reply.fields


async def test_proxy_always_self_keeps_a_bare_proxy() -> None:
    finisher = ProxyFinisher(local_backend=LocalBackend("127.0.0.44", 10143))
    reply = await finish(
        finisher, ok(proxy_maybe="y", proxy_always="y", host="127.0.0.1", port="143")
    )
    assert reply.fields == {"proxy": "", "pass": "typed-pw"}


async def test_proxy_always_not_self_is_an_ordinary_proxy() -> None:
    reply = await finish(ProxyFinisher(), ok(proxy_maybe="y", proxy_always="y", host="192.0.2.5"))
    assert reply.fields == {
        "proxy": "",
        "proxy_always": "y",
        "host": "192.0.2.5",
        "pass": "typed-pw",
    }


async def test_plain_proxy_to_ourself_is_left_to_the_login_process() -> None:
    reply = await finish(ProxyFinisher(), ok(proxy="", host="127.0.0.1", port="143"))
    assert reply.fields == {"proxy": "", "host": "127.0.0.1", "port": "143", "pass": "typed-pw"}


async def test_no_host_is_the_director_case() -> None:
    reply = await finish(ProxyFinisher(), ok(proxy_maybe="y"), local_ip="127.0.0.1", local_port=993)
    assert reply.fields == {"proxy": "", "lip": "127.0.0.1", "lport": "993", "pass": "typed-pw"}


async def test_a_passdb_pass_is_kept() -> None:
    reply = await finish(
        ProxyFinisher(), ok(proxy_maybe="y", host="192.0.2.5", **{"pass": "master-pw"})
    )
    assert reply.fields["pass"] == "master-pw"


async def test_no_pass_without_a_client_password() -> None:
    # a lookup (proxyctl auth test USER) has no password to forward
    reply = await ProxyFinisher().finish(
        make_request("alice"), ok(proxy_maybe="y", host="192.0.2.5")
    )
    assert reply.fields == {"proxy": "", "host": "192.0.2.5"}


async def test_non_proxy_and_failed_replies_are_untouched() -> None:
    plain = ok(host="192.0.2.5")
    assert await finish(ProxyFinisher(), plain) is plain
    failed = AuthReply(status=AuthStatus.FAIL, user="alice", fields={"proxy": ""})
    assert await finish(ProxyFinisher(), failed) is failed


# -- host names ------------------------------------------------------------------------------


async def test_host_name_gets_hostip_from_dns() -> None:
    dns = FakeDns()
    reply = await finish(ProxyFinisher(resolver=dns), ok(proxy="", host="other.example"))
    assert dns.asked == ["other.example"]
    assert reply.fields["hostip"] == "192.0.2.50"
    assert reply.fields["host"] == "other.example"


async def test_proxy_maybe_is_self_when_any_address_is_ours() -> None:
    finisher = ProxyFinisher(resolver=FakeDns(), local_backend=LocalBackend("127.0.0.44", 1143))
    reply = await finish(finisher, ok(proxy_maybe="y", host="self.example"))
    assert reply.fields["host"] == "127.0.0.44"
    assert "hostip" not in reply.fields


async def test_given_hostip_skips_dns() -> None:
    dns = FakeDns()
    reply = await finish(
        ProxyFinisher(resolver=dns), ok(proxy="", host="mail.example", hostip="192.0.2.9")
    )
    assert dns.asked == []
    assert reply.fields["hostip"] == "192.0.2.9"


async def test_invalid_hostip_fails_the_login(caplog: pytest.LogCaptureFixture) -> None:
    reply = await finish(ProxyFinisher(), ok(proxy="", host="mail.example", hostip="nonsense"))
    assert reply.status is AuthStatus.FAIL
    assert "Invalid hostip in passdb: nonsense" in caplog.text


async def test_dns_failure_is_a_temporary_failure(caplog: pytest.LogCaptureFixture) -> None:
    reply = await finish(ProxyFinisher(resolver=FakeDns()), ok(proxy="", host="nxdomain.example"))
    assert reply.status is AuthStatus.TEMPFAIL
    assert reply.fail_code is FailCode.TEMP_FAIL
    assert "proxy" not in reply.fields
    assert "DNS lookup for nxdomain.example failed" in caplog.text


@pytest.mark.parametrize(("proxy_timeout", "limit"), [("", 10.0), ("3", 3.0), ("2s", 10.0)])
async def test_dns_timeout_is_10s_or_plain_proxy_timeout(
    autojump_clock: trio.testing.MockClock, proxy_timeout: str, limit: float
) -> None:
    fields = {"proxy": "", "host": "slow.example"} | (
        {"proxy_timeout": proxy_timeout} if proxy_timeout else {}
    )
    start = trio.current_time()
    reply = await finish(ProxyFinisher(resolver=FakeDns(hang=True)), ok(**fields))
    assert reply.status is AuthStatus.TEMPFAIL
    assert trio.current_time() - start == pytest.approx(limit)


async def test_real_resolver_reads_etc_hosts() -> None:
    reply = await finish(ProxyFinisher(), ok(proxy="", host="localhost"))
    assert reply.fields["hostip"] == "127.0.0.1"


def test_from_settings() -> None:
    settings = Settings(
        auth_proxy_self=HostList("a", ("10.0.0.1", "10.0.0.2")),
        proxyd_local_backend=LocalBackend("127.0.0.9", 143),
    )
    finisher = ProxyFinisher.from_settings(settings)
    assert finisher.self_ips == {"10.0.0.1", "10.0.0.2"}
    assert finisher.local_backend == LocalBackend("127.0.0.9", 143)


# -- auth_master_user_separator ------------------------------------------------------------------


def test_split_master_user() -> None:
    request = make_request("bob*admin", "pw")
    split = split_master_user(request, "*")
    assert (split.user, split.login_user) == ("admin", "bob")
    assert split_master_user(request, "") is request
    assert split_master_user(make_request("bob", "pw"), "*").user == "bob"
