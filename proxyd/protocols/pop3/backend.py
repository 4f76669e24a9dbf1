"""Pop3BackendLogin: log in to a POP3 backend the way Dovecot 2.3's ``pop3-proxy.c`` does.

Theory of operation
-------------------
The driver connects (plain or ``ssl=yes``), creates the engine with the
credentials and flags from the passdb reply, and runs the usual sans-IO loop
(see ``proxyd.protocols.backend_events``).  The dialogue, with Dovecot's state
names (``banner``, ``starttls``, ``xclient``, ``login1``, ``login2``):

1. The banner must start ``+OK`` (else PROTOCOL ``Invalid banner: ...``); the
   backend takes XCLIENT when it starts ``+OK [XCLIENT]``.
2. With ``starttls``: ``STLS``; on ``+OK`` the engine reports
   :class:`BackendNeedsTLS` and waits for ``tls_started()``; anything else is
   REMOTE ``STLS failed: ...``.
3. ``XCLIENT ADDR= PORT= SESSION= TTL=[ FORWARD=]`` when the backend takes it
   and ``proxy_not_trusted`` is not set, pipelined with the login; its reply
   must be ``+OK`` (else REMOTE ``XCLIENT failed: ...``).
4. Login: ``USER <destuser>``, and ``PASS <pass>`` only after USER's ``+OK``;
   or, with ``proxy_mech`` or a master user, ``AUTH <mech> <initial response>``
   (always with an initial response, ``=`` for an empty one) and ``+ <base64>``
   continuations answered by the SASL client (PLAIN for master users, with the
   master as authentication id).
5. The final ``+OK ...`` goes to the client verbatim (:class:`BackendLoggedIn`).
   A refusal is passed through as Dovecot does: ``-ERR [SYS/TEMP] ...`` is
   AUTH_TEMPFAIL (the driver may reconnect; the client gets ``-ERR [SYS/TEMP]
   ...`` only when it gives up), other ``-ERR ...`` lines reach the client
   unchanged (POP3 does not hide backend texts, unlike IMAP), and anything
   else becomes ``-ERR Authentication failed.``.

Lines are read like Dovecot's proxy input stream: at most 4096 unconsumed bytes
(``MAX_PROXY_INPUT_SIZE``); a longer line is PROTOCOL ``Too long input line``.
EOF before the end is CONNECT ``Disconnected by server: Connection closed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from proxyd.log import sanitize
from proxyd.protocols.backend_engine import BackendEngineBase, BackendParams, shown
from proxyd.protocols.backend_events import ProxyFailure
from proxyd.protocols.pop3 import replies
from proxyd.protocols.pop3.replies import Reply
from proxyd.protocols.sasl import encode_base64

#: bytes that would end or split a POP3 command line
_LINE_BREAKERS: Final = frozenset("\r\n\0")


@dataclass(frozen=True, slots=True)
class Pop3BackendParams(BackendParams):
    """How to log in to one POP3 backend (see :class:`BackendParams`)."""


class _State(enum.Enum):
    """Dovecot's ``enum pop3_proxy_state``."""

    BANNER = "banner"
    STARTTLS = "starttls"
    XCLIENT = "xclient"
    LOGIN1 = "login1"
    LOGIN2 = "login2"


class Pop3BackendLogin(BackendEngineBase):
    """The POP3 login dialogue with one backend connection."""

    def __init__(self, params: Pop3BackendParams) -> None:
        super().__init__()
        self._params = params
        self._state = _State.BANNER
        self._xclient = False
        self._mech = self._mechanism(params.mech, "PLAIN" if params.master_user else "")
        if not self._mech and (
            _LINE_BREAKERS.intersection(params.user) or _LINE_BREAKERS.intersection(params.password)
        ):
            # USER/PASS cannot carry these; sending them would inject commands
            self._fail(
                ProxyFailure.INTERNAL, "User name or password has CR, LF or NUL for USER/PASS"
            )

    # -- public API ------------------------------------------------------

    @property
    def state_name(self) -> str:
        """Dovecot's ``pop3_proxy_get_state()``: banner, starttls, xclient, login1 or login2."""
        return self._state.value

    @property
    def xclient_offered(self) -> bool:
        """Whether the backend's banner started ``+OK [XCLIENT]``."""
        return self._xclient

    # -- internals ---------------------------------------------------------

    def _tls_ready(self) -> None:
        self._send_login()

    def _parse_line(self, line: bytes) -> None:
        """Dovecot's ``pop3_proxy_parse_line()``."""
        state = self._state
        if state is _State.BANNER:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.PROTOCOL, "Invalid banner: " + shown(line))
                return
            self._xclient = line[3:].startswith(b" [XCLIENT]")
            if self._params.starttls:
                self._out += b"STLS\r\n"
                self._state = _State.STARTTLS
            else:
                self._send_login()
        elif state is _State.STARTTLS:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.REMOTE, "STLS failed: " + shown(line))
                return
            self._needs_tls()
        elif state is _State.XCLIENT:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.REMOTE, "XCLIENT failed: " + shown(line))
                return
            self._state = _State.LOGIN1 if self._sasl is None else _State.LOGIN2
        elif state is _State.LOGIN1:
            if not line.startswith(b"+OK"):
                self._login_failed(line)
                return
            self._out += b"PASS " + self._params.password.encode("utf-8") + b"\r\n"
            self._state = _State.LOGIN2
        elif line.startswith(b"+ ") and self._sasl is not None:
            self._continue_sasl(line[2:])
        elif line.startswith(b"+OK"):
            self._logged_in(line + b"\r\n")
        else:
            self._login_failed(line)

    def _send_login(self) -> None:
        """Dovecot's ``proxy_send_login()``: XCLIENT if offered, then USER or AUTH."""
        params = self._params
        if self._xclient and not params.not_trusted:
            self._out += params.xclient()
            self._state = _State.XCLIENT
        else:
            self._state = _State.LOGIN1
        if not self._mech:
            self._out += b"USER " + params.user.encode("utf-8") + b"\r\n"
            return
        initial = self._start_sasl(self._mech, params).output()
        self._out += (
            b"AUTH " + self._mech.encode("ascii") + b" "
            + (encode_base64(initial) if initial else b"=") + b"\r\n"
        )  # fmt: skip
        if self._state is not _State.XCLIENT:
            self._state = _State.LOGIN2

    def _continue_sasl(self, text: bytes) -> None:
        response = self._sasl_response(text, "Invalid base64 data in AUTH response")
        if response is not None:
            self._out += encode_base64(response) + b"\r\n"

    def _login_failed(self, line: bytes) -> None:
        """A refusal: pass it on as Dovecot does (POP3 shows the backend's own text)."""
        if not line.startswith(b"-ERR "):
            reply = replies.reply_line(Reply.ERROR, replies.AUTH_FAILED_MSG)
            self._fail(ProxyFailure.AUTH, sanitize(line), reply)
        elif line.startswith(b"-ERR [SYS/TEMP]"):
            # the reply waits until the driver knows whether it reconnects
            self._fail(
                ProxyFailure.AUTH_TEMPFAIL, sanitize(line[5:]), line + b"\r\n"
            )
        else:
            self._fail(ProxyFailure.AUTH, sanitize(line[5:]), line + b"\r\n")
