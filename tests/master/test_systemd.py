"""The systemd unit (``systemd-analyze verify``) and the readiness protocol against a fake
``NOTIFY_SOCKET``: READY=1 once the listeners are served, RELOADING=1/READY=1 around a
SIGHUP, STOPPING=1 at SIGTERM; no child process inherits the socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from tests.e2e import proxy_support as ps
from tests.fixtures.dovecot import DovecotBackend
from tests.fixtures.net import client_address
from tests.fixtures.proxyd import PasswdEntry, ProxydRunner, proxy_fields
from tests.helpers.clients import RawImapClient

pytestmark = pytest.mark.e2e

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "proxyd.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_verifies(tmp_path: Path) -> None:
    proxyd = shutil.which("proxyd") or str(Path(os.sys.executable).parent / "proxyd")  # type: ignore[attr-defined]
    unit = tmp_path / "proxyd.service"
    unit.write_text(UNIT.read_text().replace("/opt/proxyd/bin/proxyd", proxyd))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def _messages(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """The lines received up to ``until``; every datagram must come from the master (as
    systemd's NotifyAccess=main checks with the sender's credentials)."""
    sock.settimeout(timeout)
    seen: list[str] = []
    while until not in seen:
        data, ancillary, _flags, _address = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        senders = [
            struct.unpack("iII", cdata[:12])[0]
            for level, kind, cdata in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        ]
        assert senders == [MASTER[0]], (senders, MASTER)
        seen += data.decode().split("\n")
    return seen


MASTER: list[int] = [0]


def test_readiness_reload_and_stop_notifications(
    proxyd: ProxydRunner, backend_a: DovecotBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        running = ps.start(
            proxyd, [PasswdEntry("alice", "{PLAIN}alicepw", proxy_fields(backend_a.address, backend_a.imap_port))]
        )
        MASTER[0] = running.pid
        ready = _messages(sock, "READY=1")
        assert f"MAINPID={running.pid}" in ready
        # ready means served: a login goes through at once
        with RawImapClient(running.address(), running.port(), source_ip=client_address(32)) as client:
            assert client.command("LOGIN alice alicepw").status == "OK"
        assert len(_descendants(running.pid)) >= 3  # zygote, auth, login processes

        os.kill(running.pid, signal.SIGHUP)
        reload = _messages(sock, "READY=1")
        assert reload[0] == "RELOADING=1"
        assert any(line.startswith("MONOTONIC_USEC=") for line in reload)

        assert running.stop(signal.SIGTERM) == 0
        assert "STOPPING=1" in _messages(sock, "STOPPING=1")


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    parents = {int(p): int(pp) for p, pp in (line.split() for line in out.splitlines())}
    found, frontier = [], {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        found += sorted(children)
        frontier = children
    return found
