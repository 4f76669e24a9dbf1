"""What the engine fuzz tests of every protocol share: strategies, cutting input, driving
a client-facing or a backend engine, and the checks every protocol's output must pass."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from proxyd.protocols.backend_events import (
    BackendFailed,
    BackendIgnored,
    BackendLoggedIn,
    BackendNeedsTLS,
    BackendUntagged,
)
from proxyd.protocols.engine import LoginEngineBase
from proxyd.protocols.events import (
    NEED_DATA,
    AuthAborted,
    AuthBegin,
    AuthContinue,
    AuthRefused,
    ClientFailure,
    Close,
    LoginPolicy,
    StartTLS,
    TrustedClientInfo,
)
from proxyd.protocols.spec import BackendLoginEngine

#: every event a client-facing engine may give its driver
CLIENT_EVENTS = (AuthBegin, AuthContinue, AuthAborted, AuthRefused, StartTLS, TrustedClientInfo, Close)
#: every event a backend engine may give its driver
BACKEND_EVENTS = (BackendNeedsTLS, BackendUntagged, BackendLoggedIn, BackendFailed, BackendIgnored)

#: a password made of letters and digits (so that it cannot appear by chance in a reply)
password_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20)


def login_policies(mechanisms: Sequence[tuple[str, ...]]) -> st.SearchStrategy[LoginPolicy]:
    """Every combination of the policy flags, with one of ``mechanisms``."""
    return st.builds(
        LoginPolicy,
        mechanisms=st.sampled_from(list(mechanisms)),
        ssl=st.sampled_from(["no", "yes", "required"]),
        tls_available=st.booleans(),
        tls_active=st.booleans(),
        secured=st.booleans(),
        trusted=st.booleans(),
        disable_plaintext_auth=st.booleans(),
    )


def noise(pieces: Sequence[bytes], *, max_pieces: int = 40) -> st.SearchStrategy[bytes]:
    """Input that looks enough like the protocol to reach deep states, mixed with raw bytes."""
    return st.lists(
        st.one_of(st.sampled_from(list(pieces)), st.binary(max_size=40)), max_size=max_pieces
    ).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given points (taken modulo its length), empty pieces dropped."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return [chunk for chunk in chunks if chunk]


def auth_answers(
    engine: Any, *, logged_in: bytes, backend_reply: bytes | None = None
) -> Callable[[int], None]:
    """How a driver may answer an auth step, by ``pick``: a challenge, a failure, the
    backend's refusal (when given) or a success with ``logged_in``."""
    choices = 3 if backend_reply is None else 4

    def answer(pick: int) -> None:
        step = pick % choices
        if step == 0:
            engine.sasl_challenge(b"ch")
        elif step == 1:
            engine.auth_failed(list(ClientFailure)[pick % len(ClientFailure)])
        elif step == 2 and backend_reply is not None:
            engine.auth_backend_reply(backend_reply)
        else:
            engine.login_succeeded(logged_in)

    return answer


def drive_server(
    engine: LoginEngineBase,
    chunks: list[bytes],
    answers: list[int],
    eof: bool,
    answer_auth: Callable[[int], None],
) -> tuple[bytes, list[Any]]:
    """Feed chunks; answer driver events with choices from ``answers`` (cycled).

    ``answer_auth(pick)`` answers an ``AuthBegin``/``AuthContinue`` the way the
    protocol's driver could (see :func:`auth_answers`).
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


def check_server_output(output: bytes, events: list[Any], reply_line: re.Pattern[bytes]) -> None:
    """Whole reply lines of the protocol's shapes; at most one ``Close``, and nothing after it."""
    assert output.endswith(b"\r\n")
    for line in output.split(b"\r\n")[:-1]:
        assert reply_line.match(line), line
    closes = [event for event in events if isinstance(event, Close)]
    assert len(closes) <= 1
    if closes:
        assert events[-1] == closes[0]


def check_secret_hidden(secret: bytes, output: bytes, events: list[Any], *also: bytes) -> None:
    """The password (and its encodings ``also``) is neither echoed nor in any event's repr."""
    for value in (secret, *also):
        assert value not in output
    assert all(secret not in repr(event).encode() for event in events)


def drive_backend(
    engine: BackendLoginEngine, chunks: list[bytes], eof: bool, secret: bytes
) -> list[bytes]:
    """Feed backend bytes, doing STARTTLS at once; returns what the engine sent, per chunk.

    Checks every event on the way: a known kind, none after the final one, and a
    final client reply that is whole lines without ``secret``.
    """
    finished = False
    sent: list[bytes] = []
    for chunk in [*chunks, b""] if eof else chunks:
        engine.receive_data(chunk)
        while (event := engine.next_event()) is not NEED_DATA:
            assert isinstance(event, BACKEND_EVENTS), event
            assert not finished, "no events after the final one"
            if isinstance(event, BackendNeedsTLS):
                engine.trailing_data()
                engine.tls_started()
            if isinstance(event, (BackendLoggedIn, BackendFailed)):
                finished = True
                reply = event.client_reply or b""
                assert secret not in reply
                assert reply == b"" or reply.endswith(b"\r\n")
                if isinstance(event, BackendFailed):
                    assert secret.decode() not in event.log_text
        sent.append(engine.data_to_send())
    return sent

