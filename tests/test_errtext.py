"""Errors in Dovecot's words: no Python reprs, no ``(_ssl.c:NNNN)``."""

from __future__ import annotations

import errno
import ssl

import trio

from proxyd import errtext


def test_trio_connect_errors_are_the_errno_text() -> None:
    exc = OSError(errno.ECONNREFUSED, "Error connecting to ('127.0.0.3', 10143): Connection refused")
    assert errtext.os_error(exc) == "Connection refused"


def _handshake_error(server_bytes: bytes) -> ssl.SSLError:
    """A real OpenSSL error: a TLS client handshake against ``server_bytes``."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    incoming.write(server_bytes)
    try:
        for _ in range(3):
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                continue
    except ssl.SSLError as exc:
        return exc
    raise AssertionError("no error")


def test_ssl_errors_are_openssl_reasons() -> None:
    wrong = _handshake_error(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
    assert "_ssl.c" in str(wrong)
    assert errtext.ssl_error(wrong) == "wrong version number"
    bare = ssl.SSLError(1, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred (_ssl.c:1006)")
    assert errtext.ssl_error(bare) == "EOF occurred"


def test_the_cause_of_a_broken_stream() -> None:
    try:
        try:
            raise _handshake_error(b"\x15\x03\x03\x00\x02\x02\x28" * 2)
        except ssl.SSLError as inner:
            raise trio.BrokenResourceError from inner
    except trio.BrokenResourceError as exc:
        text = errtext.cause_text(exc)
        assert "_ssl.c" not in text
        assert "[SSL" not in text
    assert errtext.cause_text(trio.BrokenResourceError()) == "Connection lost"
