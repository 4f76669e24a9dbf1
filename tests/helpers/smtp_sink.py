"""A tiny SMTP server that accepts every message and keeps it (the relay MTA behind a test backend).

Dovecot's submission service relays what a client submits to ``submission_relay_host``;
pointing that at a sink on loopback lets a test see which backend relayed what.  With
``extensions`` (say ``XCLIENT ADDR LOGIN``) it also stands in for an MTA such as
Postfix behind a proxy: it offers them in its EHLO reply, answers XCLIENT with a
new greeting, and keeps every command line it was sent (``commands``).
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self


@dataclass
class SinkMessage:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    #: the peer that handed the message over (the backend's address)
    peer: str


@dataclass
class _State:
    messages: list[SinkMessage] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)
    extensions: tuple[str, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self._reply("220 sink.test ESMTP sink")
        mail_from, rcpts = "", []
        while line := self.rfile.readline(65536):
            with self.server.state.lock:
                self.server.state.commands.append(line.rstrip(b"\r\n"))
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"LHLO"):
                extra = "".join(f"250-{name}\r\n" for name in self.server.state.extensions)
                self._reply(f"250-sink.test\r\n{extra}250-8BITMIME\r\n250 PIPELINING")
            elif verb == b"XCLIENT" and self.server.state.extensions:
                self._reply("220 sink.test ESMTP sink")
            elif verb == b"HELO":
                self._reply("250 sink.test")
            elif verb == b"MAIL":
                mail_from, rcpts = line.decode().strip()[10:], []
                self._reply("250 2.1.0 Ok")
            elif verb == b"RCPT":
                rcpts.append(line.decode().strip()[8:])
                self._reply("250 2.1.5 Ok")
            elif verb == b"DATA":
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while (chunk := self.rfile.readline(65536)) not in (b".\r\n", b".\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                with self.server.state.lock:
                    self.server.state.messages.append(
                        SinkMessage(mail_from, rcpts, bytes(data), self.client_address[0])
                    )
                self._reply("250 2.0.0 Ok: queued")
            elif verb == b"RSET":
                mail_from, rcpts = "", []
                self._reply("250 2.0.0 Ok")
            elif verb == b"QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("250 2.0.0 Ok")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class SmtpSink:
    """``with SmtpSink(address) as sink: ... sink.messages``"""

    def __init__(self, address: str, port: int = 0, *, extensions: tuple[str, ...] = ()) -> None:
        self._server = _Server((address, port), _Handler)
        self._server.state = _State(extensions=extensions)
        self.address, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def messages(self) -> list[SinkMessage]:
        with self._server.state.lock:
            return list(self._server.state.messages)

    @property
    def commands(self) -> list[bytes]:
        """Every command line received so far, without its line break."""
        with self._server.state.lock:
            return list(self._server.state.commands)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["SinkMessage", "SmtpSink"]
