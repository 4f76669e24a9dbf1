"""Handing a proxied plaintext session from a login process to the relay process.

Theory of operation
-------------------
In high-security mode (``service_count = 1``) every connection gets a login
process of its own, and a Python process costs megabytes even when all it does
is splice bytes.  Dovecot's login processes end once a user has logged in
locally; only TLS sessions keep theirs, for the proxying
(``login-processes.rst``).  proxyd does the same for proxied sessions: when
neither side has TLS, the login process hands the two sockets to the relay
process and exits; not at once, but once the session has been quiet a moment
(``ProxiedConnection``), so that a session that ends soon after its login ends
where it began.  Everything that parses what a client sends (pre-login
commands, SASL, TLS) still happens in a process of its own; the relay process
only moves bytes, inside the kernel where it can (``os.splice``).

The hand-off is one ``SOCK_SEQPACKET`` message on the relay socket under
``base_dir/login``: a JSON record (``HandoffRecord``) plus the client and
backend descriptors as ``SCM_RIGHTS``; the relay process answers ``OK`` (it
owns the session now) or ``NO`` (full or stopping: the session stays where it
is).  After ``OK`` the login process sends a last word, ``GO``, or ``KICK
REASON`` when an admin kicked the session while it was being handed over (the
login process counted that kick, so the relay process carries it out).  The
session moves only when both have spoken: without an answer in time the login
process keeps the session, and without a last word the relay process drops its
copies, so no session is ever relayed twice.
"""

from __future__ import annotations

import array
import base64
import contextlib
import json
import math
import socket
from dataclasses import dataclass
from typing import Any, Final

import trio

from proxyd.log import DEFAULT_LOGIN_FORMAT
from proxyd.proxied.connection import ProxiedConnection

RELAY_SOCKET_NAME: Final = "relay"
#: the whole record: the pending bytes (base64) are bounded by the engines' line limits
#: and by what the splice hub holds when it pauses (at most a read, 64 KiB, each way)
MAX_RECORD: Final = 256 * 1024
ACCEPTED: Final = b"OK"
REFUSED: Final = b"NO"
GO: Final = b"GO"
KICK: Final = b"KICK "
#: how long a login process waits for the relay process's answer
ANSWER_TIMEOUT: Final = 10.0


class HandoffError(ValueError):
    """A hand-off message that is not one."""


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """What the relay process needs besides the two sockets."""

    service: str
    protocol: str
    user: str
    remote_ip: str
    backend_ip: str
    backend_port: int
    log_fields: str
    connected_at: float
    client_pending: bytes
    backend_pending: bytes
    backend_host: str = ""
    log_format: str = DEFAULT_LOGIN_FORMAT
    #: relayed by the login process before it handed the session on (its login process
    #: relays it until it is quiet: ``proxyd.proxied.connection.HANDOFF_QUIET``), and for
    #: how long the session had been quiet then
    bytes_in: int = 0
    bytes_out: int = 0
    quiet_for: float = 0.0

    def encode(self) -> bytes:
        # spelt out, not dataclasses.asdict() (a deep copy of each field): every proxied
        # session of a high-security login process comes this way once
        fields: dict[str, Any] = {
            "service": self.service,
            "protocol": self.protocol,
            "user": self.user,
            "remote_ip": self.remote_ip,
            "backend_ip": self.backend_ip,
            "backend_port": self.backend_port,
            "log_fields": self.log_fields,
            "connected_at": self.connected_at,
            "client_pending": base64.b64encode(self.client_pending).decode(),
            "backend_pending": base64.b64encode(self.backend_pending).decode(),
            "backend_host": self.backend_host,
            "log_format": self.log_format,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "quiet_for": self.quiet_for,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> HandoffRecord:
        try:
            fields = json.loads(data)
            return cls(
                service=_text(fields["service"]),
                protocol=_text(fields["protocol"]),
                user=_text(fields["user"]),
                remote_ip=_text(fields["remote_ip"]),
                backend_ip=_text(fields["backend_ip"]),
                backend_port=int(fields["backend_port"]),
                log_fields=_text(fields["log_fields"]),
                connected_at=float(fields["connected_at"]),
                client_pending=base64.b64decode(fields["client_pending"], validate=True),
                backend_pending=base64.b64decode(fields["backend_pending"], validate=True),
                backend_host=_text(fields.get("backend_host", "")),
                log_format=_text(fields.get("log_format", DEFAULT_LOGIN_FORMAT)),
                bytes_in=_count(fields.get("bytes_in", 0)),
                bytes_out=_count(fields.get("bytes_out", 0)),
                quiet_for=_seconds(fields.get("quiet_for", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise HandoffError(f"invalid hand-off record: {exc}") from None

    @classmethod
    def of(cls, conn: ProxiedConnection, service: str) -> HandoffRecord:
        return cls(
            service=service,
            protocol=conn.protocol,
            user=conn.user,
            remote_ip=conn.remote_ip,
            backend_ip=conn.backend_ip,
            backend_port=conn.backend_port,
            log_fields=conn.log_fields,
            connected_at=conn.connected_at,
            client_pending=conn.client_pending,
            backend_pending=conn.backend_pending,
            backend_host=conn.backend_host,
            log_format=conn.log_format,
            bytes_in=conn.relayed_in,
            bytes_out=conn.relayed_out,
            quiet_for=conn.quiet_for,
        )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    # it goes into log lines: no line breaks
    return value.replace("\r", "?").replace("\n", "?")


def _count(value: object) -> int:
    if not isinstance(value, int) or value < 0:
        raise TypeError("not a byte count")
    return value


def _seconds(value: object) -> float:
    if not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise TypeError("not a duration")
    return float(value)


def fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of an SCM_RIGHTS message."""
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


async def hand_off(path: str, service: str, conn: ProxiedConnection) -> bool:
    """Give ``conn`` to the relay process at ``path``; True when it took it.

    On True the caller must only drop its own descriptors (closing them sends
    nothing: the relay process holds the connections now).
    """
    sockets = conn.plain_sockets()
    if sockets is None or conn.kicked:
        return False
    record = HandoffRecord.of(conn, service).encode()
    if len(record) > MAX_RECORD:
        return False
    client, backend = sockets
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with sock:
        try:
            await sock.connect(path)
            fds = array.array("i", [client.fileno(), backend.fileno()])
            await sock.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        except OSError:
            return False  # no relay process (yet): keep the session here
        answer = b""
        with trio.move_on_after(ANSWER_TIMEOUT), contextlib.suppress(OSError):
            answer = await sock.recv(16)
        if answer != ACCEPTED:
            return False  # refused, gone or stalled: it will not relay without our last word
        # no checkpoint between deciding and marking: a later kick goes to the relay process
        conn.moved = True
        last_word = KICK + conn.kick_reason.encode() if conn.kicked else GO
        with contextlib.suppress(OSError):
            await sock.send(last_word)
        return True


def parse_last_word(data: bytes) -> tuple[bool, str]:
    """(take the session?, kick reason or "") from a login process's last word."""
    if data.startswith(KICK):
        return True, _text(data[len(KICK):].decode(errors="replace")) or "Kicked by admin"
    return data == GO, ""
