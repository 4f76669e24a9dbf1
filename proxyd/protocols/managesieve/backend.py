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
from dataclasses import dataclass

from proxyd.protocols.backend_engine import BackendEngineBase, BackendParams, shown
from proxyd.protocols.backend_events import ProxyFailure
from proxyd.protocols.managesieve import replies
from proxyd.protocols.managesieve.grammar import ArgType, ParseError, parse_line, quote
from proxyd.protocols.managesieve.replies import Status
from proxyd.protocols.sasl import encode_base64
from proxyd.protocols.texts import AUTH_FAILED_MSG


@dataclass(frozen=True, slots=True)
class SieveBackendParams(BackendParams):
    """How to log in to one ManageSieve backend (see :class:`BackendParams`)."""


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
        super().__init__()
        self._params = params
        self._state = _State.NONE
        self._sasl_offered = False
        self._starttls_offered = False
        self._xclient_offered = False
        self._mech = self._mechanism(params.mech, "PLAIN")

    @property
    def state_name(self) -> str:
        """Pigeonhole's ``managesieve_proxy_get_state()``."""
        return self._state.value

    @property
    def xclient_offered(self) -> bool:
        return self._xclient_offered

    # -- internals ---------------------------------------------------------

    def _tls_ready(self) -> None:
        """The backend sends its capabilities again."""
        self._sasl_offered = self._xclient_offered = False
        self._state = _State.TLS_READY

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
                    self._fail(ProxyFailure.REMOTE, "Remote STARTTLS failed: " + shown(line))
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
            self._needs_tls()
        elif state is _State.XCLIENT:
            if not _is_ok(line):
                self._fail(ProxyFailure.REMOTE, "Remote XCLIENT failed: " + shown(line))
                return
            self._send_auth()
        elif line.startswith(b'"'):
            self._continue_sasl(line)
        elif _is_ok(line):
            self._logged_in(line + b"\r\n")
        else:
            self._auth_failed(line)

    def _capability_line(self, line: bytes) -> bool | None:
        """One greeting/capability line: None for more, True at OK, False at NO/BYE (or a failure)."""
        try:
            parsed = parse_line(line + b"\r\n")
        except ParseError as exc:
            self._fail(
                ProxyFailure.PROTOCOL,
                f"Protocol parse error in capability/greeting line: {exc.text} (line=`{shown(line)}')",
            )
            return None
        args = parsed[0] if parsed is not None else []
        if not args:
            self._fail(
                ProxyFailure.PROTOCOL,
                "Remote returned with invalid capability/greeting line: " + shown(line),
            )
            return None
        first = args[0]
        if first.type is ArgType.ATOM:
            word = first.value.upper()
            if word == b"OK":
                return True
            if word in (b"NO", b"BYE"):
                return False
            self._fail(ProxyFailure.PROTOCOL, "Remote sent invalid response: " + shown(line))
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
        self._out += self._params.xclient()
        self._state = _State.XCLIENT

    def _send_auth(self) -> None:
        """Pigeonhole's ``proxy_write_auth()``."""
        if not self._sasl_offered:
            # never send credentials to a backend that has login disabled (no TLS?)
            self._fail(
                ProxyFailure.REMOTE_CONFIG, "Server has disabled authentication (TLS required?)"
            )
            return
        initial = self._start_sasl(self._mech, self._params).output()
        self._out += b"AUTHENTICATE " + quote(self._mech)
        if initial:
            self._out += b" " + quote(encode_base64(initial))
        self._out += b"\r\n"
        self._state = _State.AUTH

    def _continue_sasl(self, line: bytes) -> None:
        try:
            parsed = parse_line(line + b"\r\n")
        except ParseError as exc:
            self._fail(
                ProxyFailure.PROTOCOL,
                f"Protocol parse error int SASL challenge line: {exc.text} (line=`{shown(line)}')",
            )
            return
        args = parsed[0] if parsed is not None else []
        if not args or args[0].type is not ArgType.STRING:
            self._fail(
                ProxyFailure.PROTOCOL, "Server sent invalid SASL challenge line: " + shown(line)
            )
            return
        response = self._sasl_response(
            args[0].value,
            "Server sent invalid base64 data in AUTHENTICATE response",
            "Server sent invalid authentication data",
        )
        if response is not None:
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
        return shown(line), False
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
