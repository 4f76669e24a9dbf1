"""Routing fields for one recipient, as lmtp_proxy_rcpt_parse_fields() reads them."""

from __future__ import annotations

import pytest

from proxyd.protocols.lmtp.address import (
    Address,
    AddressError,
    parse_path,
    split_detail,
    xtext_decode,
    xtext_encode,
)
from proxyd.protocols.lmtp.route import RouteError, is_ourself, parse_route


def test_defaults_take_the_mtas_port() -> None:
    route, user = parse_route({"proxy": "", "host": "127.0.0.2"}, 10024)
    assert route is not None
    assert user is None
    assert (route.host, route.port, route.lmtp, route.ssl, route.timeout) == ("127.0.0.2", 10024, True, False, 125.0)


def test_protocol_sets_the_default_port_unless_port_came_first() -> None:
    route, _ = parse_route({"proxy": "", "host": "127.0.0.2", "protocol": "smtp"}, 24)
    assert route is not None
    assert (route.port, route.lmtp) == (25, False)
    route, _ = parse_route({"proxy": "", "host": "127.0.0.2", "port": "2525", "protocol": "smtp"}, 24)
    assert route is not None
    assert route.port == 2525


def test_tls_destuser_and_timeout() -> None:
    fields = {"proxy": "", "host": "h.test", "hostip": "127.0.0.3", "starttls": "any-cert",
              "destuser": "dave", "proxy_timeout": "7", "proxy_not_trusted": ""}
    route, user = parse_route(fields, 24)
    assert route is not None
    assert user == "dave"
    assert (route.connect_ip, route.ssl, route.starttls, route.verify_cert, route.timeout, route.not_trusted) == (
        "127.0.0.3", True, True, False, 7.0, True)
    assert parse_route({"host": "127.0.0.2", "destuser": ""}, 24) == (None, None)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"proxy": ""}, "host not given"),
        ({"proxy": "", "host": "127.0.0.2", "port": "x"}, "Invalid port number x"),
        ({"proxy": "", "host": "127.0.0.2", "protocol": "imap"}, "Unknown protocol imap"),
        ({"proxy": "", "host": "127.0.0.2", "hostip": "nope"}, "Invalid hostip nope"),
        ({"proxy": "", "host": "127.0.0.2", "proxy_timeout": "1s"}, "Invalid proxy_timeout value 1s"),
    ],
)
def test_refused_fields(fields: dict[str, str], error: str) -> None:
    with pytest.raises(RouteError, match=error):
        parse_route(fields, 24)


def test_loop_to_ourself() -> None:
    route, _ = parse_route({"proxy": "", "host": "127.0.0.1", "port": "24"}, 24)
    assert route is not None
    assert is_ourself(route, "127.0.0.1", 24)
    assert not is_ourself(route, "127.0.0.1", 25)


def test_paths() -> None:
    assert parse_path("<a@b.c> X") == (Address("a", "b.c"), " X")
    assert parse_path("<@r1,@r2:a@b>")[0] == Address("a", "b")
    assert parse_path('<"a b"@c>')[0].encode() == '"a b"@c'
    assert parse_path("<>", allow_null=True)[0].is_null
    with pytest.raises(AddressError, match="Invalid domain"):
        parse_path("<a@-x>")
    assert split_detail(Address("alice+box", "example.org"), "+") == ("alice@example.org", "box", "+")
    assert split_detail(Address("alice", None), "+") == ("alice", "", "")
    assert xtext_decode(xtext_encode("a=b+c d")) == "a=b+c d"


def test_received_header() -> None:
    from proxyd.protocols.lmtp.trace import received_header

    header = received_header(
        helo="mx.test", remote_ip="192.0.2.7", tls="TLSv1.3 with cipher X (256/256 bits)", hostname="proxy.test",
        transaction_id="abc", sender=Address("s", "x.test"), recipients=[Address("a", "b.test")], timestamp=0,
    ).decode()
    assert header.startswith(
        "Received: from mx.test ([192.0.2.7])\r\n\t(using TLSv1.3 with cipher X (256/256 bits))\r\n"
        "\tby proxy.test with LMTPS\r\n\tid abc\r\n\t(envelope-from <s@x.test>)\r\n\tfor <a@b.test>; "
    )
    assert header.endswith("\r\n")


def test_rcpt_forward_param() -> None:
    from proxyd.protocols.lmtp.route import rcpt_forward_param

    # tab-escaped key=value pairs, TAB-joined, xtext ("=" and TAB are +XX)
    assert rcpt_forward_param({"origin": "mx 1", "t": "a\tb"}) == "XRCPTFORWARD=origin+3Dmx+201+09t+3Da+01tb"


def test_original_recipient() -> None:
    from proxyd.protocols.lmtp.address import original_recipient

    rcpt = Address("dave", "example.org")
    assert original_recipient(rcpt, ("ORCPT=rfc822;carol+40example.org",)) == Address("carol", "example.org")
    assert original_recipient(rcpt, ()) == rcpt
    assert original_recipient(rcpt, ("ORCPT=rfc822;+ZZ",)) == rcpt
