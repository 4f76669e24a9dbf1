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
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from proxyd.log import MAX_REMOTE_LINE_LEN, sanitize
from proxyd.protocols.backend_engine import MAX_PROXY_INPUT, BackendEngineBase, Phase
from proxyd.protocols.backend_events import (
    BackendEvent,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.pop3 import replies
from proxyd.protocols.pop3.replies import Reply
from proxyd.protocols.sasl import (
    CLIENT_MECHANISMS,
    SaslClient,
    SaslClientError,
    decode_base64,
    encode_base64,
)
from proxyd.protocols.xclient import xclient_command

#: bytes that would end or split a POP3 command line
_LINE_BREAKERS: Final = frozenset("\r\n\0")


@dataclass(frozen=True, slots=True)
class Pop3BackendParams:
    """How to log in to one backend (from the passdb reply and the client session).

    The XCLIENT values (``remote_ip`` ... ``forward_fields``) are sent only when
    the backend's banner offers XCLIENT and ``not_trusted`` (``proxy_not_trusted``)
    is False; ``proxy_ttl`` is the TTL to send, already decremented.
    """

    user: str
    password: str = field(repr=False)
    master_user: str = ""
    mech: str = ""
    starttls: bool = False
    not_trusted: bool = False
    remote_ip: str = ""
    remote_port: int = 0
    session_id: str = ""
    proxy_ttl: int = 4
    forward_fields: tuple[tuple[str, str], ...] = ()


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
        self._params = params
        self._buf = InputBuffer(MAX_PROXY_INPUT)
        self._pending = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[BackendEvent] = deque()
        self._phase = Phase.RUNNING
        self._state = _State.BANNER
        self._xclient = False
        self._sasl: SaslClient | None = None
        self._mech = params.mech.upper() or ("PLAIN" if params.master_user else "")
        if self._mech and self._mech not in CLIENT_MECHANISMS:
            self._fail(ProxyFailure.INTERNAL, f"Unsupported SASL mechanism {params.mech}")
        elif not self._mech and (
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

    def tls_started(self) -> None:
        """The STLS handshake is done; go on with the login."""
        if self._phase is not Phase.TLS_PENDING:
            raise RuntimeError("tls_started() without BackendNeedsTLS")
        self._phase = Phase.RUNNING
        # Whatever followed "+OK" in plaintext was handed to TLS.
        self._buf.take_all()
        self._pending.clear()
        self._send_login()

    def trailing_data(self) -> bytes:
        """Return and forget unconsumed backend bytes (after the ``+OK``: relay them to the client)."""
        data = self._buf.take_all() + bytes(self._pending)
        self._pending.clear()
        return data

    # -- internals ---------------------------------------------------------

    def _parse_line(self, line: bytes) -> None:
        """Dovecot's ``pop3_proxy_parse_line()``."""
        state = self._state
        if state is _State.BANNER:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.PROTOCOL, "Invalid banner: " + sanitize(line, MAX_REMOTE_LINE_LEN))
                return
            self._xclient = line[3:].startswith(b" [XCLIENT]")
            if self._params.starttls:
                self._out += b"STLS\r\n"
                self._state = _State.STARTTLS
            else:
                self._send_login()
        elif state is _State.STARTTLS:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.REMOTE, "STLS failed: " + sanitize(line, MAX_REMOTE_LINE_LEN))
                return
            self._phase = Phase.TLS_PENDING
            self._events.append(BackendNeedsTLS())
        elif state is _State.XCLIENT:
            if not line.startswith(b"+OK"):
                self._fail(ProxyFailure.REMOTE, "XCLIENT failed: " + sanitize(line, MAX_REMOTE_LINE_LEN))
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
            self._phase = Phase.DONE
            self._events.append(BackendLoggedIn(line + b"\r\n"))
        else:
            self._login_failed(line)

    def _send_login(self) -> None:
        """Dovecot's ``proxy_send_login()``: XCLIENT if offered, then USER or AUTH."""
        params = self._params
        if self._xclient and not params.not_trusted:
            self._out += xclient_command(
                remote_ip=params.remote_ip,
                remote_port=params.remote_port,
                session_id=params.session_id,
                proxy_ttl=params.proxy_ttl,
                forward_fields=params.forward_fields,
            )
            self._state = _State.XCLIENT
        else:
            self._state = _State.LOGIN1
        if not self._mech:
            self._out += b"USER " + params.user.encode("utf-8") + b"\r\n"
            return
        self._sasl = SaslClient.create(
            self._mech,
            authzid=params.user,
            authcid=params.master_user or params.user,
            password=params.password,
        )
        initial = self._sasl.output()
        self._out += (
            b"AUTH " + self._mech.encode("ascii") + b" "
            + (encode_base64(initial) if initial else b"=") + b"\r\n"
        )  # fmt: skip
        if self._state is not _State.XCLIENT:
            self._state = _State.LOGIN2

    def _continue_sasl(self, text: bytes) -> None:
        assert self._sasl is not None
        challenge = decode_base64(text)
        if challenge is None:
            self._fail(ProxyFailure.PROTOCOL, "Invalid base64 data in AUTH response")
            return
        try:
            self._sasl.input(challenge)
            response = self._sasl.output()
        except SaslClientError as error:
            self._fail(ProxyFailure.PROTOCOL, f"Invalid authentication data: {error}")
            return
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
