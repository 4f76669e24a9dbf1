"""A small ManageSieve (RFC 5804) client for end-to-end tests: exact lines, STARTTLS, PLAIN, scripts."""

from __future__ import annotations

import base64
import re
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from tests.helpers.clients import CLIENT_TIMEOUT

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


@dataclass(frozen=True)
class SieveReply:
    """The lines before the final one (capabilities, data) and the final ``OK``/``NO``/``BYE`` line."""

    lines: list[str]
    final: str

    @property
    def status(self) -> str:
        return self.final.split(" ", 1)[0]


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ManageSieveClient:
    """One connection; every method returns the server's answer as :class:`SieveReply`."""

    def __init__(
        self, host: str, port: int, *, source_ip: str | None = None, timeout: float = CLIENT_TIMEOUT
    ) -> None:
        source = (source_ip, 0) if source_ip else None
        self._sock: socket.socket = socket.create_connection((host, port), timeout, source_address=source)
        self._file = self._sock.makefile("rb")
        self.greeting = self.read_reply()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def _line(self) -> bytes:
        line = self._file.readline()
        if not line:
            raise EOFError("connection closed")
        line = line.rstrip(b"\r\n")
        literal = _LITERAL.search(line)
        if literal:
            line = line[: literal.start()] + self._file.read(int(literal.group(1)))
            line += self._line()
        return line

    def read_reply(self) -> SieveReply:
        lines: list[str] = []
        while True:
            line = self._line().decode("utf-8", "replace")
            if line.split(" ", 1)[0].upper() in ("OK", "NO", "BYE"):
                return SieveReply(lines, line)
            lines.append(line)

    def command(self, line: str | bytes) -> SieveReply:
        data = line.encode() if isinstance(line, str) else line
        self._sock.sendall(data + b"\r\n")
        return self.read_reply()

    def starttls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> SieveReply:
        """STARTTLS, the handshake, then the capabilities the server sends again."""
        reply = self.command("STARTTLS")
        if reply.status != "OK":
            return reply
        self._file.close()
        self._sock = context.wrap_socket(self._sock, server_hostname=server_hostname)
        self._file = self._sock.makefile("rb")
        return self.read_reply()

    def authenticate_plain(self, user: str, password: str, authzid: str = "") -> SieveReply:
        ir = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{ir}"')

    def authenticate_login(self, user: str, password: str) -> SieveReply:
        """LOGIN without an initial response: two quoted challenges, two quoted answers."""
        self._sock.sendall(b'AUTHENTICATE "LOGIN"\r\n')
        for answer in (user, password):
            challenge = self._line()
            if not challenge.startswith(b'"'):
                return SieveReply([], challenge.decode())
            self._sock.sendall(b'"' + base64.b64encode(answer.encode()) + b'"\r\n')
        return self.read_reply()

    def putscript(self, name: str, script: str) -> SieveReply:
        data = script.encode()
        return self.command(f"PUTSCRIPT {quoted(name)} {{{len(data)}+}}\r\n".encode() + data)

    def setactive(self, name: str) -> SieveReply:
        return self.command(f"SETACTIVE {quoted(name)}")

    def listscripts(self) -> SieveReply:
        return self.command("LISTSCRIPTS")

    def logout(self) -> SieveReply:
        return self.command("LOGOUT")
