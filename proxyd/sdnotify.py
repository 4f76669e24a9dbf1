"""systemd's readiness protocol (``sd_notify(3)``): one datagram to ``$NOTIFY_SOCKET``.

The protocol is a few ``KEY=VALUE`` lines in one datagram on an ``AF_UNIX``
socket whose path (or abstract name, ``@...``) systemd puts in the environment;
a dependency for that would be more code than this.  ``take_socket()`` reads
and removes the variable, so that no child process ever notifies in the
master's name.  Without the variable (not started by systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def take_socket(cls) -> Notifier:
        return cls(os.environ.pop("NOTIFY_SOCKET", None) or None)

    def notify(self, *lines: str) -> bool:
        """Send ``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``; False if not sent."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall("\n".join(lines).encode())
        except OSError:
            return False
        return True
