"""What the IMAP and POP3 engine fuzz tests share: cutting input, driving a server engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxyd.protocols.engine import LoginEngineBase
from proxyd.protocols.events import (
    NEED_DATA,
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    Close,
    StartTLS,
    TrustedClientInfo,
)

#: every event a client-facing engine may give its driver
CLIENT_EVENTS = (AuthBegin, AuthContinue, AuthAborted, AuthRefused, StartTLS, TrustedClientInfo, Close)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given points (taken modulo its length), empty pieces dropped."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return [chunk for chunk in chunks if chunk]


def drive_server(
    engine: LoginEngineBase,
    chunks: list[bytes],
    answers: list[int],
    eof: bool,
    answer_auth: Callable[[int], None],
) -> tuple[bytes, list[Any]]:
    """Feed chunks; answer driver events with choices from ``answers`` (cycled).

    ``answer_auth(pick)`` answers an ``AuthBegin``/``AuthContinue`` the way the
    protocol's driver could (challenge, failure, success, ...).
    """
    output = bytearray(engine.data_to_send())
    events: list[Any] = []
    choice = iter(answers * 50)
    for chunk in [*chunks, b""] if eof else chunks:
        if engine.state == "CLOSED":
            break
        engine.receive_data(chunk)
        while (event := engine.next_event()) is not NEED_DATA:
            assert isinstance(event, CLIENT_EVENTS), event
            events.append(event)
            pick = next(choice, 0)
            if isinstance(event, (AuthBegin, AuthContinue)):
                answer_auth(pick)
            elif isinstance(event, StartTLS):
                engine.trailing_data()
                engine.tls_started(engine.policy)
            output += engine.data_to_send()
        output += engine.data_to_send()
    return bytes(output), events
