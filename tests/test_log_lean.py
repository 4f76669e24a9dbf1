"""A client's log lines the lean way (proxyd.log.emit_line, LineFile): the same text in the
same place as the stdlib path, one write per line, and the stdlib path wherever the
destinations are not the ones setup_logging installed."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd import log as proxyd_log
from proxyd.log import DovecotFormatter, LineFile, emit_line, setup_logging

STAMP = r"[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d "


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level, lean = list(root.handlers), root.level, proxyd_log._lean
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        proxyd_log._lean = lean


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_lean_and_stdlib_lines_are_the_same(tmp_path: Path, root_logging: None) -> None:
    path = tmp_path / "proxyd.log"
    setup_logging(str(path))
    assert proxyd_log._lean is not None
    logger = logging.getLogger("imap-login")
    line = "Disconnected: bye\x1b[31m\u2028x: user=<a\tb>"
    emit_line(logger, logging.INFO, line)
    logger.info("%s", line)
    emit_line(logging.getLogger("proxyd"), logging.WARNING, "a warning")
    lean, stdlib, master = _lines(path)
    assert re.fullmatch(STAMP + r"imap-login: Info: Disconnected: bye\?\[31m\?x: user=<a\?b>", lean), lean
    assert lean[16:] == stdlib[16:]  # the text after the timestamp
    assert re.fullmatch(STAMP + "master: Warning: a warning", master)


def test_levels_go_where_the_settings_say(tmp_path: Path, root_logging: None) -> None:
    errors, info, debug = (tmp_path / name for name in ("errors.log", "info.log", "debug.log"))
    setup_logging(str(errors), True, info_log_path=str(info), debug_log_path=str(debug), timestamp="")
    logger = logging.getLogger("pop3-login")
    for level in (logging.DEBUG, logging.INFO, logging.ERROR):
        emit_line(logger, level, f"line at {logging.getLevelName(level)}")
    assert _lines(debug) == ["pop3-login: Debug: line at DEBUG"]
    assert _lines(info) == ["pop3-login: Info: line at INFO"]
    assert _lines(errors) == ["pop3-login: Error: line at ERROR"]


def test_a_capturing_handler_still_gets_records(tmp_path: Path, root_logging: None) -> None:
    setup_logging(str(tmp_path / "proxyd.log"))
    records: list[logging.LogRecord] = []

    class Catcher(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    catcher = Catcher()
    logging.getLogger().addHandler(catcher)
    try:
        emit_line(logging.getLogger("imap-login"), logging.INFO, "Login: x")
    finally:
        logging.getLogger().removeHandler(catcher)
    assert [r.getMessage() for r in records] == ["Login: x"]
    assert _lines(tmp_path / "proxyd.log")[0].endswith("imap-login: Info: Login: x")


def test_syslog_keeps_the_stdlib_path(tmp_path: Path, root_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    received = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "log")
    received.bind(address)
    monkeypatch.setattr(proxyd_log, "SYSLOG_SOCKET", address)
    setup_logging("syslog")
    assert proxyd_log._lean is None
    emit_line(logging.getLogger("imap-login"), logging.INFO, "Login: x")
    assert received.recv(4096) == b"<22>proxyd: imap-login: Info: Login: x\x00"
    received.close()


def test_each_line_is_one_write() -> None:
    """A SEQPACKET socket keeps each write(2) apart: one message per line, however long."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handler = LineFile(ours.fileno(), owned=False)
    handler.setFormatter(DovecotFormatter(None))
    lines = ["short", "x" * 5000, "caf\u00e9"]
    for line in lines:
        handler.add(line)
    handler.handle(logging.LogRecord("imap-login", logging.INFO, __file__, 1, "a %s", ("record",), None))
    theirs.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(theirs.recv(10000))
        except BlockingIOError:
            break
    ours.close()
    theirs.close()
    assert messages == [b"short\n", b"x" * 5000 + b"\n", "caf\u00e9\n".encode(), b"imap-login: Info: a record\n"]


def test_a_log_file_is_appended_to(tmp_path: Path, root_logging: None) -> None:
    path = tmp_path / "proxyd.log"
    path.write_text("an older line\n")
    setup_logging(str(path), timestamp="")
    emit_line(logging.getLogger("imap-login"), logging.INFO, "Login: x")
    assert _lines(path) == ["an older line", "imap-login: Info: Login: x"]
