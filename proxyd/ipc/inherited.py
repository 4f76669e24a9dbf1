"""Sockets a child process inherits from the master (bound before any fork)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from proxyd.config.settings import InetListener


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """One listening socket: which service and which ``inet_listener`` it belongs to."""

    service: str
    listener: InetListener
    address: str
    sock: socket.socket
