"""ManageSieveBackendLogin: log in to a ManageSieve backend as Pigeonhole's ``managesieve-proxy.c`` does.

Theory of operation
-------------------
The driver connects (plain or ``ssl=yes``) and runs the usual sans-IO loop
(see ``proxyd.protocols.backend_events``).  The dialogue, with Pigeonhole's
state names (``none``, ``tls-start``, ``tls-ready``, ``xclient``, ``auth``):

1. The backend's capability lines are read up to its ``OK``; ``"SASL"`` with
   at least one mechanism allows the login, ``"STARTTLS"`` and ``"XCLIENT"``
   are noted.  ``NO``/``BYE`` there is PROTOCOL.
2. With ``starttls``: ``STARTTLS``; on ``OK`` the engine reports
   :class:`BackendNeedsTLS`, and after ``tls_started()`` reads the
   capabilities again.
3. ``XCLIENT ADDR= PORT= SESSION= TTL=[ FORWARD=]`` when the backend offers it
   (it does to its ``login_trusted_networks``) and ``proxy_not_trusted`` is
   not set: the backend logs the client's address as ``rip``.
4. ``AUTHENTICATE "PLAIN" "<base64>"`` (or ``proxy_mech``), as the master user
   when there is one; quoted challenges are answered by the SASL client.
5. ``OK ...`` goes to the client verbatim.  A refusal is hidden behind
   ``NO "Authentication failed."``; ``NO (TRYLATER) ...`` is AUTH_TEMPFAIL
   (the driver may reconnect; the client then sees ``NO (TRYLATER) "<text>"``).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from proxyd.log import MAX_REMOTE_LINE_LEN, sanitize
from proxyd.protocols.backend_engine import MAX_PROXY_INPUT, BackendEngineBase, Phase
from proxyd.protocols.backend_events import (
    BackendEvent,
    BackendLoggedIn,
    BackendNeedsTLS,
    ProxyFailure,
)
from proxyd.protocols.buffer import InputBuffer
from proxyd.protocols.managesieve import replies
from proxyd.protocols.managesieve.grammar import ArgType, ParseError, parse_line, quote
from proxyd.protocols.managesieve.replies import Status
from proxyd.protocols.sasl import (
    CLIENT_MECHANISMS,
    SaslClient,
    SaslClientError,
    decode_base64,
    encode_base64,
)
from proxyd.protocols.texts import AUTH_FAILED_MSG
from proxyd.protocols.xclient import xclient_command


@dataclass(frozen=True, slots=True)
class SieveBackendParams:
    """How to log in to one backend (from the passdb reply and the client session)."""

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
    """Pigeonhole's ``enum managesieve_proxy_state``."""

    NONE = "none"
    TLS_START = "tls-start"
    TLS_READY = "tls-ready"
    XCLIENT = "xclient"
    AUTH = "auth"


def _is_ok(line: bytes) -> bool:
    return line[:2].upper() == b"OK" and (len(line) == 2 or line[2:3] == b" ")


