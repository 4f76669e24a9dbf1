"""A tiny scripted IMAP server that records every byte it receives.

It stands beside the real Dovecot backends (never instead of them) to show
exactly what proxyd sends to a backend: whether it connected at all, the ID
command with the forwarded client address, the LOGIN/AUTHENTICATE arguments.

It runs in threads with blocking sockets, so plain synchronous tests (imaplib,
curl) can use it.  Each accepted connection is one ``RecordedConnection``.

Behaviour, per ``ImapScript``:

* sends ``* OK [CAPABILITY <capability>] <greeting>`` (or ``banner``) on connect;
* ``ID`` -> ``id_reply`` + ``OK ID completed.``;
* ``CAPABILITY`` -> ``* CAPABILITY <capability>`` + OK;
* ``LOGIN user pass`` / ``AUTHENTICATE PLAIN [ir]`` -> OK with the
  post-login capability when ``users`` has that user and password, else
  ``NO [AUTHENTICATIONFAILED] Authentication failed.``; ``login_reply``
  overrides the verdict (e.g. ``NO [UNAVAILABLE] Try later``);
* ``STARTTLS`` -> OK and a TLS handshake when ``tls`` is given, else BAD;
* ``LOGOUT`` -> BYE + OK, then close; anything else -> ``OK <NAME> done.``
  (or BAD before login);
* ``replies`` maps an upper-case command name to the lines to send instead
  (``{tag}`` is replaced by the command's tag).

Literals (``{n}`` and ``{n+}``) in commands are read and decoded.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from tests.fixtures.net import RECORDING_BACKEND_ADDRESS

#: an IMAP argument: a string, NIL (None) or a parenthesised list
ImapArg = str | None | list["ImapArg"]


@dataclass(frozen=True)
class ImapScript:
    """How the recording backend answers."""

    #: the pre-login capability list, sent in the banner and for CAPABILITY
    #: (`` STARTTLS`` is added while TLS is possible and not yet active)
    capability: str = (
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
    )
    greeting: str = "Recording backend ready."
    #: the whole banner line instead of ``* OK [CAPABILITY <capability>] <greeting>``
    banner: str | None = None
    post_login_capability: str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MOVE"
    id_reply: str = '* ID ("name" "recording-backend")'
    #: accepted user -> password
    users: Mapping[str, str] = field(default_factory=dict)
    #: if set, the tagged reply (without the tag) to every LOGIN/AUTHENTICATE
    login_reply: str | None = None
    #: command name (upper case) -> reply lines with ``{tag}`` placeholders
    replies: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ImapCommand:
    """One command as received."""

    tag: str
    name: str
    args: tuple[ImapArg, ...]
    #: the exact bytes of the command, literals included
    raw: bytes


@dataclass
class RecordedConnection:
    """Everything one client connection sent, and what it authenticated as."""

    peer: tuple[str, int]
    received: bytearray = field(default_factory=bytearray)
    commands: list[ImapCommand] = field(default_factory=list)
    #: (authzid, authcid, password) of an AUTHENTICATE PLAIN, or ("", user, password) of a LOGIN
    credentials: list[tuple[str, str, str]] = field(default_factory=list)
    #: plaintext bytes that were pipelined behind STARTTLS (discarded, never executed)
    bytes_after_starttls: bytes = b""
    closed: threading.Event = field(default_factory=threading.Event)

    def command_names(self) -> list[str]:
        return [command.name for command in self.commands]

    def find(self, name: str) -> list[ImapCommand]:
        """The commands called ``name`` (case-insensitive)."""
        return [command for command in self.commands if command.name == name.upper()]


class _Closed(Exception):
    """The peer closed the connection (or the server is stopping)."""


class _Reader:
    """Buffered reads from a blocking socket, recording every byte."""

    def __init__(self, sock: socket.socket, record: bytearray, lock: threading.Lock) -> None:
        self.sock = sock
        self.buffer = b""
        self._record = record
        self._lock = lock

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except OSError as exc:
            raise _Closed from exc
        if not chunk:
            raise _Closed
        with self._lock:
            self._record.extend(chunk)
        self.buffer += chunk

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line + b"\n"

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def parse_args(data: bytes) -> list[ImapArg]:
    """Parse IMAP arguments (atoms, quoted strings, inline literals, NIL, lists).

    Literals appear as ``{n}\\r\\n`` followed by n bytes, as assembled by the
    reader.
    """
    pos = 0

    def parse_list(end: bytes | None) -> list[ImapArg]:
        nonlocal pos
        items: list[ImapArg] = []
        while pos < len(data):
            char = data[pos : pos + 1]
            if char in (b" ", b"\r", b"\n"):
                pos += 1
            elif end is not None and char == end:
                pos += 1
                return items
            elif char == b"(":
                pos += 1
                items.append(parse_list(b")"))
            elif char == b'"':
                pos += 1
                out = bytearray()
                while data[pos : pos + 1] != b'"':
                    if data[pos : pos + 1] == b"\\":
                        pos += 1
                    out += data[pos : pos + 1]
                    pos += 1
                pos += 1
                items.append(out.decode("utf-8", errors="replace"))
            elif char == b"{":
                close = data.index(b"}", pos)
                size = int(data[pos + 1 : close].rstrip(b"+"))
                start = data.index(b"\n", close) + 1
                items.append(data[start : start + size].decode("utf-8", errors="replace"))
                pos = start + size
            else:
                start = pos
                while pos < len(data) and data[pos : pos + 1] not in (b" ", b"\r", b"\n", b")"):
                    pos += 1
                atom = data[start:pos].decode("utf-8", errors="replace")
                items.append(None if atom.upper() == "NIL" else atom)
        return items

    return parse_list(None)


class RecordingImapBackend:
    """The server.  Use as a context manager, or call ``start()`` / ``close()``."""

    def __init__(
        self,
        script: ImapScript | None = None,
        *,
        address: str = RECORDING_BACKEND_ADDRESS,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script = script or ImapScript()
        self.address = address
        self._requested_port = port
        self._tls = tls
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._readers: list[_Reader] = []
        self.connections: list[RecordedConnection] = []

    @property
    def port(self) -> int:
        assert self._listener is not None, "not started"
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self._requested_port))
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._stopping.set()
        if self._threads:
            self._threads[0].join(timeout=5)  # the accept loop: no new connections after this
        with self._lock:
            readers = list(self._readers)
        for reader in readers:
            with contextlib.suppress(OSError):
                reader.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        for reader in readers:
            reader.sock.close()

    # -- what tests read ---------------------------------------------------

    def received(self) -> bytes:
        """All bytes received on all connections, in connection order."""
        with self._lock:
            return b"".join(bytes(conn.received) for conn in self.connections)

    def connection_count(self) -> int:
        with self._lock:
            return len(self.connections)

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> list[RecordedConnection]:
        """Wait until at least ``count`` connections were accepted."""
        deadline = time.monotonic() + timeout
        while self.connection_count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} connections, got {self.connection_count()}")
            time.sleep(0.02)
        with self._lock:
            return list(self.connections)

    def wait_for_command(self, name: str, timeout: float = 10.0) -> ImapCommand:
        """Wait until some connection sent a command called ``name``; return the first."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for conn in self.connections:
                    found = conn.find(name)
                    if found:
                        return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} command received; got {self.received()!r}")
            time.sleep(0.02)

    # -- the server ------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conn = RecordedConnection(peer=peer)
            reader = _Reader(sock, conn.received, self._lock)
            with self._lock:
                self._readers.append(reader)
                self.connections.append(conn)
            self._spawn(self._serve, reader, conn)

    def _serve(self, reader: _Reader, conn: RecordedConnection) -> None:
        try:
            self._send(reader.sock, self.script.banner or self._banner())
            self._dialogue(reader, conn)
        except (_Closed, OSError):
            pass
        finally:
            conn.closed.set()
            with contextlib.suppress(OSError):
                reader.sock.close()

    def _capability(self, tls_active: bool) -> str:
        if self._tls is not None and not tls_active:
            return f"{self.script.capability} STARTTLS"
        return self.script.capability

    def _banner(self) -> str:
        return f"* OK [CAPABILITY {self._capability(False)}] {self.script.greeting}"

    @staticmethod
    def _send(sock: socket.socket, *lines: str) -> None:
        sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def _read_command(self, reader: _Reader) -> bytes:
        """One whole command, with its literals."""
        data = reader.line()
        while True:
            stripped = data.rstrip(b"\r\n")
            if not stripped.endswith(b"}") or b"{" not in stripped:
                return data
            spec = stripped[stripped.rindex(b"{") + 1 : -1]
            plus = spec.endswith(b"+")
            try:
                size = int(spec.rstrip(b"+"))
            except ValueError:
                return data
            if not plus:
                self._send(reader.sock, "+ OK")
            data += reader.exactly(size)
            data += reader.line()

    def _dialogue(self, reader: _Reader, conn: RecordedConnection) -> None:
        script = self.script
        logged_in = False
        tls_active = False
        while True:
            raw = self._read_command(reader)
            head, _, rest = raw.partition(b" ")
            tag = head.decode(errors="replace").strip()
            name_bytes, _, arg_bytes = rest.partition(b" ")
            name = name_bytes.decode(errors="replace").strip().upper()
            args = tuple(parse_args(arg_bytes))
            command = ImapCommand(tag=tag, name=name, args=args, raw=raw)
            with self._lock:
                conn.commands.append(command)

            if name in script.replies:
                self._send(reader.sock, *(line.format(tag=tag) for line in script.replies[name]))
                if name == "LOGOUT":
                    return
                continue
            if name == "ID":
                self._send(reader.sock, script.id_reply, f"{tag} OK ID completed.")
            elif name == "CAPABILITY":
                caps = script.post_login_capability if logged_in else self._capability(tls_active)
                self._send(reader.sock, f"* CAPABILITY {caps}", f"{tag} OK Capability completed.")
            elif name == "STARTTLS" and self._tls is not None and not tls_active and not logged_in:
                self._send(reader.sock, f"{tag} OK Begin TLS negotiation now.")
                conn.bytes_after_starttls = reader.buffer
                reader.buffer = b""
                reader.sock = self._tls.wrap_socket(reader.sock, server_side=True)
                tls_active = True
            elif name == "LOGIN" and not logged_in and len(args) == 2:
                user, password = (str(arg) for arg in args)
                with self._lock:
                    conn.credentials.append(("", user, password))
                logged_in = self._verdict(reader.sock, tag, user, password)
            elif (
                name == "AUTHENTICATE"
                and not logged_in
                and args
                and str(args[0]).upper() == "PLAIN"
            ):
                response = args[1] if len(args) > 1 else None
                if response is None:
                    self._send(reader.sock, "+ ")
                    response = reader.line().decode().strip()
                try:
                    decoded = "" if response == "=" else base64.b64decode(str(response)).decode()
                except ValueError:
                    self._send(reader.sock, f"{tag} BAD Invalid base64 or aborted.")
                    continue
                authzid, authcid, password = ([*decoded.split("\x00"), "", "", ""])[:3]
                with self._lock:
                    conn.credentials.append((authzid, authcid, password))
                user = authcid if authzid in ("", authcid) else ""
                logged_in = self._verdict(reader.sock, tag, user, password)
            elif name == "LOGOUT":
                self._send(reader.sock, "* BYE Logging out", f"{tag} OK Logout completed.")
                return
            elif logged_in or name == "NOOP":
                self._send(reader.sock, f"{tag} OK {name} done.")
            else:
                self._send(reader.sock, f"{tag} BAD Error in IMAP command received by server.")

    def _verdict(self, sock: socket.socket, tag: str, user: str, password: str) -> bool:
        script = self.script
        if script.login_reply is not None:
            self._send(sock, f"{tag} {script.login_reply}")
            return script.login_reply.startswith("OK")
        if user and script.users.get(user) == password:
            self._send(sock, f"{tag} OK [CAPABILITY {script.post_login_capability}] Logged in")
            return True
        self._send(sock, f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
        return False
