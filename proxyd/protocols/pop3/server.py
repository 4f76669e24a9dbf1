"""Pop3LoginServer: the client-facing pre-login POP3 engine, after Dovecot 2.3's pop3-login.

Theory of operation
-------------------
The engine is sans-IO (see ``proxyd.protocols.events`` for the driver loop)
and reads its input the way Dovecot's ``pop3-login`` does, because that
decides what a client sees for odd input:

* ``receive_data()`` only queues bytes ("still in the kernel").  Each *read*
  moves at most as many bytes as fit into a 1026-byte input buffer
  (:class:`~proxyd.protocols.imap.grammar.InputBuffer`, shared with IMAP), and
  after each read the commands in the buffer are handled until one needs more
  input.  A read into a full buffer is ``-ERR Input buffer full, aborting``.
* A command name is read first (``client_read_cmd_name()``): up to eight
  characters, upper-cased, ending at SP, LF or NUL (CRs are skipped, a ninth
  character ends it too and stays for the arguments) and consumed with one SP.
  The arguments are the rest of the line, read only once the whole line is
  buffered, and end at the first NUL as a C string would.  So only the part of
  a line after the command name has to fit into the buffer.
* ``AUTH`` is read specially (``cmd_auth()``): the mechanism name, then one
  SASL line of up to 8192 bytes, however many reads that takes.  ``AUTH``
  without a mechanism lists the mechanisms.  ``AUTH`` neither raises nor resets
  the bad-command counter; every other known command resets it, an unknown one
  raises it, and the third in a row ends the session.
* ``USER``/``PASS`` become SASL ``PLAIN`` with ``\\0user\\0pass``; with APOP in
  ``auth_mechanisms`` the greeting carries a challenge and ``APOP user digest``
  becomes the APOP mechanism's ``challenge\\0user\\0digest`` (else it is
  refused with "APOP not enabled."); ``XCLIENT``/``XOIP`` from a trusted peer become
  :class:`~proxyd.protocols.events.TrustedClientInfo`.
* Reading stops while the driver owns the session: after ``AuthBegin`` /
  ``AuthContinue`` (until ``sasl_challenge``, ``auth_failed``,
  ``auth_backend_reply`` or ``login_succeeded``), after ``StartTLS`` (until
  ``tls_started``) and for good after ``Close`` or ``login_succeeded``.  When
  the driver resumes the engine, buffered commands are handled at once.
* After ``StartTLS`` nothing more is parsed from the plaintext:
  ``trailing_data()`` returns what the client pipelined, for the driver to feed
  into the TLS handshake, where it fails harmlessly (what Dovecot does).

The engine keeps no clock: timeouts are the driver's (``close()``), and the
tempfail timestamp comes from an injectable ``clock``.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Final

from proxyd.protocols.buffer import MAX_INBUF_SIZE
from proxyd.protocols.engine import LoginEngineBase, Refusal, State, Trigger
from proxyd.protocols.events import (
    AuthContinue,
    AuthRefused,
    ClientFailure,
    LoginPolicy,
)
from proxyd.protocols.pop3 import replies
from proxyd.protocols.pop3.replies import Reply
from proxyd.protocols.sasl import decode_base64, is_base64_text
from proxyd.protocols.xclient import parse_xclient

#: Dovecot's ``LOGIN_MAX_AUTH_BUF_SIZE``.
MAX_AUTH_LINE: Final = 8192
#: Dovecot's ``CLIENT_MAX_CMD_LEN`` (pop3-login).
MAX_COMMAND_NAME: Final = 8
#: Dovecot's ``MAX_MECH_NAME`` (log sanitising).

_SP: Final = 0x20
_CR: Final = 0x0D
_LF: Final = 0x0A
_NUL: Final = 0x00


def _c_string(data: bytes) -> bytes:
    """What C code sees of ``data``: everything before the first NUL."""
    return data.split(b"\0", 1)[0]


class Pop3LoginServer(LoginEngineBase):
    """The pre-login POP3 dialogue with one client (Dovecot 2.3 ``pop3-login``).

    The greeting is queued on construction.  ``hostname`` and ``clock`` feed
    the tempfail text ``[<host>:<YYYY-mm-dd HH:MM:SS>]``.
    """

    def __init__(
        self,
        policy: LoginPolicy,
        *,
        max_inbuf: int = MAX_INBUF_SIZE,
        max_auth_line: int = MAX_AUTH_LINE,
        hostname: Callable[[], str] = socket.gethostname,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        super().__init__(
            policy, max_inbuf=max_inbuf, max_auth_line=max_auth_line, hostname=hostname, clock=clock
        )
        # pop3_client_input_next_cmd() state
        self._current_cmd: str | None = None
        self._last_user: bytes | None = None
        #: the APOP challenge of the greeting (None: APOP not enabled)
        self._apop_challenge = self._new_apop_challenge(policy)
        self._out += replies.greeting(policy, self._apop_challenge)

    # -- public API ------------------------------------------------------

    def auth_failed(self, failure: ClientFailure, reason: str | None = None) -> None:
        """Answer the running authentication with Dovecot's failure text and read commands again.

        ``reason`` is the passdb's ``reason=`` where Dovecot shows one; leave it
        None for a plain wrong password and for passdb tempfails (the timestamped text).
        """
        reply = replies.auth_failure_reply(
            failure, reason, hostname=self._hostname(), now=self._clock()
        )
        self._end_auth(reply)

    def close(self, text: str | None = None, *, internal_error: bool = False) -> None:
        """Driver-initiated disconnect: queue ``-ERR text`` (if given) and close.

        For example ``Disconnected for inactivity.``; ``internal_error`` gives
        the ``-ERR [SYS/TEMP]`` prefix Dovecot uses for internal failures.
        """
        if self._state is State.CLOSED:
            return
        if text is not None:
            self._out += replies.reply_line(Reply.TEMPFAIL if internal_error else Reply.ERROR, text)
        self._transition(Trigger.CLOSE)

    # -- state handling --------------------------------------------------

    def _goodbye_line(self, text: str) -> bytes:
        return replies.reply_line(Reply.ERROR, text)

    def _tls_ready(self) -> None:
        self._current_cmd = None
        self._auth_mech_parsed = False

    def _refusal_reply(self, why: Refusal) -> bytes:
        return replies.reply_line(Reply.AUTH_ERROR, why.value)

    def _reply(self, kind: Reply, text: str) -> None:
        self._out += replies.reply_line(kind, text)

    # -- reading ---------------------------------------------------------

    def _read_command_name(self) -> str | None:
        """Dovecot's ``client_read_cmd_name()``: the upper-cased name, or None for more input."""
        data = self._buf.peek()
        name = bytearray()
        for i, byte in enumerate(data):
            if byte == _CR:
                continue
            if byte in (_SP, _LF, _NUL) or i >= MAX_COMMAND_NAME:
                self._buf.skip(i + 1 if byte == _SP else i)
                return name.decode("latin-1")
            name.append(byte - 0x20 if 0x61 <= byte <= 0x7A else byte)
        return None

    def _handle_input(self) -> bool:
        """Dovecot's ``pop3_client_input_next_cmd()``: True to go on with the next command."""
        if self._current_cmd is None:
            name = self._read_command_name()
            if name is None:
                return False
            self._current_cmd = name
        if self._current_cmd == "AUTH":
            if self._cmd_auth() <= 0:
                return False
            self._current_cmd = None
            return self._state is State.NOT_AUTHENTICATED
        line = self._buf.next_line()
        if line is None:
            return False
        command, self._current_cmd = self._current_cmd, None
        if self._execute(command, _c_string(line)):
            self._bad_counter = 0
        elif not self._bad_command("Too many bad commands", replies.TOO_MANY_BAD_MSG):
            return False
        return self._state is State.NOT_AUTHENTICATED

    # -- commands ----------------------------------------------------------

    def _execute(self, name: str, args: bytes) -> bool:
        """Dovecot's ``client_command_execute()``: False for an unknown command."""
        if name == "CAPA":
            self._out += replies.capability_reply(self._policy)
        elif name == "USER":
            self._cmd_user(args)
        elif name == "PASS":
            self._cmd_pass(args)
        elif name == "APOP":
            self._cmd_apop(args)
        elif name == "STLS":
            self._cmd_stls()
        elif name == "QUIT":
            self._reply(Reply.OK, replies.LOGOUT_MSG)
            self._disconnect("Aborted login by logging out")
        elif name == "XCLIENT":
            self._cmd_xclient(args)
        elif name == "XOIP":
            # compatibility with Zimbra's patched nginx
            self._cmd_xclient(b"ADDR=" + args)
        else:
            self._reply(Reply.ERROR, replies.UNKNOWN_COMMAND_MSG)
            return False
        return True

    def _cmd_stls(self) -> None:
        if self._policy.tls_active:
            self._reply(Reply.ERROR, "TLS is already active.")
        elif not self._policy.tls_available:
            self._reply(Reply.ERROR, "TLS support isn't enabled.")
        else:
            self._reply(Reply.OK, "Begin TLS negotiation now.")
            self._begin_tls()

    def _check_plaintext_auth(self) -> bool:
        """Dovecot's ``client_check_plaintext_auth()`` (POP3 has no status notice to add)."""
        if self._policy.plaintext_allowed():
            return True
        self._reply(Reply.AUTH_ERROR, replies.AUTH_PLAINTEXT_DISABLED_MSG)
        self._auth_attempts += 1
        self._events.append(AuthRefused("Login failed: Plaintext authentication disabled"))
        return False

    def _cmd_user(self, args: bytes) -> None:
        if not self._check_plaintext_auth():
            return
        self._last_user = args
        self._out += b"+OK\r\n"

    def _cmd_pass(self, args: bytes) -> None:
        user = self._last_user
        if user is None:
            # the client may ignore USER's reply and show only the one to PASS
            if self._check_plaintext_auth():
                self._reply(Reply.ERROR, replies.NO_USERNAME_MSG)
            return
        self._last_user = None
        self._auth_begin(b"PLAIN", None, login_response=b"\0" + user + b"\0" + args)

    def _new_apop_challenge(self, policy: LoginPolicy) -> str | None:
        """``<pid.uid.time.random@host>`` when APOP is enabled (Dovecot's ``get_apop_challenge()``)."""
        if "APOP" not in (mech.upper() for mech in policy.mechanisms):
            return None
        random = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        stamp = int(self._clock().timestamp())
        return f"<{os.getpid():x}.{secrets.randbits(32):x}.{stamp:x}.{random}@{self._hostname()}>"

    def _cmd_apop(self, args: bytes) -> None:
        """``APOP <user> <md5 hex>``: the challenge, the user and the digest go to the auth process
        as the APOP mechanism's data (``challenge NUL user NUL digest``)."""
        if self._apop_challenge is None:
            self._reply(Reply.ERROR, replies.APOP_NOT_ENABLED_MSG)
            self._events.append(AuthRefused("APOP failed: APOP not enabled"))
            return
        user, space, digest_hex = args.partition(b" ")
        if not space or len(digest_hex) != 32:
            self._reply(Reply.ERROR, replies.APOP_INVALID_PARAMETERS_MSG)
            self._events.append(AuthRefused("APOP failed: Invalid parameters"))
            return
        try:
            digest = bytes.fromhex(digest_hex.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            self._reply(Reply.ERROR, replies.APOP_INVALID_MD5_MSG)
            self._events.append(AuthRefused("APOP failed: Invalid characters in MD5 response"))
            return
        data = self._apop_challenge.encode() + b"\0" + user + b"\0" + digest
        self._auth_begin(b"APOP", None, login_response=data)

    def _cmd_xclient(self, args: bytes) -> None:
        if not self._policy.trusted:
            self._reply(Reply.OK, replies.XCLIENT_UNTRUSTED_MSG)
            return
        parsed = parse_xclient(args)
        if parsed.changed:
            # Dovecot applies each valid value as it reads it, even when another is invalid.
            self._events.append(parsed.trusted_info())
        if parsed.valid:
            self._reply(Reply.OK, replies.XCLIENT_UPDATED_MSG)
        else:
            self._reply(Reply.ERROR, replies.INVALID_PARAMETERS_MSG)

    def _cmd_auth(self) -> int:
        """Dovecot's ``cmd_auth()``: 1 done, 0 more input or authentication started, -1 gone."""
        if not self._auth_mech_parsed:
            data = self._buf.peek()
            end = next((i for i, byte in enumerate(data) if byte in (_SP, _CR, _LF)), None)
            if end is None:
                return 0
            if end == 0:
                # old-style SASL discovery (MS Outlook)
                self._out += replies.mechanism_list(self._policy)
                self._read_next_line()
                return 1
            self._auth_mech_raw = data[:end]
            self._auth_mech_parsed = True
            self._buf.skip(end + 1 if data[end] == _SP else end)
        ret = self._auth_read_line()
        if ret <= 0:
            return ret
        self._auth_mech_parsed = False
        initial = bytes(self._auth_response) or None
        self._auth_response.clear()
        # The command is complete; the exchange itself belongs to the driver now.
        self._current_cmd = None
        return self._auth_begin(self._auth_mech_raw, initial)

    def _read_next_line(self) -> None:
        """Dovecot's ``i_stream_read_next_line()`` with its result ignored: skip a line if it is here."""
        if self._buf.skip_line():
            return
        self._buf.fill_from(self._pending)
        self._buf.skip_line()

    def _auth_parse_response(self) -> None:
        """A continuation line from the client (Dovecot's ``client_auth_parse_response()``)."""
        if (line := self._response_line()) is None:
            return
        if line == b"*":
            self._abort_auth(replies.reply_line(Reply.ERROR, replies.AUTH_ABORTED_MSG))
            return
        if not is_base64_text(line):
            text = replies.INVALID_BASE64_RESPONSE_MSG
        elif (decoded := decode_base64(line)) is None:
            text = replies.INVALID_BASE64_CONTINUED_MSG
        else:
            self._events.append(AuthContinue(decoded))
            return
        self._refuse_response(replies.reply_line(Reply.AUTH_ERROR, text), text)
