"""Real clients for end-to-end tests.

* ``IMAP4`` / ``IMAP4_SSL``: Python's imaplib, able to connect *from* a chosen
  loopback address (so tests can be told apart by their client IP and failed
  logins cannot penalise each other).
* ``RawImapClient``: a line-level IMAP client for asserting exact server texts
  (greetings, untagged replies, response codes) that imaplib hides.
* ``curl`` and ``openssl_s_client``: the command-line clients, run with a
  timeout.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

CLIENT_TIMEOUT = 20.0


def _connect(host: str, port: int, timeout: float | None, source_ip: str | None) -> socket.socket:
    source = (source_ip, 0) if source_ip else None
    return socket.create_connection((host, port), timeout, source_address=source)


class IMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 that can bind its socket to ``source_ip`` first."""

    def __init__(
        self, host: str, port: int, *, source_ip: str | None = None, timeout: float = CLIENT_TIMEOUT
    ) -> None:
        self.source_ip = source_ip
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.host, self.port, timeout, self.source_ip)


class IMAP4_SSL(imaplib.IMAP4_SSL):
    """imaplib.IMAP4_SSL that can bind its socket to ``source_ip`` first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        source_ip: str | None = None,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        self.source_ip = source_ip
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.host, self.port, timeout, self.source_ip)
        context: ssl.SSLContext = self.ssl_context
        return context.wrap_socket(sock, server_hostname=self.host)


def fetch_subjects(client: imaplib.IMAP4) -> list[str]:
    """SELECT INBOX read-only and return the Subject of every message, in order."""
    typ, _ = client.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    subjects = []
    for item in data:
        if isinstance(item, tuple):
            header = item[1].decode().strip()
            subjects.append(header.removeprefix("Subject:").strip())
    return subjects


@dataclass(frozen=True)
class ImapReply:
    """The server's answer to one tagged command."""

    #: untagged lines (``* ...``) and continuation lines (``+ ...``) before the tagged one
    untagged: tuple[str, ...]
    #: the tagged completion without the tag, e.g. ``OK Logged in``
    tagged: str

    @property
    def status(self) -> str:
        return self.tagged.split(" ", 1)[0]

    @property
    def text(self) -> str:
        return self.tagged.split(" ", 1)[1] if " " in self.tagged else ""


class RawImapClient:
    """A line-level IMAP client: sends exactly what it is told, returns lines verbatim.

    ``greeting`` holds the first line the server sent.  Literals in server
    replies are not interpreted; tests using this client keep to commands whose
    replies are plain lines.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        source_ip: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = CLIENT_TIMEOUT,
    ) -> None:
        source = (source_ip, 0) if source_ip else None
        sock = socket.create_connection((host, port), timeout, source_address=source)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        self._sock: socket.socket = sock
        self._buffer = b""
        self._tag = 0
        self.host = host
        self.greeting = self.read_line()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def next_tag(self) -> str:
        self._tag += 1
        return f"a{self._tag}"

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read_line(self) -> str:
        """One line without its CRLF; raises ``EOFError`` when the server closed."""
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unread: {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.removesuffix(b"\r").decode("utf-8", errors="replace")

    def read_until_closed(self) -> list[str]:
        """Read lines until the server closes the connection."""
        lines: list[str] = []
        while True:
            try:
                lines.append(self.read_line())
            except (EOFError, ConnectionResetError):
                return lines

    def command(self, command: str) -> ImapReply:
        """Send ``<tag> command`` and read up to the tagged reply."""
        tag = self.next_tag()
        self.send_raw(f"{tag} {command}\r\n".encode())
        return self.read_reply(tag)

    def read_reply(self, tag: str) -> ImapReply:
        untagged: list[str] = []
        while True:
            line = self.read_line()
            if line.startswith(f"{tag} "):
                return ImapReply(tuple(untagged), line[len(tag) + 1 :])
            untagged.append(line)

    def capabilities(self) -> list[str]:
        """The server's CAPABILITY list (upper case)."""
        reply = self.command("CAPABILITY")
        assert reply.status == "OK", reply
        for line in reply.untagged:
            if line.upper().startswith("* CAPABILITY "):
                return line.split()[2:]
        raise AssertionError(f"no untagged CAPABILITY in {reply}")

    def starttls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None
    ) -> ImapReply:
        """Send STARTTLS and, on OK, do the TLS handshake on the same socket."""
        reply = self.command("STARTTLS")
        if reply.status == "OK":
            assert not self._buffer, f"bytes after the STARTTLS reply: {self._buffer!r}"
            self._sock = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname or self.host
            )
        return reply

    def is_closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True when the server closes the connection within ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self._sock.settimeout(CLIENT_TIMEOUT)


def curl(args: Sequence[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``curl -sS ARGS`` and return the finished process (never raises on exit codes)."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def openssl_s_client(
    args: Sequence[str], stdin: str, *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``openssl s_client -quiet -crlf ARGS`` feeding ``stdin`` (LF line ends; -crlf adds CR)."""
    return subprocess.run(
        ["openssl", "s_client", "-quiet", "-crlf", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
