"""READY=1 goes out once every pool has a process, whatever order they came in.

The auth process's first report (accepting) can come before the last login pool gets its
process; a fresh login process reports no change of ``accepting`` afterwards, so only its
registration can tell the readiness waiter (the systemd test saw READY=1 30 s late about
once in 20 starts before it did).
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from proxyd.config.load import load_settings_text
from proxyd.ipc.channel import Channel
from proxyd.ipc.messages import read_report
from proxyd.master.main import Child, Master
from proxyd.sdnotify import Notifier
from proxyd.sockstream import SockStream


class _Zygote:
    """Forks nothing: hands out pids, and no child ever exits."""

    def __init__(self) -> None:
        self.next_pid = 40000

    async def spawn(self, kind: str, service: str, control_fd: int) -> int:
        del kind, service, control_fd
        self.next_pid += 1
        return self.next_pid

    def when_exited(self, pid: int, wake: object) -> None:
        del pid, wake

    async def wait_exit(self, pid: int) -> int | None:
        del pid
        await trio.sleep_forever()
        return None


def test_ready_after_the_last_pool_got_its_process_when_auth_was_up_first(tmp_path: Path) -> None:
    settings = load_settings_text("protocols = imap\nssl = no\n", "proxyd.conf")
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.setblocking(False)

        async def main() -> None:
            master = Master(settings, _Zygote(), [])  # type: ignore[arg-type]
            master.notifier = Notifier(str(notify_path))
            async with trio.open_nursery() as nursery:
                master._nursery = nursery
                nursery.start_soon(master._announce_ready)
                await trio.testing.wait_all_tasks_blocked()
                # the auth process is up and says so: no login process yet, not ready
                ours, theirs = socket.socketpair()
                theirs.close()
                auth = Child(pid=1, kind="auth", service="", control=Channel(SockStream(ours), read_report), generation=0)
                master.children[auth.pid] = auth
                auth.accepting = True
                master.changed.notify()
                await trio.testing.wait_all_tasks_blocked()
                assert not _received(sock)
                # then the imap-login pool gets its process
                assert await master.spawn("login", "imap-login") is not None
                with trio.fail_after(5):
                    while not (lines := _received(sock)):
                        await trio.sleep(0.01)
                assert "READY=1" in lines
                nursery.cancel_scope.cancel()
            for child in master.children.values():
                await child.control.aclose()

        trio.run(main)


def _received(sock: socket.socket) -> list[str]:
    try:
        return sock.recv(4096).decode().split("\n")
    except BlockingIOError:
        return []
