"""SubmissionLoginServer: the client-facing pre-login SMTP engine, after Dovecot's submission-login.

Theory of operation
-------------------
Sans-IO like the other login engines (``proxyd.protocols.events``).  The
greeting is ``220 <hostname> <login_greeting>``; commands are lines:

* ``EHLO``/``HELO`` are answered with Dovecot's pre-login capabilities (AUTH
  with the mechanisms allowed now, STARTTLS while TLS can still start) and
  remembered: the backend gets them in XCLIENT ``HELO=`` (when the name
  parses as lib-smtp parses it) and ``PROTO=``;
* under ``ssl = required`` before TLS, every command but EHLO, STARTTLS,
  NOOP and QUIT is ``530 5.7.0 TLS required.`` (lib-smtp's ``tls_required``);
* ``AUTH <mech> [<initial response>]`` becomes ``AuthBegin``; challenges go
  out as ``334 <base64>``, the client answers with a base64 line (``*`` aborts);
* ``NOOP``/``RSET`` (``250 2.0.0 OK``), ``QUIT``, ``STARTTLS``;
* ``XCLIENT`` from a client in ``login_trusted_networks`` (a proxy in front
  of us; the EHLO reply offers it only to those) sets the real client's
  address, port, TTL, session and ``forward_*`` fields
  (``TrustedClientInfo``) and its HELO name, protocol and login, which go
  on in our own XCLIENT to the backend; it is answered with a new greeting,
  as lib-smtp does.  Anyone else gets ``550 5.7.14 You are not from trusted IP``;
* everything a session does after login (``MAIL``, ``RCPT``, ``DATA``, ``BDAT``,
  ``VRFY``, ...) is ``530 5.7.0 Authentication required.``, anything else
  ``500 5.5.1 Unknown command``; a line lib-smtp's parser refuses (a name that
  is not letters, a second space after it, control characters or broken UTF-8
  in the parameters) ``500 5.5.2 Invalid command syntax``.

Bad commands are counted as lib-smtp counts them: every reply 500, 501 or 503
(whatever the command) adds one, any other reply starts the count again; the
reply that takes the count past ten (submission-login's
``CLIENT_MAX_BAD_COMMANDS``) is replaced by ``421 4.7.0 <hostname> Too many
invalid commands.`` and the session ends (lib-smtp terminates while the
command is still queued, so its reply never goes out; checked against
Dovecot 2.3.19).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime
from typing import Final

from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.engine import LoginEngineBase, Refusal, State, Trigger
from proxyd.protocols.events import (
    AuthContinue,
    ClientFailure,
    Close,
    LoginPolicy,
    TrustedClientInfo,
)
from proxyd.protocols.sasl import decode_base64, is_base64_text
from proxyd.protocols.submission import replies
from proxyd.protocols.submission.replies import SubmissionOptions, reply
from proxyd.protocols.submission.xclient import XclientError, is_helo_domain, parse_xclient
from proxyd.protocols.texts import (
    AUTH_ABORTED_MSG,
    INVALID_BASE64_CONTINUED_MSG,
    INVALID_BASE64_RESPONSE_MSG,
)
from proxyd.protocols.xclient import decode_forward

#: lib-smtp's ``SMTP_COMMAND_PARSER_MAX_COMMAND_LENGTH``
MAX_COMMAND_NAME: Final = 32
#: submission-login's ``command_limits``: parameters (``LOGIN_MAX_INBUF_SIZE``) and an AUTH
#: response line (``LOGIN_MAX_AUTH_BUF_SIZE``); a longer line is ``500 5.5.2 Line too long``
MAX_PARAMETERS: Final = 4096
MAX_AUTH_LINE: Final = 8192
#: the longest command line held: name, SP, parameters, CRLF
MAX_LINE: Final = MAX_COMMAND_NAME + 1 + MAX_PARAMETERS + 2
#: submission-login's ``CLIENT_MAX_BAD_COMMANDS``: more bad commands in a row end the session
MAX_BAD_COMMANDS: Final = 10
#: replies that count as a bad command (``smtp_server_command_submit_reply()``)
_BAD_REPLIES: Final = (b"500", b"501", b"503")
#: the ``421`` enhanced code of a driver's goodbye, by its text (``submission_client_notify_disconnect()``)
_GOODBYE_CODES: Final = {
    "Disconnected for inactivity.": "4.4.2",
    "Disconnected for inactivity during authentication.": "4.4.2",
    "Server shutting down.": "4.3.2",
}
#: reply code and enhanced code of each refusal before the auth process (submission-login)
_REFUSALS: Final[dict[Refusal, tuple[int, str]]] = {
    Refusal.SSL_REQUIRED: (530, "5.7.0"),
    Refusal.UNSUPPORTED_MECH: (504, "5.5.4"),
    Refusal.PLAINTEXT_DISABLED: (523, "5.7.10"),
    Refusal.INVALID_BASE64: (501, "5.5.2"),
}
#: lib-smtp's commands that need a login (submission-login registers no others: BURL,
#: EXPN, ETRN are unknown commands before login)
_NEED_AUTH: Final = frozenset({"MAIL", "RCPT", "DATA", "BDAT", "VRFY"})
#: every command lib-smtp knows, and those it takes before TLS when TLS is required
_KNOWN: Final = _NEED_AUTH | {"EHLO", "HELO", "AUTH", "STARTTLS", "RSET", "NOOP", "QUIT", "XCLIENT"}
_PRETLS: Final = frozenset({"EHLO", "STARTTLS", "NOOP", "QUIT"})


class SubmissionLoginServer(LoginEngineBase):
    """The pre-login Submission dialogue with one client (Dovecot's ``submission-login``)."""

    def __init__(
        self,
        policy: LoginPolicy,
        options: SubmissionOptions = SubmissionOptions(),  # noqa: B008 - frozen
        *,
        hostname: Callable[[], str] = socket.gethostname,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        super().__init__(
            policy, max_inbuf=MAX_LINE, max_auth_line=MAX_AUTH_LINE, hostname=hostname, clock=clock
        )
        self._buf = InputBuffer(MAX_LINE)
        self._options = options
        #: the client's EHLO/HELO domain, and whether it used HELO (RFC 821 SMTP)
        self._helo: str | None = None
        self._old_smtp = False
        #: what a trusted proxy in front of us said in XCLIENT HELO=/PROTO=/LOGIN=
        self._proxy_helo: str | None = None
        self._proxy_proto: str | None = None
        self.proxy_login: str | None = None
        self._bad_counter = 0
        #: the rest of a line that was too long is being thrown away
        self._skipping = False
        self._out += replies.greeting(policy, options)

    # -- driver API ------------------------------------------------------

    @property
    def helo(self) -> str | None:
        """The HELO name for the backend's XCLIENT: a trusted proxy's, else the client's own."""
        return self._proxy_helo or self._helo

    @property
    def proto(self) -> str:
        """XCLIENT ``PROTO=`` for the backend (lib-smtp's ``smtp_server_connection_get_proxy_data()``)."""
        if self._proxy_proto is not None:
            return self._proxy_proto
        return "SMTP" if self._old_smtp else "ESMTP"

    @property
    def hostname_for_backend(self) -> str:
        """Our own name, for the EHLO to the backend (Dovecot's ``hostname``)."""
        return self._options.hostname

    def auth_failed(self, failure: ClientFailure, reason: str | None = None) -> None:
        self._end_auth(
            replies.auth_failure_reply(failure, reason, hostname=self._hostname(), now=self._clock())
        )

    def _tls_ready(self) -> None:
        """After STARTTLS the client starts over with EHLO (RFC 3207)."""
        self._helo = None
        self._old_smtp = False

    def close(self, text: str | None = None) -> None:
        """Driver-initiated disconnect: ``421 <code> <hostname> <text>`` (if given), as
        lib-smtp's ``smtp_server_connection_terminate()`` words it."""
        if self._state is State.CLOSED:
            return
        if text is not None:
            code = _GOODBYE_CODES.get(text, "4.0.0")
            self._out += reply(421, code, f"{self._options.hostname} {text}")
        self._transition(Trigger.CLOSE)

    # -- plumbing ----------------------------------------------------------

    def _challenge_line(self, challenge_b64: bytes) -> bytes:
        return b"334 " + challenge_b64 + b"\r\n"

    def _goodbye_line(self, text: str) -> bytes:
        return reply(421, "4.7.0", text)

    def _refusal_reply(self, why: Refusal) -> bytes:
        code, enhanced = _REFUSALS[why]
        return reply(code, enhanced, why.value)

    # -- commands ----------------------------------------------------------

    def _end_auth(self, reply_bytes: bytes) -> None:
        start = len(self._out)
        super()._end_auth(reply_bytes)
        self._count_reply(start, "AUTH")

    def _count_reply(self, start: int, command: str | None) -> None:
        """lib-smtp's consecutive bad-command limit, after the reply that begins at ``start``.

        The reply that passes the limit is not sent: lib-smtp ends the session while
        the command is still queued, so its log reason names a known ``command`` as
        unfinished (``smtp_server_connection_disconnect()``).
        """
        if bytes(self._out[start : start + 3]) in _BAD_REPLIES:
            self._bad_counter += 1
        else:
            self._bad_counter = 0
        if self._bad_counter > MAX_BAD_COMMANDS:
            del self._out[start:]
            text = "Too many invalid commands."
            self._out += reply(421, "4.7.0", f"{self._options.hostname} {text}")
            self._transition(Trigger.CLOSE)
            unfinished = f" (unfinished {command} command)" if command else ""
            self._events.append(Close(text + unfinished))

    def _handle_input(self) -> bool:
        if self._skipping:
            if not self._buf.skip_line():
                self._buf.take_all()
                return False
            self._skipping = False
        start = len(self._out)
        line = self._buf.next_line()
        known: str | None = None
        if line is None:
            if not self._buf.full:
                return False
            # lib-smtp answers and skips to the end of the line; the session goes on
            self._buf.take_all()
            self._skipping = True
            self._out += replies.LINE_TOO_LONG
        else:
            known = self._execute(line)
        if self._state is State.NOT_AUTHENTICATED:
            # an AUTH exchange is counted when it ends (_end_auth)
            self._count_reply(start, known)
        return self._state is State.NOT_AUTHENTICATED

    def _execute(self, line: bytes) -> str | None:
        """Run one command line; the command's name if lib-smtp knows the command."""
        command = _parse_command(line)
        if isinstance(command, bytes):
            self._out += command
            return None
        name, args = command
        if name not in _KNOWN:
            self._out += replies.UNKNOWN_COMMAND
            return None
        self._run(name, args)
        return name

    def _run(self, name: str, args: bytes) -> None:
        policy = self._policy
        if name not in _PRETLS and policy.ssl == "required" and not policy.secured:
            # lib-smtp's tls_required: answered before the command itself (AUTH included)
            self._out += replies.TLS_REQUIRED
        elif name in ("EHLO", "HELO"):
            self._cmd_hello(name, args)
        elif name == "AUTH":
            self._cmd_auth(args)
        elif name == "NOOP":
            error = _string_error(args)
            self._out += replies.OK if error is None else reply(501, "5.5.4", f"Invalid string parameter: {error}")
        elif args and name in ("RSET", "QUIT"):
            self._out += replies.INVALID_PARAMETERS
        elif name == "RSET":
            self._out += replies.OK
        elif name == "QUIT":
            self._out += replies.BYE
            self._disconnect("Aborted login by logging out")
        elif name == "STARTTLS":
            self._cmd_starttls(args)
        elif name == "XCLIENT":
            self._cmd_xclient(args)
        else:
            self._out += replies.AUTH_REQUIRED

    def _cmd_hello(self, name: str, args: bytes) -> None:
        if not args:
            self._out += replies.MISSING_HOSTNAME
            return
        # smtp_helo_domain_parse(): a name that does not parse is answered all the same,
        # but not forwarded in XCLIENT HELO=
        domain = args.split(b" ", 1)[0].decode("utf-8", "replace")
        self._old_smtp = name == "HELO"
        self._helo = domain if is_helo_domain(domain, literal=not self._old_smtp) else None
        if name == "EHLO":
            self._out += replies.ehlo_reply(self._policy, self._options)
        else:
            self._out += f"250 {self._options.hostname}\r\n".encode()

    def _cmd_xclient(self, args: bytes) -> None:
        """lib-smtp's ``smtp_server_cmd_xclient()`` with submission-login's callback."""
        if not self._policy.trusted:
            self._out += replies.XCLIENT_UNTRUSTED
            return
        try:
            data = parse_xclient(args)
        except XclientError as error:
            self._out += reply(501, "5.5.4", str(error))
            return
        forward: dict[str, str] = {}
        bad_forward = False
        if data.forward is not None:
            decoded = decode_base64(data.forward.encode())
            if decoded is None:
                bad_forward = True
            else:
                forward = decode_forward(decoded)
        # submission-login takes the addresses, TTL and session before it looks at FORWARD
        self._events.append(
            TrustedClientInfo(
                remote_ip=data.remote_ip,
                remote_port=data.remote_port,
                proxy_ttl=data.ttl,
                session_id=data.session_id,
                forward_fields=forward,
            )
        )
        if bad_forward:
            self._out += reply(501, "5.5.4", "Invalid FORWARD parameter")
            return
        # the rest is lib-smtp's, applied on success only
        if data.helo is not None:
            self._proxy_helo = data.helo
        if data.proto is not None:
            self._proxy_proto = data.proto
        if data.login is not None:
            self.proxy_login = data.login
        self._out += replies.greeting(self._policy, self._options)

    def _cmd_starttls(self, args: bytes) -> None:
        if self._policy.tls_active:
            self._out += replies.TLS_ACTIVE
        elif not self._policy.tls_available:
            self._out += replies.TLS_NOT_ENABLED
        elif args:
            self._out += replies.INVALID_PARAMETERS
        else:
            self._out += replies.STARTTLS_BEGIN
            self._begin_tls()

    def _cmd_auth(self, args: bytes) -> None:
        """lib-smtp's ``AUTH <mech> [<initial response>]``: split at single spaces."""
        words = args.split(b" ") if args else []
        if not words:
            self._out += replies.MISSING_MECHANISM
        elif len(words) > 2:
            self._out += replies.INVALID_PARAMETERS
        else:
            self._auth_begin(words[0], words[1] if len(words) == 2 else None)

    def _auth_parse_response(self) -> None:
        if (line := self._response_line()) is None:
            return
        if line == b"*":
            self._abort_auth(reply(501, "5.5.2", AUTH_ABORTED_MSG))
            return
        if not is_base64_text(line):
            self._refuse_response(reply(535, "5.7.8", INVALID_BASE64_RESPONSE_MSG), INVALID_BASE64_RESPONSE_MSG)
        elif (decoded := decode_base64(line)) is None:
            self._refuse_response(
                reply(501, "5.5.2", INVALID_BASE64_CONTINUED_MSG), INVALID_BASE64_CONTINUED_MSG
            )
        else:
            self._events.append(AuthContinue(decoded))


def _is_textstr(params: bytes) -> bool:
    """lib-smtp's parameter bytes: HT, SP, printable ASCII and valid UTF-8 beyond it."""
    try:
        text = params.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char == "\t" or " " <= char < "\x7f" or char >= "\x80" for char in text)


def _parse_command(line: bytes) -> tuple[str, bytes] | bytes:
    """lib-smtp's ``smtp_command_parse_line()``: (upper-case name, parameters), or the
    reply to a line it refuses (``Invalid command syntax``, ``Line too long``)."""
    end = 0
    while end < len(line) and (0x41 <= line[end] <= 0x5A or 0x61 <= line[end] <= 0x7A):
        end += 1
    if end > MAX_COMMAND_NAME:
        return replies.INVALID_SYNTAX
    name = line[:end].decode("ascii").upper()
    rest = line[end:]
    if not rest:
        return name, b""
    if rest[:1] != b" ":
        return replies.INVALID_SYNTAX
    if len(rest) - 1 > MAX_PARAMETERS:
        return replies.LINE_TOO_LONG
    params = rest[1:].rstrip(b" \t")  # trailing white space is tolerated
    if params.startswith(b" ") or not _is_textstr(params):
        return replies.INVALID_SYNTAX
    return name, params


#: RFC 5322 ``atext`` (lib-smtp's ``smtp_char_is_atext()``)
_ATEXT: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~"
)


def _string_error(params: bytes) -> str | None:
    """``smtp_string_parse()``: NOOP's optional ``String`` (an atom or a quoted string)."""
    if not params:
        return None
    i = 0
    if params[:1] == b'"':
        i = 1
        while True:
            while i < len(params) and (params[i] in (0x20, 0x21) or 0x23 <= params[i] <= 0x7E) and params[i] != 0x5C:
                i += 1
            if i >= len(params) or params[i] != 0x5C:
                break
            if i + 1 >= len(params) or not 0x20 <= params[i + 1] <= 0x7E:
                return "Invalid character after '\\' in quoted string"
            i += 2
        if i >= len(params):
            return "Premature end of quoted string"
        if params[i] != 0x22:
            return "Invalid character in quoted string"
        i += 1
    else:
        while i < len(params) and params[i] in _ATEXT:
            i += 1
    return "Invalid character in string" if i < len(params) else None
