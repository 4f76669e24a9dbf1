"""What every client-facing login engine shares: the state table and the driver-facing plumbing.

The IMAP, POP3, ManageSieve and Submission engines differ in how they read
commands and word replies; the way a driver feeds them
(``receive_data``/``next_event``/``data_to_send``), the pre-login states,
STARTTLS, login-common's ``client_auth_begin()`` and the SASL continuation
handling are the same, as in Dovecot's login-common.  A subclass calls
``super().__init__()`` and implements ``_handle_input`` (one command),
``_auth_parse_response``, and the protocol's words: ``_goodbye_line``,
``_refusal_reply`` and ``_tls_ready``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

from mypy_extensions import mypyc_attr

from proxyd.log import MAX_MECH_NAME_LEN, sanitize
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.events import (
    NEED_DATA,
    PLAINTEXT_MECHANISMS,
    PRIVATE_MECHANISMS,
    AuthAborted,
    AuthBegin,
    AuthRefused,
    Close,
    Event,
    LoginPolicy,
    StartTLS,
    _NeedData,
)
from proxyd.protocols.sasl import decode_base64, encode_base64
from proxyd.protocols.texts import (
    INVALID_BASE64_INITIAL_MSG,
    MECH_PLAINTEXT_DISABLED_MSG,
    SSL_REQUIRED_MSG,
    UNSUPPORTED_MECH_MSG,
)

#: Dovecot's reply when a client's line does not fit the input buffer
INPUT_BUFFER_FULL_MSG: Final = "Input buffer full, aborting"


# mypyc compiles no subclass of RuntimeError into a native class
@mypyc_attr(native_class=False)
class EngineUsageError(RuntimeError):
    """The driver called an engine method that the current state does not allow."""


class State(enum.StrEnum):
    """Pre-login session states (a ``StrEnum``: each compares equal to its name)."""

    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"  # reading commands
    AUTHENTICATING = "AUTHENTICATING"  # a SASL exchange is running; the driver decides
    TLS_PENDING = "TLS_PENDING"  # STARTTLS accepted; waiting for tls_started()
    PROXYING = "PROXYING"  # logged in; the driver relays bytes
    CLOSED = "CLOSED"


class Trigger(enum.Enum):
    AUTH_BEGIN = "auth_begin"
    CHALLENGE = "sasl_challenge"
    AUTH_END = "auth_end"  # failed, aborted, refused
    LOGGED_IN = "login_succeeded"
    STARTTLS = "starttls"
    TLS_STARTED = "tls_started"
    CLOSE = "close"


TRANSITIONS: Final[Mapping[tuple[State, Trigger], State]] = {
    (State.NOT_AUTHENTICATED, Trigger.AUTH_BEGIN): State.AUTHENTICATING,
    (State.NOT_AUTHENTICATED, Trigger.STARTTLS): State.TLS_PENDING,
    (State.NOT_AUTHENTICATED, Trigger.CLOSE): State.CLOSED,
    (State.AUTHENTICATING, Trigger.CHALLENGE): State.AUTHENTICATING,
    (State.AUTHENTICATING, Trigger.AUTH_END): State.NOT_AUTHENTICATED,
    (State.AUTHENTICATING, Trigger.LOGGED_IN): State.PROXYING,
    (State.AUTHENTICATING, Trigger.CLOSE): State.CLOSED,
    (State.TLS_PENDING, Trigger.TLS_STARTED): State.NOT_AUTHENTICATED,
    (State.TLS_PENDING, Trigger.CLOSE): State.CLOSED,
    (State.PROXYING, Trigger.CLOSE): State.CLOSED,
}


class Refusal(enum.Enum):
    """Why login-common's ``client_auth_begin()`` answers an attempt itself; the value is its text."""

    SSL_REQUIRED = SSL_REQUIRED_MSG
    UNSUPPORTED_MECH = UNSUPPORTED_MECH_MSG
    PLAINTEXT_DISABLED = MECH_PLAINTEXT_DISABLED_MSG
    INVALID_BASE64 = INVALID_BASE64_INITIAL_MSG


#: the auth failure code each refusal at the SASL layer leaves (Dovecot's ``last_auth_fail``)
_REFUSAL_CODES: Final = {
    Refusal.SSL_REQUIRED: None,
    Refusal.UNSUPPORTED_MECH: "mech_invalid",
    Refusal.PLAINTEXT_DISABLED: "mech_ssl_required",
    Refusal.INVALID_BASE64: "invalid_base64",
}


