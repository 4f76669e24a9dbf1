"""ManageSieveLoginServer: the client-facing pre-login ManageSieve engine, after Pigeonhole's managesieve-login.

Theory of operation
-------------------
The engine is sans-IO (see ``proxyd.protocols.events`` for the driver loop).
The greeting is the capability lines followed by ``OK "<login_greeting>"``.
Each command is a word and, once its whole line (literals included) is
buffered, its arguments (:func:`~proxyd.protocols.managesieve.grammar.parse_line`):

* ``CAPABILITY``, ``NOOP [tag]``, ``LOGOUT`` and ``STARTTLS`` are answered
  here (after STARTTLS the capabilities are sent again, then
  ``OK "TLS negotiation successful."``);
* ``AUTHENTICATE "mech" ["initial response"]`` becomes ``AuthBegin``; SASL
  challenges go out as quoted base64 strings and the client answers with one
  string per line (``"*"`` aborts);
* ``XCLIENT ADDR= PORT= SESSION= TTL= FORWARD=`` from a trusted peer becomes
  ``TrustedClientInfo`` (what a ManageSieve proxy in front of us sends).

An unknown command or wrong arguments count as bad commands; the third in a
row ends the session with ``BYE "Too many invalid MANAGESIEVE commands."``.
A syntax error in the arguments is a ``NO "<parser text>"`` (not counted); a
literal larger than a command line may be is fatal, as in Pigeonhole.

Unlike Pigeonhole, which reads arguments as a stream, the engine waits for a
whole command line, so its input buffer holds one line (``MAX_LINE``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime
from typing import Final

from proxyd.protocols.engine import LoginEngineBase, Refusal, State, Trigger
from proxyd.protocols.events import (
    AuthContinue,
    ClientFailure,
    LoginPolicy,
)
from proxyd.protocols.managesieve import replies
from proxyd.protocols.managesieve.grammar import (
    MAX_LINE,
    Arg,
    ArgType,
    ParseError,
    parse_line,
    quote,
    read_word,
)
from proxyd.protocols.managesieve.replies import SieveOptions, Status
from proxyd.protocols.sasl import decode_base64
from proxyd.protocols.texts import (
    AUTH_ABORTED_MSG,
)
from proxyd.protocols.xclient import parse_xclient

#: Dovecot's ``LOGIN_MAX_AUTH_BUF_SIZE``
MAX_AUTH_LINE: Final = 8192
#: the buffer holds one whole command line, literal included
MAX_INBUF: Final = MAX_LINE + 64
_NO_ARGS: Final = ("CAPABILITY", "STARTTLS", "LOGOUT")


class ManageSieveLoginServer(LoginEngineBase):
    """The pre-login ManageSieve dialogue with one client (Pigeonhole's ``managesieve-login``)."""

    def __init__(
        self,
        policy: LoginPolicy,
        options: SieveOptions = SieveOptions(),  # noqa: B008 - frozen
        *,
        max_line: int = MAX_LINE,
        max_auth_line: int = MAX_AUTH_LINE,
        hostname: Callable[[], str] = socket.gethostname,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        super().__init__(
            policy, max_inbuf=max_line + 64, max_auth_line=max_auth_line, hostname=hostname, clock=clock
        )
        self._options = options
        self._max_line = max_line
        self._cmd: str | None = None
        self._skip_line = False
        self._out += replies.greeting(policy, options)

    # -- public API ------------------------------------------------------

    @property
    def buffered_size(self) -> int:
        """Client bytes received but not consumed (the driver's cue to stop reading)."""
        return len(self._buf) + len(self._pending)

    def auth_failed(self, failure: ClientFailure, reason: str | None = None) -> None:
        """Answer the running authentication with Pigeonhole's failure text and read commands again."""
        self._end_auth(
            replies.auth_failure_reply(failure, reason, hostname=self._hostname(), now=self._clock())
        )

    def _tls_ready(self) -> None:
        """Capabilities again, then ``OK "TLS negotiation successful."``."""
        self._cmd = None
        self._skip_line = False
        self._out += replies.capability_lines(self._policy, self._options)
        self._out += replies.reply_line(Status.OK, replies.TLS_DONE_MSG)

    def close(self, text: str | None = None, *, trylater: bool = False) -> None:
        """Driver-initiated disconnect: queue ``BYE [(TRYLATER)] "text"`` (if given) and close."""
        if self._state is State.CLOSED:
            return
        if text is not None:
            self._out += replies.reply_line(Status.BYE, text, "TRYLATER" if trylater else None)
        self._transition(Trigger.CLOSE)

    # -- plumbing ----------------------------------------------------------

    def _challenge_line(self, challenge_b64: bytes) -> bytes:
        return b'"' + challenge_b64 + b'"\r\n'

    def _goodbye_line(self, text: str) -> bytes:
        return replies.reply_line(Status.BYE, text)

    def _refusal_reply(self, why: Refusal) -> bytes:
        code = "ENCRYPT-NEEDED" if why is Refusal.SSL_REQUIRED else None
        return replies.reply_line(Status.NO, why.value, code)

    def _reply(self, status: Status, text: str, code: str | None = None) -> None:
        self._out += replies.reply_line(status, text, code)

    def _skip_bad_line(self) -> bool:
        """Drop the rest of a refused line; False when its end is not buffered yet."""
        if self._buf.skip_line():
            self._skip_line = False
            return True
        self._buf.take_all()
        return False

    # -- commands ----------------------------------------------------------

    def _handle_input(self) -> bool:
        """Pigeonhole's ``client_handle_input()``: True to go on with the next command."""
        if self._skip_line and not self._skip_bad_line():
            return False
        if self._cmd is None:
            word = read_word(self._buf.peek())
            if word is None:
                return False
            word_bytes, used = word
            self._buf.skip(used)
            self._cmd = word_bytes.decode("latin-1").upper()
        try:
            parsed = parse_line(self._buf.peek(), max_line=self._max_line)
        except ParseError as exc:
            self._cmd = None
            if exc.fatal:
                self._disconnect(exc.text, exc.text)
                return False
            self._reply(Status.NO, exc.text)
            self._buf.skip(exc.consumed)
            self._skip_line = True
            return True
        if parsed is None:
            if self._buf.full:
                self._cmd = None
                self._reply(Status.NO, "MANAGESIEVE command line too large")
                self._skip_line = True
                return True
            return False
        args, used = parsed
        self._buf.skip(used)
        command, self._cmd = self._cmd, None
        if self._execute(command, args):
            self._bad_counter = 0
        elif self._bad_command("Too many invalid commands.", replies.TOO_MANY_BAD_MSG):
            self._reply(Status.NO, replies.BAD_COMMAND_MSG)
        else:
            return False
        return self._state is State.NOT_AUTHENTICATED

    def _execute(self, name: str, args: list[Arg]) -> bool:
        """One command; False for a bad one (unknown, or wrong arguments)."""
        if name in _NO_ARGS and args:
            return False
        if name == "AUTHENTICATE":
            return self._cmd_authenticate(args)
        if name == "CAPABILITY":
            self._out += replies.capability_lines(self._policy, self._options)
            self._reply(Status.OK, replies.CAPABILITY_DONE_MSG)
        elif name == "STARTTLS":
            self._cmd_starttls()
        elif name == "NOOP":
            return self._cmd_noop(args)
        elif name == "LOGOUT":
            self._reply(Status.OK, replies.LOGOUT_MSG)
            # Pigeonhole logs this one with the "Disconnected: " prefix (imap-login does not)
            self._disconnect("Disconnected: Aborted login by logging out")
        elif name == "XCLIENT":
            return self._cmd_xclient(args)
        else:
            return False
        return True

    def _cmd_starttls(self) -> None:
        # login-common's client_cmd_starttls()
        if self._policy.tls_active:
            self._reply(Status.NO, "TLS is already active.")
        elif not self._policy.tls_available:
            self._reply(Status.NO, "TLS support isn't enabled.")
        else:
            self._reply(Status.OK, replies.STARTTLS_BEGIN_MSG)
            self._begin_tls()

    def _cmd_noop(self, args: list[Arg]) -> bool:
        if not args:
            self._reply(Status.OK, replies.NOOP_MSG)
            return True
        if len(args) > 1:
            return False
        if args[0].type is not ArgType.STRING:
            self._reply(Status.NO, replies.INVALID_ECHO_TAG_MSG)
            return True
        code = b"TAG " + quote(args[0].value)
        self._out += b"OK (" + code + b') "Done"\r\n'
        return True

    def _cmd_xclient(self, args: list[Arg]) -> bool:
        if not self._policy.trusted:
            self._reply(Status.NO, replies.XCLIENT_UNTRUSTED_MSG)
            return True
        if any(arg.type is not ArgType.ATOM for arg in args):
            return False
        parsed = parse_xclient(b" ".join(arg.value for arg in args))
        if parsed.changed:
            # applied value by value, as Pigeonhole does, even when another is invalid
            self._events.append(parsed.trusted_info())
        if not parsed.valid:
            return False
        self._reply(Status.OK, replies.XCLIENT_UPDATED_MSG)
        return True

    def _cmd_authenticate(self, args: list[Arg]) -> bool:
        """Pigeonhole's ``cmd_authenticate()``: the mechanism, then an optional initial response."""
        if not args or args[0].type is not ArgType.STRING or not args[0].value:
            return False
        mech_raw = args[0].value
        if len(args) > 2 or (len(args) == 2 and args[1].type is not ArgType.STRING):
            self._reply(Status.NO, replies.INVALID_INITIAL_RESPONSE_MSG)
            return True
        initial = args[1].value if len(args) == 2 else None
        self._auth_begin(mech_raw, initial)
        return True

    def _auth_parse_response(self) -> None:
        """A SASL response line: one string (Pigeonhole's ``managesieve_client_auth_parse_response()``)."""
        # the response is read whole (a literal may span reads): take in what has arrived
        self._buf.fill_from(self._pending)
        if self._skip_line and not self._skip_bad_line():
            return
        try:
            parsed = parse_line(self._buf.peek(), max_line=self._max_auth_line)
        except ParseError as exc:
            if exc.fatal:
                self._disconnect(f"parse error during auth: {exc.text}", exc.text)
                return
            self._buf.skip(exc.consumed)
            self._skip_line = True
            self._refuse_response_text(exc.text)
            return
        if parsed is None:
            if self._buf.full:
                self._disconnect("Authentication response too large")
            elif self._eof and not self._pending:
                self._disconnect("Connection closed")
            return
        args, used = parsed
        self._buf.skip(used)
        if not args:
            self._refuse_response_text(replies.EMPTY_RESPONSE_MSG)
            return
        if len(args) != 1 or args[0].type is not ArgType.STRING:
            self._refuse_response_text(replies.INVALID_RESPONSE_MSG)
            return
        response = args[0].value
        self._awaiting_response = False
        if response == b"*":
            self._abort_auth(replies.reply_line(Status.NO, AUTH_ABORTED_MSG))
            return
        decoded = decode_base64(response) if response else b""
        if decoded is None:
            self._refuse_response_text("Invalid base64 data in continued response", "invalid_base64")
            return
        self._events.append(AuthContinue(decoded))

    def _refuse_response_text(self, text: str, fail_code: str | None = None) -> None:
        # only a bad base64 answer has an auth failure code; string syntax errors have none
        self._refuse_response(replies.reply_line(Status.NO, text), text, fail_code)


__all__ = ["MAX_INBUF", "ManageSieveLoginServer", "SieveOptions"]
