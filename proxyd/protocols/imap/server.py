"""ImapLoginServer: the client-facing pre-login IMAP engine, after Dovecot 2.3's imap-login.

Theory of operation
-------------------
The engine is sans-IO (see ``proxyd.protocols.events`` for the driver loop).
Internally it replays how Dovecot's ``imap-login`` reads a socket, because
several client-visible outcomes (``* BYE Input buffer full, aborting``, which
command a pipelined byte belongs to) depend on it:

* ``receive_data()`` only queues bytes ("still in the kernel").  Each *read*
  moves at most as many bytes as fit into a 1026-byte input buffer
  (:class:`~proxyd.protocols.imap.grammar.InputBuffer`), and after each read
  the commands in the buffer are handled until one needs more input.  A read
  into a full buffer is Dovecot's ``Input buffer full``.
* Commands are parsed by :class:`~proxyd.protocols.imap.grammar.ImapParser`
  exactly as ``client_handle_input()`` drives Dovecot's parser: tag, command
  name, then either the whole argument list (most commands), the mechanism name
  plus one raw SASL line of up to 8192 bytes (``AUTHENTICATE``), or one ID
  argument at a time (``ID``, so a long ID fits the small buffer).
* Reading stops while the driver owns the session: after ``AuthBegin`` /
  ``AuthContinue`` (until ``sasl_challenge``, ``auth_failed``,
  ``auth_backend_reply`` or ``login_succeeded``), after ``StartTLS`` (until
  ``tls_started``) and for good after ``Close`` or ``login_succeeded``.  Input
  keeps arriving meanwhile and waits, as in Dovecot, which removes its read
  callback while an auth request is pending.  When the driver resumes the
  engine, buffered commands are handled at once (Dovecot's ``io_set_pending``).
* After ``StartTLS`` nothing more is parsed from the plaintext: whatever the
  client pipelined is returned by ``trailing_data()`` for the driver to feed
  into the TLS handshake, where it fails harmlessly (what Dovecot does).

States (``state``) and the triggers that move between them are the table
``TRANSITIONS`` below; a driver call in the wrong state raises
:class:`EngineUsageError`.  The engine keeps no clock: timeouts and idle
disconnects are the driver's (``close()``), and the tempfail timestamp comes
from an injectable ``clock``.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from proxyd.protocols.buffer import MAX_INBUF_SIZE
from proxyd.protocols.engine import LoginEngineBase, Refusal, State, Trigger
from proxyd.protocols.events import (
    AuthContinue,
    AuthRefused,
    ClientFailure,
    LogInfo,
    LoginPolicy,
    TrustedClientInfo,
)
from proxyd.protocols.imap import ident, replies
from proxyd.protocols.imap.grammar import (
    ID_KEY_MAX_LEN,
    MAX_LINE_LENGTH,
    TAG_MAX_LEN,
    Arg,
    ArgType,
    ImapParseError,
    ImapParser,
    quote_quoted,
)
from proxyd.protocols.imap.replies import Status
from proxyd.protocols.sasl import decode_base64, is_base64_text
from proxyd.protocols.sessionid import MAX_SESSION_ID_LEN

#: Dovecot's ``LOGIN_MAX_AUTH_BUF_SIZE``.
MAX_AUTH_LINE: Final = 8192
#: Dovecot's ``LOGIN_MAX_CLIENT_ID_LEN``.
MAX_CLIENT_ID_LEN: Final = 256
#: Dovecot's ``MAX_MECH_NAME`` (log sanitising).


# Results of command handlers, as in Dovecot (ret values of the cmd_* functions).
_UNKNOWN: Final = -2  # unknown command
_BAD: Final = -1  # bad arguments: counts as an invalid command
_WAIT: Final = 0  # authentication started (or the client is gone): stop reading
_DONE: Final = 1  # replied; go on with the next command

#: status and resp-code of each refusal before the auth process (Dovecot's imap-login)
_REFUSALS: Final[dict[Refusal, tuple[Status, str | None]]] = {
    Refusal.SSL_REQUIRED: (Status.NO, "PRIVACYREQUIRED"),
    Refusal.UNSUPPORTED_MECH: (Status.NO, "ALERT"),
    Refusal.PLAINTEXT_DISABLED: (Status.NO, "PRIVACYREQUIRED"),
    Refusal.INVALID_BASE64: (Status.BAD, None),
}


class _IdState(enum.Enum):
    LIST = 0
    KEY = 1
    VALUE = 2


@dataclass
class _IdCommand:
    """One ID command being read argument by argument, and what a trusted peer told us in it."""

    parser: ImapParser
    state: _IdState = _IdState.LIST
    key: bytes = b""
    applied: bool = False
    remote_ip: str | None = None
    remote_port: int | None = None
    local_ip: str | None = None
    local_port: int | None = None
    proxy_ttl: int | None = None
    session_id: str | None = None
    forward: dict[str, str] = field(default_factory=dict)
    log: ident.IdLog | None = None  # imap_id_log: the fields logged so far

    def trusted_info(self) -> TrustedClientInfo:
        return TrustedClientInfo(
            remote_ip=self.remote_ip,
            remote_port=self.remote_port,
            local_ip=self.local_ip,
            local_port=self.local_port,
            proxy_ttl=self.proxy_ttl,
            session_id=self.session_id,
            forward_fields=dict(self.forward),
        )


@dataclass(frozen=True, slots=True)
class ImapOptions:
    """The IMAP-only settings of the pre-login dialogue."""

    capability: str = ""  # imap_capability ("" = Dovecot's banner, "+X" = banner plus X)
    id_retain: bool = False  # imap_id_retain: keep the client's ID for the backend
    id_send: str = "name *"  # imap_id_send: what the ID reply says
    id_log: str = ""  # imap_id_log: the client's ID fields to log ("*" all)
    literal_minus: bool = False  # imap_literal_minus: LITERAL- instead of LITERAL+


class ImapLoginServer(LoginEngineBase):
    """The pre-login IMAP dialogue with one client (Dovecot 2.3 ``imap-login``).

    The greeting is queued on construction.  ``hostname`` and ``clock`` feed
    the tempfail text ``[<host>:<YYYY-mm-dd HH:MM:SS>]``.
    """

    def __init__(
        self,
        policy: LoginPolicy,
        options: ImapOptions = ImapOptions(),
        *,
        max_line: int = MAX_LINE_LENGTH,
        max_inbuf: int = MAX_INBUF_SIZE,
        max_auth_line: int = MAX_AUTH_LINE,
        hostname: Callable[[], str] = socket.gethostname,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        super().__init__(
            policy, max_inbuf=max_inbuf, max_auth_line=max_auth_line, hostname=hostname, clock=clock
        )
        self._options = options
        self._max_line = max_line
        self._parser = ImapParser(
            self._buf,
            self._send_literal_continuation,
            max_line_size=max_line,
            literal_minus=options.literal_minus,
        )
        # client_handle_input() state
        self._cmd_tag: str | None = None
        self._cmd_name: str | None = None
        self._cmd_finished = False
        self._skip_line = False
        # misc per-connection flags
        self._starttls_done = False
        self._ignores_capability_resp_code = False
        self._id: _IdCommand | None = None
        self._id_logged = False
        self._client_id_parts: list[bytes] | None = None
        self._out += replies.greeting(policy, options.capability, options.literal_minus)

    # -- public API ------------------------------------------------------

    @property
    def current_tag(self) -> str:
        """Tag of the command being handled (``*`` when there is none)."""
        return self._cmd_tag if self._cmd_tag is not None else "*"

    @property
    def client_ignores_capability_resp_code(self) -> bool:
        """The client sent CAPABILITY before any STARTTLS (Dovecot's flag of that name)."""
        return self._ignores_capability_resp_code

    @property
    def client_id(self) -> str | None:
        """The retained ID pairs (``imap_id_retain``), quoted as Dovecot keeps them, or None."""
        if self._client_id_parts is None:
            return None
        return b" ".join(self._client_id_parts).decode("ascii")

    def auth_failed(self, failure: ClientFailure, reason: str | None = None) -> None:
        """Answer the running authentication with Dovecot's failure text and read commands again.

        ``reason`` is the passdb's ``reason=`` where Dovecot shows one (login
        disabled, authz, expired, a failure with reason); leave it None for a
        plain wrong password and for passdb tempfails (the timestamped text).
        """
        reply = replies.auth_failure_reply(
            self._cmd_tag, failure, reason, hostname=self._hostname(), now=self._clock()
        )
        self._end_auth(reply)

    def login_succeeded(self, reply: bytes) -> None:
        super().login_succeeded(reply)
        self._parser.reset()

    def _tls_ready(self) -> None:
        self._parser.reset()
        self._skip_line = False
        self._cmd_finished = True
        self._starttls_done = True

    def close(self, text: str | None = None, *, resp_code: str | None = None) -> None:
        """Driver-initiated disconnect: queue ``* BYE [resp_code] text`` (if given) and close.

        For example ``Disconnected for inactivity.``, ``Connection queue full``
        or ``Internal login failure. ...`` with ``resp_code="UNAVAILABLE"``.
        """
        if self._state is State.CLOSED:
            return
        if text is not None:
            self._out += replies.reply_line(None, Status.BYE, text, resp_code)
        self._transition(Trigger.CLOSE)

    # -- state handling --------------------------------------------------

    def _goodbye_line(self, text: str) -> bytes:
        return replies.reply_line(None, Status.BYE, text)

    def _refusal_reply(self, why: Refusal) -> bytes:
        status, code = _REFUSALS[why]
        return replies.reply_line(self._cmd_tag, status, why.value, code)

    def _reply(self, status: Status, text: str, code: str | None = None) -> None:
        self._out += replies.reply_line(self._cmd_tag, status, text, code)

    def _send_literal_continuation(self) -> None:
        self._out += b"+ OK\r\n"

    # -- reading ---------------------------------------------------------

    def _handle_input(self) -> bool:
        """Dovecot's ``client_handle_input()``: True to go on with the next command."""
        if self._cmd_finished:
            self._cmd_tag = None
            self._cmd_name = None
            self._parser.reset()
            if self._skip_line:
                if not self._buf.skip_line():
                    return False
                self._skip_line = False
            self._cmd_finished = False

        if self._cmd_tag is None:
            ret, tag = self._parser.read_tag()
            if ret == 0:
                return False
            if ret < 0 or tag is None or len(tag) > TAG_MAX_LEN:
                # Never echo an invalid tag (it might be an HTTP request).
                self._skip_line = True
                self._cmd_finished = True
                return self._invalid_command()
            self._cmd_tag = tag

        if self._cmd_name is None:
            ret, name = self._parser.read_command_name()
            if ret == 0:
                return False
            if ret < 0 or name is None:
                self._skip_line = True
                self._cmd_finished = True
                return self._invalid_command()
            self._cmd_name = name
        return self._input_next_cmd(self._cmd_name.upper())

    def _input_next_cmd(self, name: str) -> bool:
        if name == "AUTHENTICATE":
            ret, parsed = self._cmd_authenticate()
            if ret == 0 and not parsed:
                return False
        elif name == "ID":
            ret = self._cmd_id()
            if ret == 0:
                return False
            if ret < 0:
                ret = _DONE  # a failed ID already sent its BAD; it is no invalid command
        else:
            try:
                args = self._parser.read_args()
            except ImapParseError as error:
                return self._parser_error(error)
            if args is None:
                return False
            self._buf.skip_line()
            ret = self._execute(name, args)

        if self._state is State.CLOSED:
            return False
        self._cmd_finished = True
        if ret == _UNKNOWN and self.current_tag.upper() == "LOGIN":
            self._reply(Status.BAD, replies.FORGOT_TAG_MSG)
        elif ret < 0 and not self._invalid_command():
            return False
        return ret != _WAIT and self._state is State.NOT_AUTHENTICATED

    def _parser_error(self, error: ImapParseError) -> bool:
        """Dovecot's ``client_handle_parser_error()``; False when the client is gone."""
        if error.fatal:
            self._disconnect(error.message, error.message)
            return False
        self._reply(Status.BAD, error.message)
        self._cmd_finished = True
        self._skip_line = True
        return True

    def _invalid_command(self) -> bool:
        if self._cmd_tag is None:
            self._cmd_tag = "*"
        if not self._bad_command("Too many invalid commands", replies.TOO_MANY_BAD_MSG):
            return False
        self._reply(Status.BAD, replies.BAD_COMMAND_MSG)
        return True

    # -- commands ----------------------------------------------------------

    def _execute(self, name: str, args: tuple[Arg, ...]) -> int:
        if name == "LOGIN":
            return self._cmd_login(args)
        if name == "CAPABILITY":
            if not self._starttls_done:
                self._ignores_capability_resp_code = True
            caps = replies.capability_string(
                self._policy, self._options.capability, self._options.literal_minus
            )
            self._out += f"* CAPABILITY {caps}\r\n".encode()
            self._reply(
                Status.OK, "Pre-login capabilities listed, post-login capabilities have more."
            )
            return _DONE
        if name == "STARTTLS":
            return self._cmd_starttls()
        if name == "NOOP":
            self._reply(Status.OK, "NOOP completed.")
            return _DONE
        if name == "LOGOUT":
            self._out += replies.reply_line(None, Status.BYE, "Logging out")
            self._reply(Status.OK, "Logout completed.")
            self._disconnect("Aborted login by logging out")
            return _DONE
        if name == "ENABLE":
            self._out += b"* ENABLED\r\n"
            self._reply(Status.OK, "ENABLE ignored in non-authenticated state.")
            return _DONE
        return _UNKNOWN

    def _cmd_starttls(self) -> int:
        if self._policy.tls_active:
            self._reply(Status.BAD, "TLS is already active.")
        elif not self._policy.tls_available:
            self._reply(Status.BAD, "TLS support isn't enabled.")
        else:
            self._reply(Status.OK, "Begin TLS negotiation now.")
            self._begin_tls()
        return _DONE

    def _cmd_login(self, args: tuple[Arg, ...]) -> int:
        if len(args) != 2:
            return _BAD
        user, password = args[0].astring(), args[1].astring()
        if user is None or password is None:
            return _BAD
        if not self._check_plaintext_auth():
            return _DONE
        return self._auth_begin(b"PLAIN", None, login_response=b"\0" + user + b"\0" + password)

    def _check_plaintext_auth(self) -> bool:
        """Dovecot's ``client_check_plaintext_auth(pass_sent=TRUE)``."""
        if self._policy.plaintext_allowed():
            return True
        self._out += replies.reply_line(None, Status.BAD, replies.PLAINTEXT_EXPOSED_NOTICE, "ALERT")
        self._reply(Status.NO, replies.AUTH_PLAINTEXT_DISABLED_MSG, "PRIVACYREQUIRED")
        self._auth_attempts += 1
        self._events.append(AuthRefused("Login failed: Plaintext authentication disabled"))
        return False

    def _cmd_authenticate(self) -> tuple[int, bool]:
        """``AUTHENTICATE <mech> [<ir>]``: returns (result, whether the line was complete)."""
        if not self._auth_mech_parsed:
            data = self._buf.peek()
            end = next((i for i, byte in enumerate(data) if byte in b" \r\n"), None)
            if end is None:
                return _WAIT, False
            if end == 0:
                self._skip_line = True
                return _BAD, False
            self._auth_mech_raw = data[:end]
            self._auth_mech_parsed = True
            self._buf.skip(end + 1 if data[end] == 0x20 else end)
        ret = self._auth_read_line()
        if ret <= 0:
            return (_BAD if ret < 0 else _WAIT), False
        self._auth_mech_parsed = False
        line = bytes(self._auth_response)
        self._auth_response.clear()
        initial: bytes | None
        if line == b"":
            initial = None
        elif line == b"=":
            initial = b""
        else:
            initial = line
        return self._auth_begin(self._auth_mech_raw, initial), True

    def _auth_parse_response(self) -> None:
        """A continuation line from the client (Dovecot's ``client_auth_parse_response()``)."""
        if (line := self._response_line()) is None:
            return
        if line == b"*":
            self._abort_auth(replies.reply_line(self._cmd_tag, Status.BAD, replies.AUTH_ABORTED_MSG))
            return
        if not is_base64_text(line):
            text, status, code = replies.INVALID_BASE64_RESPONSE_MSG, Status.NO, "ALERT"
        elif (decoded := decode_base64(line)) is None:
            text, status, code = replies.INVALID_BASE64_CONTINUED_MSG, Status.BAD, None
        else:
            self._events.append(AuthContinue(decoded))
            return
        self._refuse_response(replies.reply_line(self._cmd_tag, status, text, code), text)

    # -- ID ----------------------------------------------------------------

    def _cmd_id(self) -> int:
        """``ID``, one argument at a time (Dovecot's ``cmd_id()``): -1 failed, 0 more data, 1 done."""
        if self._id is None:
            if self._client_id_parts is not None:
                self._client_id_parts = []
            parser = ImapParser(
                self._buf,
                self._send_literal_continuation,
                max_line_size=self._max_line,
                literal_minus=self._options.literal_minus,
            )
            self._id = _IdCommand(parser)
            first = True
        else:
            first = False
        command = self._id
        while True:
            try:
                args = command.parser.read_args(1, inside_list=not first, stop_at_list=first)
            except ImapParseError as error:
                if not self._parser_error(error):
                    self._id = None
                    return _WAIT
                self._id_done()
                return -1
            if args is None:
                return _WAIT
            if not args:
                break  # end of the list or of the line
            ret = self._id_arg(command, args[0])
            if ret < 0:
                self._reply(Status.BAD, replies.INVALID_ID_MSG)
                self._id_done()
                return -1
            if ret > 0:
                break  # ID NIL
            command.parser.reset()
            first = False
        log = command.log if not self._id_logged else None
        self._id_logged = True
        self._out += f"* ID {ident.id_reply(self._options.id_send)}\r\n".encode()
        self._reply(Status.OK, "ID completed.")
        self._id_done()  # the trusted peer's addresses first: Dovecot's line shows them
        if log is not None:
            self._events.append(LogInfo(log.message()))
        return _DONE

    def _id_done(self) -> None:
        command = self._id
        self._id = None
        self._skip_line = True
        if command is not None and command.applied:
            self._events.append(command.trusted_info())

    def _id_arg(self, command: _IdCommand, arg: Arg) -> int:
        if command.state is _IdState.LIST:
            if arg.type is ArgType.NIL:
                return 1
            if arg.type is not ArgType.LIST:
                return -1
            if self._options.id_log and not self._id_logged:
                command.log = ident.IdLog(self._options.id_log)
            command.state = _IdState.KEY
        elif command.state is _IdState.KEY:
            key = arg.string()
            if key is None or len(key) > ID_KEY_MAX_LEN:
                return -1
            command.key = key
            command.state = _IdState.VALUE
        else:
            if arg.type is ArgType.NIL:
                value = None
            else:
                value = arg.string()
                if value is None:
                    return -1
            self._id_pair(command, command.key, value)
            command.state = _IdState.KEY
        return 0

    def _id_pair(self, command: _IdCommand, key: bytes, value: bytes | None) -> None:
        if command.log is not None:
            command.log.add(key, value)
        special = _special_id_key(key)
        if special is not None:
            # Applied only for trusted peers, on their first ID, and never for NIL.
            if self._policy.trusted and not self._id_logged and value is not None:
                _apply_special(command, special, key, value)
            return
        if not self._options.id_retain:
            return
        pair_len = len(key) + 2 + 1 + (3 if value is None else len(value)) + 2
        parts = self._client_id_parts
        if parts is None:
            parts = self._client_id_parts = []
        elif len(b" ".join(parts)) + pair_len >= MAX_CLIENT_ID_LEN:
            return
        parts.append(quote_quoted(key) + b" " + (b"NIL" if value is None else quote_quoted(value)))


_SPECIAL_ID_KEYS: Final = (
    "x-originating-ip",
    "x-originating-port",
    "x-connected-ip",
    "x-connected-port",
    "x-proxy-ttl",
    "x-session-id",
    "x-session-ext-id",
)
_FORWARD_PREFIX: Final = b"x-forward-"


def _special_id_key(key: bytes) -> str | None:
    lowered = key.lower()
    if lowered.startswith(_FORWARD_PREFIX):
        return "x-forward-"
    name = lowered.decode("latin-1")
    return name if name in _SPECIAL_ID_KEYS else None


def _parse_ip(value: bytes) -> str | None:
    """Dovecot's ``net_addr2ip()``: an IPv4 or IPv6 address (IPv6 may be in brackets)."""
    text = value.decode("latin-1")
    if ":" in text and text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _parse_uint(value: bytes, limit: int) -> int | None:
    if not value or not value.isdigit():
        return None
    number = int(value)
    return number if number <= limit else None


def _apply_special(command: _IdCommand, special: str, key: bytes, value: bytes) -> None:
    """Take one ``x-*`` ID value from a trusted peer; invalid values are ignored, as in Dovecot."""
    if special == "x-forward-":
        name = key[len(_FORWARD_PREFIX) :].decode("utf-8", "replace")
        command.forward[name] = value.decode("utf-8", "replace")
    elif special == "x-originating-ip":
        command.remote_ip = _parse_ip(value) or command.remote_ip
    elif special == "x-connected-ip":
        command.local_ip = _parse_ip(value) or command.local_ip
    elif special == "x-originating-port":
        command.remote_port = _parse_uint(value, 65535) or command.remote_port
    elif special == "x-connected-port":
        command.local_port = _parse_uint(value, 65535) or command.local_port
    elif special == "x-proxy-ttl":
        ttl = _parse_uint(value, 2**32 - 1)
        command.proxy_ttl = command.proxy_ttl if ttl is None else ttl
    elif len(value) <= MAX_SESSION_ID_LEN:
        command.session_id = value.decode("utf-8", "replace")
    command.applied = True