class LoginEngineBase(ABC):
    """The shared half of every ``<Protocol>LoginServer``."""

    def __init__(
        self,
        policy: LoginPolicy,
        *,
        max_inbuf: int,
        max_auth_line: int,
        hostname: Callable[[], str],
        clock: Callable[[], datetime],
    ) -> None:
        self._policy = policy
        self._max_auth_line = max_auth_line
        #: feed the tempfail text ``[<host>:<YYYY-mm-dd HH:MM:SS>]``
        self._hostname = hostname
        self._clock = clock
        self._state = State.NOT_AUTHENTICATED
        self._buf = InputBuffer(max_inbuf)
        self._pending = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._resume = False
        # the SASL exchange
        self._auth_attempts = 0
        self._auth_mech_parsed = False
        self._auth_mech_raw = b""
        self._auth_mech_log = ""
        self._auth_response = bytearray()
        self._awaiting_response = False
        #: invalid commands in a row (login-common's ``bad_counter``)
        self._bad_counter = 0

    @abstractmethod
    def _handle_input(self) -> bool:
        """Handle the next buffered command (Dovecot's ``client_handle_input()`` /
        ``pop3_client_input_next_cmd()``): True to go on with the next one."""

    @abstractmethod
    def _auth_parse_response(self) -> None:
        """A SASL continuation line from the client."""

    @abstractmethod
    def _goodbye_line(self, text: str) -> bytes:
        """The protocol's last line before the engine closes (``* BYE text``, ``-ERR text``...)."""

    @abstractmethod
    def _tls_ready(self) -> None:
        """Read afresh after the STARTTLS handshake (the plaintext input is gone by then)."""

    @abstractmethod
    def _refusal_reply(self, why: Refusal) -> bytes:
        """The protocol's reply to an attempt refused before the auth process (``why.value``: the text)."""

    def _disconnect(self, reason: str, text: str | None = None, /) -> None:
        """Queue the goodbye ``text`` (if any), close, and emit ``Close(reason)``."""
        if text is not None:
            self._out += self._goodbye_line(text)
        self._transition(Trigger.CLOSE)
        self._events.append(Close(reason))

    def _on_input(self) -> None:
        """One input callback: a read (Dovecot's ``client_read()``), then handle what is buffered."""
        if self._awaiting_response:
            # client_auth_input(): i_stream_read_more() returns buffered data first.
            if not len(self._buf):
                if self._pending:
                    self._buf.fill_from(self._pending)
                elif self._eof:
                    self._disconnect("Connection closed")
                    return
                else:
                    return
            self._auth_parse_response()
            return
        if self._buf.full:
            self._disconnect("Input buffer full", INPUT_BUFFER_FULL_MSG)
            return
        if self._pending:
            self._buf.fill_from(self._pending)
        elif self._eof:
            self._disconnect("Connection closed")
            return
        elif not len(self._buf):
            return
        while self._state is State.NOT_AUTHENTICATED and self._handle_input():
            pass

    def auth_backend_reply(self, reply: bytes) -> None:
        """Answer the running authentication with a backend-derived line (the protocol's form)."""
        self._end_auth(reply)

    def tls_started(self, policy: LoginPolicy) -> None:
        """The STARTTLS handshake succeeded; read commands again under ``policy``."""
        self._transition(Trigger.TLS_STARTED)
        self._policy = policy
        # The plaintext left over was handed to TLS; reading starts afresh.
        self._buf.take_all()
        self._pending.clear()
        self._tls_ready()

    def login_succeeded(self, reply: bytes) -> None:
        """Send the final login reply (the backend's, adapted); the session now belongs to the relay."""
        self._transition(Trigger.LOGGED_IN)
        self._awaiting_response = False
        self._auth_response.clear()  # a SASL response may hold the password
        self._out += reply

    def trailing_data(self) -> bytes:
        """Return and forget the client bytes not consumed.

        After ``StartTLS``: what the client pipelined behind STARTTLS/STLS (feed it to
        the TLS handshake).  After ``login_succeeded``: client bytes for the backend.
        """
        data = self._buf.take_all() + bytes(self._pending)
        self._pending.clear()
        return data

    @property
    def state(self) -> State:
        """NOT_AUTHENTICATED, AUTHENTICATING, TLS_PENDING, PROXYING or CLOSED."""
        return self._state

    @property
    def policy(self) -> LoginPolicy:
        """The policy in force (replaced by ``tls_started()``)."""
        return self._policy

    @property
    def auth_attempts(self) -> int:
        """Authentication attempts so far, counted as Dovecot counts them."""
        return self._auth_attempts

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means EOF."""
        if self._state is State.CLOSED:
            return
        if self._eof:
            raise EngineUsageError("data after EOF")
        if data:
            self._pending += data
        else:
            self._eof = True

    def next_event(self) -> Event | _NeedData:
        """The next event, or ``NEED_DATA`` when nothing can happen without input or the driver."""
        while not self._events and self._reading():
            if self._resume:
                self._resume = False
            elif not self._pending and not self._eof:
                break
            self._on_input()
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the client."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def sasl_challenge(self, challenge: bytes) -> None:
        """Send ``+ <base64>``; the client's next line becomes ``AuthContinue`` or ``AuthAborted``."""
        if self._awaiting_response:
            raise EngineUsageError("a challenge is already waiting for its response")
        self._transition(Trigger.CHALLENGE)
        self._out += self._challenge_line(encode_base64(challenge))
        self._auth_response.clear()
        self._awaiting_response = True
        self._resume = True

    def _challenge_line(self, challenge_b64: bytes) -> bytes:
        """How the protocol sends a SASL challenge (IMAP and POP3: ``+ <base64>``)."""
        return b"+ " + challenge_b64 + b"\r\n"

    def _transition(self, trigger: Trigger) -> None:
        try:
            self._state = TRANSITIONS[self._state, trigger]
        except KeyError:
            raise EngineUsageError(
                f"{trigger.value} not allowed in state {self._state.value}"
            ) from None

    def _reading(self) -> bool:
        if self._state is State.NOT_AUTHENTICATED:
            return True
        return self._state is State.AUTHENTICATING and self._awaiting_response

    def _bad_command(self, reason: str, text: str) -> bool:
        """One more invalid command in a row: False once that makes ``max_bad_commands``
        (the session then ends with ``text``, logged as ``reason``)."""
        self._bad_counter += 1
        if self._bad_counter >= self._policy.max_bad_commands:
            self._disconnect(reason, text)
            return False
        return True

    def _begin_tls(self) -> None:
        """STARTTLS accepted (its reply is queued): stop reading until ``tls_started()``."""
        self._transition(Trigger.STARTTLS)
        self._events.append(StartTLS())

    def _auth_begin(
        self, mech_raw: bytes, initial_b64: bytes | None, *, login_response: bytes | None = None
    ) -> int:
        """login-common's ``client_auth_begin()`` up to the auth request.

        ``initial_b64`` is the initial response as the client sent it (None: none;
        ``=`` or empty: an empty one); ``login_response`` is the decoded one of a
        LOGIN, USER/PASS or APOP command.  Returns 0 when the exchange started
        (reading stops), 1 when the attempt was answered here.
        """
        policy = self._policy
        self._auth_attempts += 1
        if not policy.secured and policy.ssl == "required":
            self._out += self._refusal_reply(Refusal.SSL_REQUIRED)
            self._events.append(AuthRefused("Login failed: SSL required for authentication"))
            return 1
        wanted = mech_raw.split(b"\0", 1)[0].upper()  # the C string Dovecot sees
        self._auth_mech_log = sanitize(wanted, MAX_MECH_NAME_LEN)
        mech = next((m.upper() for m in policy.mechanisms if m.upper().encode() == wanted), None)
        if mech is None or (mech in PRIVATE_MECHANISMS and login_response is None):
            return self._refuse(Refusal.UNSUPPORTED_MECH)
        if not policy.secured and policy.disable_plaintext_auth and mech in PLAINTEXT_MECHANISMS:
            return self._refuse(Refusal.PLAINTEXT_DISABLED)
        initial = login_response
        if initial is None and initial_b64 is not None:
            initial = b"" if initial_b64 in (b"", b"=") else decode_base64(initial_b64)
            if initial is None:
                return self._refuse(Refusal.INVALID_BASE64)
        self._transition(Trigger.AUTH_BEGIN)
        self._events.append(AuthBegin(mech, initial, plaintext_login=login_response is not None))
        return 0

    def _refuse(self, why: Refusal) -> int:
        self._out += self._refusal_reply(why)
        self._events.append(
            AuthRefused(f"Authenticate {self._auth_mech_log} failed: {why.value}", fail_code=_REFUSAL_CODES[why])
        )
        return 1

    def _response_line(self) -> bytes | None:
        """The client's SASL response line, once it is whole (Dovecot's
        ``client_auth_read_line()``); None: more input needed, or the client is gone."""
        if self._auth_read_line() <= 0:
            return None
        line = bytes(self._auth_response)
        self._auth_response.clear()
        self._awaiting_response = False
        return line

    def _abort_auth(self, reply: bytes) -> None:
        """The client answered ``*``: ``reply`` ends the exchange.

        The event comes first: the reply may end the session (Submission's bad-command limit).
        """
        self._events.append(AuthAborted())
        self._end_auth(reply)

    def _refuse_response(self, reply: bytes, text: str, fail_code: str | None = "invalid_base64") -> None:
        """A SASL response refused in the middle of an exchange: ``reply`` ends the attempt.

        The event comes first: the reply may end the session (Submission's bad-command limit).
        """
        self._events.append(
            # ``fail_code``: the code Dovecot's auth process gives a bad base64 answer
            AuthRefused(
                f"Authenticate {self._auth_mech_log} failed: {text}", during_exchange=True, fail_code=fail_code
            )
        )
        self._end_auth(reply)

    def _end_auth(self, reply: bytes) -> None:
        self._transition(Trigger.AUTH_END)
        self._out += reply
        self._awaiting_response = False
        self._auth_response.clear()
        self._resume = True

    def _auth_read_line(self) -> int:
        """Dovecot's ``client_auth_read_line()``: 1 for a full line, 0 for more data, -1 if gone."""
        data = self._buf.peek()
        end = data.find(b"\n")
        found = end >= 0
        if not found:
            end = len(data)
        if len(self._auth_response) + end > self._max_auth_line:
            self._disconnect("Authentication response too large")
            return -1
        self._auth_response += data[:end]
        self._buf.skip(end + 1 if found else end)
        if self._auth_response.endswith(b"\r"):
            del self._auth_response[-1:]
        return 1 if found else 0
