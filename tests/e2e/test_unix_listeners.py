"""``unix_listener`` of the services proxyd runs: the sockets have exactly the mode and owner set.

proxyd runs as root here, so owners really change; a login through the
``login/login`` auth socket and the ``login/tcpwrap`` access socket shows the
processes still reach them, and ``mode = 0`` leaves a socket out.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import PasswdWriter
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.proxyd import ProxydRunner
from tests.helpers.clients import CLIENT_TIMEOUT

pytestmark = pytest.mark.proxyd_only


def _mode_and_owner(path: Path) -> tuple[int, str, str]:
    info = path.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    return (
        stat.S_IMODE(info.st_mode),
        pwd.getpwuid(info.st_uid).pw_name,
        grp.getgrgid(info.st_gid).gr_name,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="socket owners change only as root")
def test_sockets_get_the_configured_mode_and_owner(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    config = proxyd.config(passwd_file(()), login_access_sockets="tcpwrap")
    config.extra = (
        "service auth {\n  unix_listener login/login {\n    mode = 0660\n"
        "    user = dovenull\n    group = dovenull\n  }\n"
        "  unix_listener auth-userdb {\n    mode = 0600\n  }\n}\n"
        "service tcpwrap {\n  unix_listener login/tcpwrap {\n    mode = 0640\n"
        "    group = mail\n  }\n}\n"
    )
    running = proxyd.start(config)
    # a login first: the TCP listeners accept before the master has set up the UNIX sockets
    with imaplib.IMAP4(running.address(), running.port(), timeout=CLIENT_TIMEOUT) as imap:
        imap.login("alice", "alicepw")
        imap.logout()
    login_dir = Path(str(config.settings["base_dir"])) / "login"
    assert _mode_and_owner(login_dir / "login") == (0o660, "dovenull", "dovenull")
    # user = $default_login_user by default (Dovecot's), the group set here
    assert _mode_and_owner(login_dir / "tcpwrap") == (0o640, "dovenull", "mail")
    # a socket of Dovecot's auth service that proxyd does not create
    assert not (Path(str(config.settings["base_dir"])) / "auth-userdb").exists()


def test_default_modes_are_dovecots(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    config = proxyd.config(passwd_file(()), login_access_sockets="tcpwrap")
    running = proxyd.start(config)
    with imaplib.IMAP4(running.address(), running.port(), timeout=CLIENT_TIMEOUT) as imap:
        imap.login("alice", "alicepw")
        imap.logout()
    login_dir = Path(str(config.settings["base_dir"])) / "login"
    assert _mode_and_owner(login_dir / "login")[0] == 0o666
    mode, user, _ = _mode_and_owner(login_dir / "tcpwrap")
    assert mode == 0o600
    if os.geteuid() == 0:
        assert user == "dovenull"


def test_mode_zero_leaves_the_socket_out(
    proxyd: ProxydRunner, passwd_file: PasswdWriter, backend_a: DovecotBackend
) -> None:
    config = proxyd.config(passwd_file(()), login_access_sockets="tcpwrap")
    config.extra = "service tcpwrap {\n  unix_listener login/tcpwrap {\n    mode = 0\n  }\n}\n"
    running = proxyd.start(config)
    login_dir = Path(str(config.settings["base_dir"])) / "login"
    assert not (login_dir / "tcpwrap").exists()
    # the login process asks it anyway (login_access_sockets) and turns the client away
    with (
        pytest.raises((EOFError, ConnectionError, imaplib.IMAP4.abort, OSError)),
        imaplib.IMAP4(running.address(), running.port(), timeout=CLIENT_TIMEOUT) as imap,
    ):
        imap.noop()
    running.wait_for_log(r"connect\(tcpwrap\) failed")
