"""The clients and the CPU probe of ``bench_protocols.py``.

Each client does one whole operation on a fresh connection, as a mail client or
an MTA mostly does: a ManageSieve or Submission login (greeting, AUTH PLAIN,
LOGOUT/QUIT), or one LMTP delivery to two recipients.  ``tree_cpu`` reads the
user+system time of a process tree from /proc, reaped children included.
"""

from __future__ import annotations

import base64
import os
import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

RECIPIENTS = ("alice@example.org", "bob@example.org")
BODY = b"From: bench@example.net\r\nSubject: bench\r\n\r\n" + b"x" * 70 + b"\r\n" * 40


def tree_cpu(root: int) -> float:
    """User+system seconds of ``root``'s tree: live processes plus what they reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = data[data.rindex(")") + 2 :].split()
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            fields = stats[pid]
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
            todo.extend(children.get(pid, []))
    return total


def _read_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError(f"closed after {data!r}")
        data += chunk
    return data


def _sieve_final(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    last = data[:-2].rsplit(b"\r\n", 1)[-1]
    return last.startswith((b"OK", b"NO", b"BYE"))


def _smtp_final(data: bytes) -> bool:
    if not data.endswith(b"\r\n"):
        return False
    last = data[:-2].rsplit(b"\r\n", 1)[-1]
    return last[3:4] == b" "


def sieve_login(address: str, port: int) -> bool:
    ir = base64.b64encode(b"\0sieve-user\0alicepw")
    with socket.create_connection((address, port), 20) as sock:
        _read_until(sock, _sieve_final)
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + ir + b'"\r\n')
        ok = _read_until(sock, _sieve_final).startswith(b"OK")
        sock.sendall(b"LOGOUT\r\n")
        _read_until(sock, _sieve_final)
    return ok


def submission_login(address: str, port: int) -> bool:
    ir = base64.b64encode(b"\0subm-user\0bobpw")
    with socket.create_connection((address, port), 20) as sock:
        _read_until(sock, _smtp_final)
        sock.sendall(b"EHLO bench.example\r\n")
        _read_until(sock, _smtp_final)
        sock.sendall(b"AUTH PLAIN " + ir + b"\r\n")
        ok = _read_until(sock, _smtp_final).startswith(b"235")
        sock.sendall(b"QUIT\r\n")
        _read_until(sock, _smtp_final)
    return ok


def deliver(port: int, address: str, count: int, errors: list[str]) -> None:
    """``count`` messages, one connection each; LMTP answers DATA once per recipient."""
    stuffed = BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    for _ in range(count):
        try:
            with smtplib.LMTP(address, port, timeout=30) as client:
                client.ehlo_or_helo_if_needed()
                client.mail("bench@example.net")
                errors.extend(f"RCPT {rcpt} refused" for rcpt in RECIPIENTS if client.rcpt(rcpt)[0] != 250)
                if client.docmd("DATA")[0] != 354:
                    errors.append("DATA refused")
                    continue
                client.send(stuffed)
                for rcpt in RECIPIENTS:
                    code, text = client.getreply()
                    if code != 250:
                        errors.append(f"{rcpt}: {code} {text!r}")
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(repr(exc))
