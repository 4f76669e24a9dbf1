"""hosts_access(): the verdicts, unit by unit and against the real libwrap."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyd.access.match import Decision, Endpoint, Request, hosts_access
from proxyd.access.tables import Table, parse_table
from tests.access import libwrap

CLIENT = Endpoint(addr="192.0.2.10")


def decide(
    allow: bytes | None,
    deny: bytes | None = None,
    *,
    daemon: str = "imap",
    client: Endpoint = CLIENT,
    server: Endpoint | None = None,
    files: dict[str, bytes] | None = None,
) -> Decision:
    def table(data: bytes | None, path: str) -> Table:
        return Table(path) if data is None else parse_table(data, path)

    request = Request(daemon=daemon, client=client, server=server or Endpoint())
    return hosts_access(
        request,
        table(allow, "hosts.allow"),
        table(deny, "hosts.deny"),
        read_hostfile=lambda path: (files or {}).get(path),
    )


def allowed(*args: bytes | None, **kwargs: object) -> bool:
    return decide(*args, **kwargs).allowed  # type: ignore[arg-type]


# --- the order of the two files --------------------------------------------------------


def test_no_files_allow_everyone():
    assert allowed(None, None)
    assert decide(None, None).reason == "no rule matched: allowed"


def test_allow_first_then_deny_then_default_allow():
    deny_all = b"ALL: ALL\n"
    assert allowed(b"imap: 192.0.2.10\n", deny_all)
    assert not allowed(b"imap: 192.0.2.11\n", deny_all)
    assert allowed(b"pop3: ALL\n", b"pop3: ALL\n")  # neither file speaks about imap
    d = decide(b"", b"imap: 192.0.2.\n")
    assert (d.allowed, d.reason) == (False, "hosts.deny, line 1: refused")


def test_first_matching_rule_wins_within_a_file():
    d = decide(None, b"imap: 10.0.0.1\nimap: 192.0.2.10 : allow\nimap: ALL\n")
    assert (d.allowed, d.reason) == (True, "hosts.deny, line 2: allow option")


def test_broken_allow_file_falls_through_to_deny_and_broken_deny_refuses():
    broken = b"imap: 10.0.0.1\nimap: ALL"  # last line without newline
    assert allowed(broken, None)
    assert not allowed(broken, b"ALL: ALL\n")
    assert not allowed(None, broken)
    # a rule before the broken line still counts
    assert allowed(b"imap: 192.0.2.10\nimap: x", b"ALL: ALL\n")
    assert not allowed(None, b"imap: 192.0.2.10\nimap: x")


# --- patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "addr", "expected"),
    [
        ("ALL", "192.0.2.10", True),
        ("192.0.2.10", "192.0.2.10", True),
        ("192.0.2.1", "192.0.2.10", False),
        ("192.0.2.", "192.0.2.10", True),
        ("192.0.3.", "192.0.2.10", False),
        ("192.0.2.0/255.255.255.0", "192.0.2.10", True),
        ("192.0.2.0/24", "192.0.2.10", True),
        ("192.0.2.0/25", "192.0.2.200", False),
        ("192.0.2.1/24", "192.0.2.10", False),  # the net must be the masked address
        ("0.0.0.0/0", "192.0.2.10", False),  # /0 is not a valid mask length
        ("0.0.0.0/0.0.0.0", "192.0.2.10", True),
        ("192.0.2.10/255.255.255.255", "192.0.2.10", False),  # not a valid mask
        ("192.0.2.*", "192.0.2.10", True),
        ("192.0.2.?", "192.0.2.10", False),
        ("192.0.2.1?", "192.0.2.10", True),
        ("[2001:db8::1]", "2001:db8::1", True),
        ("[2001:DB8:0::1]", "2001:db8::1", True),
        ("2001:db8::1", "2001:db8::1", False),  # unbracketed IPv6 is not an address pattern
        ("[2001:db8::]/32", "2001:db8:ffff::1", True),
        ("[2001:db8::]/33", "2001:db8:8000::1", False),
        ("[2001:db8::]/32", "192.0.2.10", False),
        ("192.0.2.10", "::ffff:192.0.2.10", True),  # IPv4-mapped clients match IPv4 patterns
        ("192.0.2.0/24", "::ffff:192.0.2.10", True),
        ("[::ffff:192.0.2.10]", "::ffff:192.0.2.10", False),
    ],
)
def test_address_patterns(pattern, addr, expected):
    line = f"imap: {pattern}\n".encode()
    assert allowed(line, b"ALL: ALL\n", client=Endpoint(addr=addr)) is expected


def test_names_are_never_looked_up():
    """Every host name is "unknown", as libwrap has it when a lookup fails."""
    deny_all = b"ALL: ALL\n"
    for pattern in ("UNKNOWN", "unknown", "ALL"):
        assert allowed(f"imap: {pattern}\n".encode(), deny_all), pattern
    for pattern in (
        "KNOWN",
        "LOCAL",
        "PARANOID",
        ".example.com",
        "localhost",
        "@trusted",
        "*.example.com",
    ):
        assert not allowed(f"imap: {pattern}\n".encode(), deny_all), pattern
    # user@host: the user is "unknown" too (no IDENT lookups)
    assert allowed(b"imap: ALL@192.0.2.10\n", deny_all)
    assert allowed(b"imap: unknown@ALL\n", deny_all)
    assert not allowed(b"imap: KNOWN@ALL\n", deny_all)
    assert not allowed(b"imap: root@ALL\n", deny_all)


def test_a_resolved_name_would_be_used():
    named = Endpoint(addr="192.0.2.10", name="mail.example.com")
    assert allowed(b"imap: .example.com\n", b"ALL: ALL\n", client=named)
    assert allowed(b"imap: KNOWN\n", b"ALL: ALL\n", client=named)
    assert not allowed(b"imap: LOCAL\n", b"ALL: ALL\n", client=named)
    assert allowed(b"imap: LOCAL\n", b"ALL: ALL\n", client=Endpoint(addr="10.0.0.1", name="gw"))


def test_except_nests_to_the_right():
    deny_all = b"ALL: ALL\n"
    assert not allowed(b"imap: ALL EXCEPT 192.0.2.0/24\n", deny_all)
    assert allowed(b"imap: ALL EXCEPT 192.0.2.0/24 EXCEPT 192.0.2.10\n", deny_all)
    assert allowed(b"ALL EXCEPT pop3: ALL\n", deny_all)
    assert not allowed(b"ALL EXCEPT imap: ALL\n", deny_all)
    assert not allowed(b"imap: EXCEPT ALL\n", deny_all)
    assert allowed(b"imap: 192.0.2.10 except\n", deny_all)  # a trailing EXCEPT excepts nothing


def test_daemon_patterns_case_port_and_server_address():
    deny_all = b"ALL: ALL\n"
    server = Endpoint(addr="198.51.100.1", port=143)
    assert allowed(b"IMAP: ALL\n", deny_all)
    assert allowed(b"im*: ALL\n", deny_all)
    assert allowed(b"143: ALL\n", deny_all, server=server)
    assert not allowed(b"993: ALL\n", deny_all, server=server)
    assert not allowed(b"143: ALL\n", deny_all)  # server port unknown
    assert allowed(b"imap@198.51.100.1: ALL\n", deny_all, server=server)
    assert allowed(b"imap@198.51.100.0/24: ALL\n", deny_all, server=server)
    assert not allowed(b"imap@198.51.100.2: ALL\n", deny_all, server=server)
    assert allowed(b"KNOWN: ALL\n", deny_all)  # a daemon name is known
    assert allowed(b"ALL: ALL : deny\n", None, daemon="pop3") is False


def test_host_files():
    files = {
        "/etc/imap.hosts": b"10.0.0.1\n  192.0.2.0/24 /etc/more\n",
        "/etc/more": b"203.0.113.5",
    }
    deny_all = b"ALL: ALL\n"
    assert allowed(b"imap: /etc/imap.hosts\n", deny_all, files=files)
    assert allowed(
        b"imap: /etc/imap.hosts\n", deny_all, client=Endpoint(addr="203.0.113.5"), files=files
    )
    assert not allowed(b"imap: /etc/missing\n", deny_all, files=files)
    loop = {"/a": b"/b", "/b": b"/a"}
    assert not allowed(b"imap: /a\n", deny_all, files=loop)


# --- options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected", "reason"),
    [
        (b"allow", True, "allow option"),
        (b"ALLOW", True, "allow option"),
        (b"allow=", True, "allow option"),
        (b"deny", False, "deny option"),
        (b"allow : deny", False, 'option "allow" must be at end'),
        (b"allow:", False, 'option "allow" must be at end'),  # the newline is a field
        (b"deny = yes", False, 'option "deny" requires no value'),
        (b"", False, "missing option name"),
        (b"bogus", False, 'bad option name: "bogus"'),
        (b"spawn", False, 'option "spawn" requires value'),
        (b"keepalive 1 : allow", False, 'option "keepalive" requires no value'),
        (b"severity auth.info : allow", True, "allow option"),
        (b"severity warn : allow", False, 'bad syslog facility or severity: "warn"'),
        (b"nice 5 : allow", True, "allow option"),
        (b"nice x : allow", False, 'bad nice value: "x"'),
        (b"rfc931 0 : allow", False, 'bad rfc931 timeout: "0"'),
        (b"umask 022 : allow", True, "allow option"),
        (b"umask 1022 : allow", False, 'bad umask value: "1022"'),
        (b"linger -1 : allow", False, 'bad linger value: "-1"'),
        (b"twist /bin/echo go away", False, "twist option: commands are not run, access refused"),
        (b"aclexec /bin/true", False, "aclexec option: commands are not run, access refused"),
        (b"spawn echo a\\:b : allow", True, "allow option"),
    ],
)
def test_options_in_hosts_deny(options, expected, reason):
    d = decide(None, b"imap: ALL :" + options + b"\n")
    assert (d.allowed, d.reason) == (expected, f"hosts.deny, line 1: {reason}")


def test_spawn_is_reported_not_run():
    d = decide(b"imap: ALL : spawn /bin/touch /tmp/should-not-exist\n")
    assert d.allowed
    assert d.notes == (
        "hosts.allow, line 1: spawn option ignored (commands and banners are not supported)",
    )


# --- against the real libwrap ----------------------------------------------------------

needs_libwrap = pytest.mark.skipif(not libwrap.available(), reason="libwrap.so.0 not installed")


@pytest.fixture(scope="module")
def oracle():
    wrap = libwrap.Libwrap()
    (wrap.directory / "hostfile").write_bytes(b"10.0.0.1\n127.0.0.0/8 [::1]\n")
    yield wrap
    wrap.close()


ADDRESSES = ["127.0.0.1", "10.0.0.1", "192.0.2.10", "::1", "::ffff:127.0.0.1", "2001:db8::5"]


def ours(allow: bytes | None, deny: bytes | None, daemon: str, addr: str) -> bool:
    request = Request(daemon=daemon, client=Endpoint(addr=addr))
    a = Table("a") if allow is None else parse_table(allow, "a")
    d = Table("d") if deny is None else parse_table(deny, "d")
    return hosts_access(request, a, d).allowed


CURATED = [
    b"imap: 127.0.0.1\n",
    b"imap: ALL EXCEPT 127.0.0.0/8 EXCEPT 127.0.0.1\n",
    b"imap pop3: [::1], 10.\n",
    b"imap: 127.0.0.0/8x\n",
    b"imap: [::]/x\n",
    b"imap: 127.0.0.1 : spawn echo\\: hi : allow\n",
    b"imap: ALL:\n",
    b"imap: ALL : allow\r\n",
    b"imap: 127.0.0.1\0\nimap: ALL\n",
    b"imap: \\\n127.0.0.1\\\n\n",
    b"ALL: ALL : severity local3.notice : deny\n",
    b"imap: " + b"y" * 2100 + b"\nimap: ALL\n",
    b"   # x\n#imap: ALL\nimap: 127.0.0.1#\n",
    b"imap: 127.0.0/255.255.0.0\n",
    b"imap: 0x7f.0.0.0/8\n",
    b"imap: 127.0.0.0/0xff.0.0.0\n",
    b"imap: [::1]/64x\n",
]


@needs_libwrap
@pytest.mark.parametrize("text", CURATED)
@pytest.mark.parametrize("addr", ADDRESSES)
def test_curated_tables_agree_with_libwrap(oracle, text, addr):
    for allow, deny in ((text, b"ALL: ALL\n"), (None, text), (text, None)):
        assert ours(allow, deny, "imap", addr) == oracle.allowed(allow, deny, "imap", addr), (
            allow,
            deny,
        )


DAEMONS = [
    "imap",
    "IMAP",
    "pop3",
    "ALL",
    "KNOWN",
    "UNKNOWN",
    "im*",
    "?map",
    "imap@ALL",
    "imap@UNKNOWN",
    "143",
    "EXCEPT",
]
CLIENTS = [
    "ALL",
    "UNKNOWN",
    "KNOWN",
    "LOCAL",
    "PARANOID",
    "127.0.0.1",
    "127.0.0.2",
    "10.0.0.1",
    "127.",
    "10.",
    ".example.com",
    "localhost",
    "127.0.0.0/8",
    "127.0.0.0/255.0.0.0",
    "127.0.0.0/255.255.255.0",
    "10.0.0.0/8",
    "0.0.0.0/0.0.0.0",
    "127.0.0.1/32",
    "[::1]",
    "[::]/0",
    "[::1]/128",
    "[2001:db8::]/32",
    "[::ffff:127.0.0.1]",
    "127.0.0.*",
    "127.0.0.?",
    "*",
    "1*",
    "EXCEPT",
    "ALL@ALL",
    "unknown@127.0.0.1",
    "KNOWN@ALL",
    "@netgroup",
    "/nonexistent",
    "HOSTFILE",
    "2001:db8::5",
    "::ffff:127.0.0.1",
    "127.1/255.0.0.0",
    "127.0.0/255.255.0.0",
    "0x7f.0.0.0/8",
    "127.0.0.0/0xff.0.0.0",
    "127.0.0.0/255..0.0.0",
    "[::1]/64x",
]
OPTIONS = [
    "",
    " allow",
    " deny",
    " ALLOW",
    " allow : deny",
    " deny = x",
    " severity auth.info : allow",
    " severity foo",
    " bogus",
    " ",
    " nice 5 : deny",
    " rfc931 0",
    " rfc931 : allow",
    " keepalive : allow",
    " spawn echo\\: x : deny",
    " linger 3 : deny",
]

_line = st.builds(
    lambda ds, sep, cs, opt, cont: (
        (" ".join(ds) + " :" + sep.join(cs) + (":" + opt if opt else "")).replace(
            "EXCEPT", "EXCEPT\\\n" if cont else "EXCEPT"
        )
        + "\n"
    ),
    st.lists(st.sampled_from(DAEMONS), min_size=1, max_size=3),
    st.sampled_from([" ", ", ", ",", "\t"]),
    st.lists(st.sampled_from(CLIENTS), min_size=1, max_size=4),
    st.sampled_from(OPTIONS),
    st.booleans(),
)
_noise = st.text(alphabet=" \t:#[]\\.,/*?@\n\x00ai1", max_size=20).map(lambda s: s + "\n")
_table = st.one_of(
    st.none(),
    st.lists(
        st.one_of(_line, _line, _line, _noise, st.just("# comment\n"), st.just("\n")), max_size=5
    ).map("".join),
).flatmap(
    lambda t: (
        st.none()
        if t is None
        else st.sampled_from([t, t, t, t.rstrip("\n")]).map(lambda x: x.encode("latin-1"))
    )
)


@needs_libwrap
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    allow=_table,
    deny=_table,
    daemon=st.sampled_from(["imap", "pop3"]),
    addr=st.sampled_from(ADDRESSES),
)
def test_generated_tables_agree_with_libwrap(oracle, allow, deny, daemon, addr):
    hostfile = str(oracle.directory / "hostfile").encode()
    allow = None if allow is None else allow.replace(b"HOSTFILE", hostfile)
    deny = None if deny is None else deny.replace(b"HOSTFILE", hostfile)
    assert ours(allow, deny, daemon, addr) == oracle.allowed(allow, deny, daemon, addr)


def test_oracle_catches_a_wrong_answer(oracle):
    """The oracle is not a mirror of the code under test: it disagrees with a wrong verdict."""
    if not libwrap.available():
        pytest.skip("libwrap.so.0 not installed")
    assert oracle.allowed(b"imap: 127.0.0.1\n", b"ALL: ALL\n", "imap", "127.0.0.1") is True
    assert oracle.allowed(b"imap: 127.0.0.2\n", b"ALL: ALL\n", "imap", "127.0.0.1") is False
