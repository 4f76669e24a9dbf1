"""login_access_sockets against Dovecot 2.3 itself, in both directions.

* Dovecot's own ``imap-login``/``pop3-login`` ask proxyd's tcpwrap service
  (``login_access_sockets`` pointing at it): a refused client gets no greeting
  and Dovecot logs the refusal.
* proxyd's ``check_access()`` asks Dovecot's own ``tcpwrap`` service (libwrap
  reading hosts.allow/hosts.deny in a chroot without name resolution), and the
  answer must equal proxyd's matcher on the same files and connection.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from proxyd.access.match import Endpoint, Request, hosts_access
from proxyd.access.server import serve_tcpwrap
from proxyd.access.tables import load_table
from proxyd.login.access import check_access
from tests.fixtures.dovecot import DovecotBackend, DovecotFactory

pytestmark = pytest.mark.e2e

ADDRESS = "127.0.0.8"


class ThreadedTcpwrap:
    """proxyd's tcpwrap service in a thread of its own (Dovecot must reach it while it starts)."""

    def __init__(self, path: str, allow: str, deny: str) -> None:
        self._args = (path, allow, deny)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve_tcpwrap, *self._args, mode=0o666))
                self._ready.set()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxyd's tcpwrap service did not start")

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            self._token.run_sync_soon(self._scope.cancel)
        self._thread.join(10)


@dataclass
class Rig:
    dovecot: DovecotBackend
    #: proxyd's service: its rule files
    ours_allow: Path
    ours_deny: Path
    ours_socket: str
    #: Dovecot's tcpwrap: rule files inside its chroot, and its socket
    wrap_allow: Path
    wrap_deny: Path
    wrap_socket: str


