"""SubmissionBackendLogin: log in to a Submission backend as Dovecot's ``submission-proxy.c`` does.

States (Dovecot's names): ``banner`` (220), ``ehlo`` (``EHLO <hostname>``),
``starttls`` / ``tls-ehlo`` with ``starttls``, ``xclient`` / ``xclient-ehlo``
when the backend offers XCLIENT and ``proxy_not_trusted`` is not set (of HELO
PROTO LOGIN TTL PORT ADDR SESSION FORWARD the attributes the backend listed,
xtext-encoded, split into several XCLIENT commands past 512 bytes, one reply
each; then EHLO again), ``authenticate`` (``AUTH PLAIN <ir>`` as the user or
the master user; the initial response is withheld when the line would pass
512 bytes, and sent after ``334``).  The backend must advertise AUTH.
The backend's 2xx reply to AUTH goes to the client; 4xx is AUTH_TEMPFAIL
(retried; the client then gets that reply), 5xx is passed on as it is.
With ``proxy_noauth`` there is no AUTH: XCLIENT ``LOGIN=`` names the user
(when the backend lists it) and the client gets ``235 2.7.0 Logged in.``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from proxyd.log import sanitize
from proxyd.protocols.backend_engine import BackendEngineBase, BackendParams, shown
from proxyd.protocols.backend_events import ProxyFailure
from proxyd.protocols.sasl import encode_base64
from proxyd.protocols.submission.xclient import UNAVAILABLE, xclient_commands
from proxyd.protocols.xclient import encode_forward

#: lib-smtp's ``SMTP_BASE_LINE_LENGTH_LIMIT``
LINE_LIMIT: Final = 512
#: what the client gets when ``proxy_noauth`` skips the backend's AUTH
LOGGED_IN: Final = b"235 2.7.0 Logged in.\r\n"


@dataclass(frozen=True, slots=True)
class SubmissionBackendParams(BackendParams):
    """How to log in to one Submission backend (see :class:`BackendParams`), and the EHLO names."""

    hostname: str = "localhost"  # our EHLO name
    helo: str | None = None  # the client's EHLO/HELO domain (or a trusted proxy's XCLIENT HELO=)
    proto: str | None = None  # "ESMTP" / "SMTP" / "LMTP"
    #: ``proxy_noauth``: no AUTH; XCLIENT ``LOGIN=`` names the user instead
    noauth: bool = False
    login: str = ""  # XCLIENT LOGIN=: a trusted proxy's LOGIN=, else the user who logged in


class _State(enum.Enum):
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS_EHLO = "tls-ehlo"
    XCLIENT = "xclient"
    XCLIENT_EHLO = "xclient-ehlo"
    AUTHENTICATE = "authenticate"


class SubmissionBackendLogin(BackendEngineBase):
    """The Submission login dialogue with one backend connection."""

    def __init__(self, params: SubmissionBackendParams) -> None:
        super().__init__()
        self._params = params
        self._state = _State.BANNER
        self._caps: set[str] = set()
        self._xclient: list[str] = []
        self._xclient_replies = 0
        self._reply: list[bytes] = []
        self._withheld_ir: bytes | None = None
        self._mech = self._mechanism(params.mech, "PLAIN")

    @property
    def state_name(self) -> str:
        return self._state.value

    # -- internals ---------------------------------------------------------

    def _tls_ready(self) -> None:
        self._caps.clear()
        self._xclient = []
        self._state = _State.TLS_EHLO
        self._ehlo()

    def _ehlo(self) -> None:
        self._out += f"EHLO {self._params.hostname}\r\n".encode()

    def _parse_line(self, line: bytes) -> None:
        """Dovecot's ``submission_proxy_parse_line()``: one reply line."""
        code = line[:3]
        valid = len(line) >= 3 and code.isdigit() and 200 <= int(code) < 560 and line[3:4] in (b" ", b"-", b"")
        status = int(code) if valid else 0
        last = line[3:4] != b"-"
        text = line[4:].decode("utf-8", "replace")
        state = self._state
        if state is _State.BANNER:
            if not valid or status != 220:
                self._fail(ProxyFailure.PROTOCOL, "Invalid banner: " + shown(line))
            elif last:
                self._state = _State.EHLO
                self._ehlo()
        elif state in (_State.EHLO, _State.TLS_EHLO, _State.XCLIENT_EHLO):
            if not valid or status // 100 != 2:
                self._fail(ProxyFailure.PROTOCOL, "Invalid EHLO line: " + shown(line))
                return
            self._capability(text)
            if last:
                self._ehlo_done()
        elif state is _State.STARTTLS:
            if not valid or status != 220:
                self._fail(ProxyFailure.REMOTE, "STARTTLS failed: " + shown(line))
            elif last:
                self._needs_tls()
        elif state is _State.XCLIENT:
            if not valid or status // 100 != 2:
                self._fail(ProxyFailure.REMOTE, "XCLIENT failed: " + shown(line))
            elif last:
                # one reply per XCLIENT line; the pipelined EHLO's reply follows the last
                self._xclient_replies -= 1
                if self._xclient_replies <= 0:
                    self._caps.clear()
                    self._state = _State.XCLIENT_EHLO
        else:
            self._auth_reply(valid, status, last, line, text)

    def _capability(self, text: str) -> None:
        upper = text.upper()
        if upper.startswith("XCLIENT "):
            self._caps.add("XCLIENT")
            self._xclient = upper[8:].split()
        elif upper == "STARTTLS":
            self._caps.add("STARTTLS")
        elif upper.startswith("AUTH ") and len(upper) > 5:
            self._caps.add("AUTH")

    def _ehlo_done(self) -> None:
        """Dovecot's ``proxy_handle_ehlo_reply()``."""
        params = self._params
        if self._state is _State.EHLO and params.starttls:
            if "STARTTLS" not in self._caps:
                self._fail(ProxyFailure.REMOTE_CONFIG, "STARTTLS not supported")
                return
            self._out += b"STARTTLS\r\n"
            self._state = _State.STARTTLS
            return
        if self._state in (_State.EHLO, _State.TLS_EHLO) and "XCLIENT" in self._caps and not params.not_trusted:
            lines = xclient_commands(self._xclient_attributes())
            if lines:
                self._out += b"".join(lines)
                self._xclient_replies = len(lines)
                self._state = _State.XCLIENT
                self._ehlo()  # pipelined: its reply follows the XCLIENT replies
                return
        if params.noauth:
            # proxy_noauth: the backend trusts us to have checked the password
            self._logged_in(LOGGED_IN)
            return
        self._send_auth()

    def _xclient_attributes(self) -> list[tuple[str, str]]:
        """What ``proxy_send_xclient()`` sends, in its order: only what the backend listed."""
        params = self._params
        values: list[tuple[str, str | None]] = [
            ("HELO", params.helo or UNAVAILABLE),
            ("PROTO", params.proto or UNAVAILABLE),
            # LOGIN only when the backend is not to see an AUTH
            ("LOGIN", (params.login or UNAVAILABLE) if params.noauth else None),
            ("TTL", str(params.proxy_ttl)),
            ("PORT", str(params.remote_port)),
            ("ADDR", params.remote_ip),
            ("SESSION", params.session_id),
            ("FORWARD", encode_forward(params.forward_fields) or None),
        ]
        return [(name, value) for name, value in values if value is not None and name in self._xclient]

    def _send_auth(self) -> None:
        if "AUTH" not in self._caps:
            # never send credentials to a backend that does not take them (TLS required?)
            self._fail(
                ProxyFailure.REMOTE_CONFIG, "Authentication support not advertised (TLS required?)"
            )
            return
        initial = encode_base64(self._start_sasl(self._mech, self._params).output())
        command = b"AUTH " + self._mech.encode()
        if not initial:
            command += b" ="
        elif 5 + len(self._mech) + 1 + len(initial) > LINE_LIMIT:
            self._withheld_ir = initial
        else:
            command += b" " + initial
        self._out += command + b"\r\n"
        self._state = _State.AUTHENTICATE

    def _auth_reply(self, valid: bool, status: int, last: bool, line: bytes, text: str) -> None:
        if valid and status == 334 and self._sasl is not None:
            if not last:
                self._fail(ProxyFailure.PROTOCOL, "Server returned multi-line challenge: " + sanitize(line, 1024))
            elif self._withheld_ir is not None:
                self._out += self._withheld_ir + b"\r\n"
                self._withheld_ir = None
            else:
                self._continue_sasl(text)
            return
        self._reply.append(line + b"\r\n")
        if not last:
            return
        reply = b"".join(self._reply)
        self._reply = []
        if valid and status // 100 == 2:
            self._logged_in(reply)
        elif valid and status // 100 == 4:
            self._fail(ProxyFailure.AUTH_TEMPFAIL, text, reply)
        else:
            self._fail(ProxyFailure.AUTH, text if valid else shown(line), reply)

    def _continue_sasl(self, text: str) -> None:
        response = self._sasl_response(text.encode(), "Invalid base64 data in AUTH response")
        if response is not None:
            self._out += encode_base64(response) + b"\r\n"