class ManageSieveBackendLogin(BackendEngineBase):
    """The ManageSieve login dialogue with one backend connection."""

    def __init__(self, params: SieveBackendParams) -> None:
        self._params = params
        self._buf = InputBuffer(MAX_PROXY_INPUT)
        self._pending = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[BackendEvent] = deque()
        self._phase = Phase.RUNNING
        self._state = _State.NONE
        self._sasl_offered = False
        self._starttls_offered = False
        self._xclient_offered = False
        self._sasl: SaslClient | None = None
        self._mech = params.mech.upper() or "PLAIN"
        if self._mech not in CLIENT_MECHANISMS:
            self._fail(ProxyFailure.INTERNAL, f"Unsupported SASL mechanism {params.mech}")

    @property
    def state_name(self) -> str:
        """Pigeonhole's ``managesieve_proxy_get_state()``."""
        return self._state.value

    @property
    def xclient_offered(self) -> bool:
        return self._xclient_offered

    def tls_started(self) -> None:
        """The STARTTLS handshake is done; the backend sends its capabilities again."""
        if self._phase is not Phase.TLS_PENDING:
            raise RuntimeError("tls_started() without BackendNeedsTLS")
        self._phase = Phase.RUNNING
        self._buf.take_all()
        self._pending.clear()
        self._sasl_offered = self._xclient_offered = False
        self._state = _State.TLS_READY

    def trailing_data(self) -> bytes:
        """Return and forget unconsumed backend bytes (after the ``OK``: relay them to the client)."""
        data = self._buf.take_all() + bytes(self._pending)
        self._pending.clear()
        return data

    # -- internals ---------------------------------------------------------

    def _parse_line(self, line: bytes) -> None:
        """Pigeonhole's ``managesieve_proxy_parse_line()``."""
        state = self._state
        if state in (_State.NONE, _State.TLS_READY):
            done = self._capability_line(line)
            if done is None:
                return
            if not done:
                if state is _State.NONE:
                    self._fail(
                        ProxyFailure.PROTOCOL,
                        "Remote sent unexpected NO/BYE instead of capability response",
                    )
                else:
                    self._fail(ProxyFailure.REMOTE, "Remote STARTTLS failed: " + sanitize(line, MAX_REMOTE_LINE_LEN))
                return
            if state is _State.NONE and self._params.starttls:
                if not self._starttls_offered:
                    self._fail(ProxyFailure.REMOTE_CONFIG, "Remote doesn't support STARTTLS")
                    return
                self._out += b"STARTTLS\r\n"
                self._state = _State.TLS_START
            elif self._xclient_offered and not self._params.not_trusted:
                self._send_xclient()
            else:
                self._send_auth()
        elif state is _State.TLS_START:
            if not _is_ok(line):
                self._fail(ProxyFailure.REMOTE, "Remote refused STARTTLS command")
                return
            self._phase = Phase.TLS_PENDING
            self._events.append(BackendNeedsTLS())
        elif state is _State.XCLIENT:
            if not _is_ok(line):
                self._fail(ProxyFailure.REMOTE, "Remote XCLIENT failed: " + sanitize(line, MAX_REMOTE_LINE_LEN))
                return
            self._send_auth()
        elif line.startswith(b'"'):
            self._continue_sasl(line)
        elif _is_ok(line):
            self._phase = Phase.DONE
            self._events.append(BackendLoggedIn(line + b"\r\n"))
        else:
            self._auth_failed(line)

    def _capability_line(self, line: bytes) -> bool | None:
        """One greeting/capability line: None for more, True at OK, False at NO/BYE (or a failure)."""
        try:
            parsed = parse_line(line + b"\r\n")
        except ParseError as exc:
            self._fail(
                ProxyFailure.PROTOCOL,
                f"Protocol parse error in capability/greeting line: {exc.text} (line=`{sanitize(line, MAX_REMOTE_LINE_LEN)}')",
            )
            return None
        args = parsed[0] if parsed is not None else []
        if not args:
            self._fail(
                ProxyFailure.PROTOCOL,
                "Remote returned with invalid capability/greeting line: " + sanitize(line, MAX_REMOTE_LINE_LEN),
            )
            return None
        first = args[0]
        if first.type is ArgType.ATOM:
            word = first.value.upper()
            if word == b"OK":
                return True
            if word in (b"NO", b"BYE"):
                return False
            self._fail(ProxyFailure.PROTOCOL, "Remote sent invalid response: " + sanitize(line, MAX_REMOTE_LINE_LEN))
            return None
        name = first.value.upper()
        if name == b"SASL":
            if len(args) != 2 or args[1].type is not ArgType.STRING:
                self._fail(ProxyFailure.PROTOCOL, "Server returned erroneous SASL capability")
                return None
            self._sasl_offered = bool(args[1].value.split())
        elif name == b"STARTTLS":
            self._starttls_offered = True
        elif name == b"XCLIENT":
            self._xclient_offered = True
        return None

    def _send_xclient(self) -> None:
        params = self._params
        self._out += xclient_command(
            remote_ip=params.remote_ip,
            remote_port=params.remote_port,
            session_id=params.session_id,
            proxy_ttl=params.proxy_ttl,
            forward_fields=params.forward_fields,
        )
        self._state = _State.XCLIENT

    def _send_auth(self) -> None:
        """Pigeonhole's ``proxy_write_auth()``."""
        if not self._sasl_offered:
            # never send credentials to a backend that has login disabled (no TLS?)
            self._fail(
                ProxyFailure.REMOTE_CONFIG, "Server has disabled authentication (TLS required?)"
            )
            return
        params = self._params
        self._sasl = SaslClient.create(
            self._mech,
            authzid=params.user,
            authcid=params.master_user or params.user,
            password=params.password,
        )
        initial = self._sasl.output()
        self._out += b"AUTHENTICATE " + quote(self._mech)
        if initial:
            self._out += b" " + quote(encode_base64(initial))
        self._out += b"\r\n"
        self._state = _State.AUTH

    def _continue_sasl(self, line: bytes) -> None:
        assert self._sasl is not None
        try:
            parsed = parse_line(line + b"\r\n")
        except ParseError as exc:
            self._fail(
                ProxyFailure.PROTOCOL,
                f"Protocol parse error int SASL challenge line: {exc.text} (line=`{sanitize(line, MAX_REMOTE_LINE_LEN)}')",
            )
            return
        args = parsed[0] if parsed is not None else []
        if not args or args[0].type is not ArgType.STRING:
            self._fail(
                ProxyFailure.PROTOCOL, "Server sent invalid SASL challenge line: " + sanitize(line, MAX_REMOTE_LINE_LEN)
            )
            return
        challenge = decode_base64(args[0].value)
        if challenge is None:
            self._fail(
                ProxyFailure.PROTOCOL, "Server sent invalid base64 data in AUTHENTICATE response"
            )
            return
        try:
            self._sasl.input(challenge)
            response = self._sasl.output()
        except SaslClientError as error:
            self._fail(ProxyFailure.PROTOCOL, f"Server sent invalid authentication data: {error}")
            return
        self._out += (quote(encode_base64(response)) if response else b'""') + b"\r\n"

    def _auth_failed(self, line: bytes) -> None:
        """Pigeonhole hides the backend's reason from the client (no user probing)."""
        reason, trylater = _auth_reply_reason(line)
        if trylater:
            self._fail(
                ProxyFailure.AUTH_TEMPFAIL,
                reason,
                replies.reply_line(Status.NO, reason, "TRYLATER"),
            )
        else:
            self._fail(ProxyFailure.AUTH, reason, replies.reply_line(Status.NO, AUTH_FAILED_MSG))


def _auth_reply_reason(line: bytes) -> tuple[str, bool]:
    """Pigeonhole's ``managesieve_proxy_parse_auth_reply()``: the reason text and TRYLATER."""
    text = line.decode("utf-8", "replace")
    if text[:3].upper() != "NO ":
        return sanitize(line, MAX_REMOTE_LINE_LEN), False
    rest = text[3:]
    trylater = False
    if rest.startswith("("):
        if rest[:11].upper() == "(TRYLATER) ":
            trylater = True
            rest = rest[11:]
        else:
            end = rest.find(") ")
            if end < 0:
                return rest, False
            rest = rest[end + 2 :]
    try:
        parsed = parse_line(rest.encode() + b"\r\n")
    except ParseError:
        return rest, trylater
    if parsed is not None and len(parsed[0]) == 1 and parsed[0][0].type is ArgType.STRING:
        return parsed[0][0].value.decode("utf-8", "replace"), trylater
    return rest, trylater