def _world_readable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def rig(dovecot_factory: DovecotFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = _world_readable_dir(tmp_path_factory.mktemp("access-dovecot"))
    for parent in base.parents:  # Dovecot's unprivileged processes must reach the socket
        if str(parent).startswith(("/tmp", "/var/tmp")) and parent != Path("/tmp"):
            parent.chmod(parent.stat().st_mode | 0o755)
    ours = _world_readable_dir(base / "ours")
    chroot = _world_readable_dir(base / "wrapchroot")
    etc = _world_readable_dir(chroot / "etc")
    # no name service in there: every host name is "unknown", as in proxyd
    (etc / "nsswitch.conf").write_text("hosts: files\n")
    (etc / "hosts").write_text("")
    for name in ("nsswitch.conf", "hosts"):
        (etc / name).chmod(0o644)
    service = ThreadedTcpwrap(
        str(ours / "proxyd-tcpwrap"), str(ours / "hosts.allow"), str(ours / "hosts.deny")
    )
    service.start()
    extra = f"""
login_access_sockets = {ours}/proxyd-tcpwrap
# unchrooted, so that the absolute socket path above is reachable
service imap-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service tcpwrap {{
  chroot = {chroot}
  unix_listener tcpwrap {{
    mode = 0666
  }}
}}
"""
    try:
        dovecot = dovecot_factory.start("access-ref", ADDRESS, extra_config=extra)
        yield Rig(
            dovecot=dovecot,
            ours_allow=ours / "hosts.allow",
            ours_deny=ours / "hosts.deny",
            ours_socket=str(ours / "proxyd-tcpwrap"),
            wrap_allow=etc / "hosts.allow",
            wrap_deny=etc / "hosts.deny",
            wrap_socket=str(dovecot.root / "run" / "tcpwrap"),
        )
    finally:
        service.stop()


def write_rules(allow_path: Path, deny_path: Path, allow: str | None, deny: str | None) -> None:
    for path, text in ((allow_path, allow), (deny_path, deny)):
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
            path.chmod(0o644)


def greeting(port: int, source: str) -> bytes:
    with socket.create_connection((ADDRESS, port), timeout=10, source_address=(source, 0)) as sock:
        try:
            return sock.recv(200)
        except ConnectionResetError:
            return b""


# --- Dovecot's login processes asking proxyd's service ----------------------------------


@pytest.mark.parametrize(
    ("allow", "deny", "source", "imap_ok", "pop3_ok"),
    [
        (None, None, "127.0.0.60", True, True),
        ("imap: 127.0.0.61\n", "ALL: ALL\n", "127.0.0.61", True, False),
        ("imap: 127.0.0.61\n", "ALL: ALL\n", "127.0.0.62", False, False),
        (None, "pop3: ALL EXCEPT 127.0.0.0/255.255.255.192\n", "127.0.0.63", True, True),
        (None, "pop3: ALL EXCEPT 127.0.0.0/255.255.255.192\n", "127.0.0.64", True, False),
        ("ALL: ALL : deny\n", None, "127.0.0.65", False, False),
        (None, "imap@127.0.0.8: [::1] 127.0.0.66\n", "127.0.0.66", False, True),
    ],
)
def test_dovecot_login_asks_proxyd_service(rig, allow, deny, source, imap_ok, pop3_ok):
    write_rules(rig.ours_allow, rig.ours_deny, allow, deny)
    for port, ok, service in (
        (rig.dovecot.imap_port, imap_ok, "imap-login"),
        (rig.dovecot.pop3_port, pop3_ok, "pop3-login"),
    ):
        answer = greeting(port, source)
        if ok:
            assert answer.startswith((b"* OK", b"+OK")), (
                service,
                answer,
                rig.dovecot.log_text()[-3000:],
            )
        else:
            assert answer == b"", (service, answer)
            rig.dovecot.wait_for_log(
                rf"{service}: Info: access\({re.escape(rig.ours_socket)}\): Client refused "
                rf"\(rip={re.escape(source)}\)"
            )
    write_rules(rig.ours_allow, rig.ours_deny, None, None)


def test_dovecot_login_with_the_port_pattern(rig):
    write_rules(rig.ours_allow, rig.ours_deny, f"{rig.dovecot.imap_port}: ALL\n", "ALL: ALL\n")
    try:
        assert greeting(rig.dovecot.imap_port, "127.0.0.67").startswith(b"* OK")
        assert greeting(rig.dovecot.pop3_port, "127.0.0.67") == b""
    finally:
        write_rules(rig.ours_allow, rig.ours_deny, None, None)


# --- proxyd's check_access() asking Dovecot's tcpwrap -------------------------------------

SOURCES = ["127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.90"]
_ALL = {"71", "72", "73", "90"}
#: (hosts.allow, hosts.deny, last octets of the sources that must be allowed)
RULE_SETS = [
    (None, None, _ALL),
    ("imap: 127.0.0.71\n", "ALL: ALL\n", {"71"}),
    (None, "imap: 127.0.0.0/255.255.255.0 EXCEPT 127.0.0.72\n", {"72"}),
    (None, "ALL: 127.0.0.72/30\n", {"71", "90"}),
    ("imap: UNKNOWN\n", "ALL: ALL\n", _ALL),
    ("imap: KNOWN LOCAL PARANOID localhost .localdomain\n", "ALL: ALL\n", set()),
    ("imap: ALL@127.0.0.73 : allow\n", "ALL: ALL\n", {"73"}),
    (None, "imap: 127.0.0.7* : allow\nALL: ALL\n", {"71", "72", "73"}),
    ("imap@127.0.0.9: ALL\n", "ALL: ALL\n", _ALL),
    ("imap@127.0.0.10: ALL\n", "ALL: ALL\n", set()),
    ("pop3: ALL\n", "ALL EXCEPT imap: ALL\n", _ALL),
    ("imap: ALL : severity warn : allow\n", None, set()),
    ("imap: ALL : severity mail.info : deny\n", None, set()),
    ("imap: 127.0.0.90 : spawn /bin/true : allow\n", "ALL: ALL\n", {"90"}),
    (None, "imap: 127.0.0.71", set()),  # no final newline: hosts.deny is in error
]


async def _judge_with_dovecot(rig: Rig, source: str) -> tuple[bool, bool]:
    """(Dovecot's tcpwrap verdict via check_access(), proxyd's matcher) for one connection."""
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        await listener.bind(("127.0.0.9", 0))
        listener.listen(1)
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with client:
            await client.bind((source, 0))
            await client.connect(listener.getsockname())
            server, _ = await listener.accept()
            with server:
                local = server.getsockname()
                with trio.fail_after(20):
                    theirs = await check_access([rig.wrap_socket], "imap", server.fileno())
                request = Request(
                    daemon="imap",
                    client=Endpoint(addr=source),
                    server=Endpoint(addr=local[0], port=local[1]),
                )
                ours = hosts_access(
                    request, load_table(str(rig.wrap_allow)), load_table(str(rig.wrap_deny))
                )
                return theirs, ours.allowed


@pytest.mark.parametrize(("allow", "deny", "expected"), RULE_SETS)
async def test_check_access_against_dovecot_tcpwrap(rig, allow, deny, expected):
    write_rules(rig.wrap_allow, rig.wrap_deny, allow, deny)
    try:
        verdicts = {source: await _judge_with_dovecot(rig, source) for source in SOURCES}
    finally:
        write_rules(rig.wrap_allow, rig.wrap_deny, None, None)
    for source, (theirs, ours) in verdicts.items():
        assert theirs == ours, (source, theirs, ours, rig.dovecot.log_text()[-2000:])
    assert {
        source.rsplit(".", 1)[1] for source, (theirs, _) in verdicts.items() if theirs
    } == expected


async def test_check_access_port_pattern_against_dovecot_tcpwrap(rig):
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        await listener.bind(("127.0.0.9", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        results = []
        for rule in (f"{port}: ALL\n", f"{port + 1}: ALL\n"):
            write_rules(rig.wrap_allow, rig.wrap_deny, rule, "ALL: ALL\n")
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with client:
                await client.connect(listener.getsockname())
                server, _ = await listener.accept()
                with server, trio.fail_after(20):
                    results.append(await check_access([rig.wrap_socket], "imap", server.fileno()))
    write_rules(rig.wrap_allow, rig.wrap_deny, None, None)
    assert results == [True, False]


def test_rig_sockets_exist(rig):
    assert os.path.exists(rig.wrap_socket)
    assert os.path.exists(rig.ours_socket)
