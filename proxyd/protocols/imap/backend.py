"""ImapBackendLogin: log in to an IMAP backend the way Dovecot 2.3's ``imap-proxy.c`` does.

Theory of operation
-------------------
The driver connects (plain or ``ssl=yes``), creates the engine with the
credentials and flags from the passdb reply, and runs the usual sans-IO loop
(see ``proxyd.protocols.backend_events``).  The dialogue is Dovecot's, with its
fixed tags ``I`` (ID), ``S`` (STARTTLS), ``C`` (CAPABILITY) and ``L``
(LOGIN/AUTHENTICATE):

1. The first line is the banner; it must start ``* OK `` (else PROTOCOL
   ``Invalid banner: ...``).  ``[CAPABILITY ...]`` in it is remembered, with
   ``SASL-IR`` and ``LOGINDISABLED``; if it lists ``ID`` and there are ID
   pairs to send (none means ``proxy_not_trusted``), ``I ID (...)`` goes first.
2. With ``starttls``: ``S STARTTLS`` (REMOTE_CONFIG if known capabilities lack
   it); on ``S OK`` the engine reports :class:`BackendNeedsTLS` and stops until
   ``tls_started()``; the pre-TLS capabilities are kept.
3. Login: ``C CAPABILITY`` first when the capabilities are unknown or the client
   ignores the CAPABILITY resp-code; then ``L LOGIN "user" "pass"`` (refused with
   REMOTE_CONFIG if LOGINDISABLED was advertised and no TLS is used), or
   ``L AUTHENTICATE <mech>`` with a SASL-IR when offered (PLAIN is forced for
   master-user logins).  Everything is pipelined in one write unless
   ``nopipelining``, which waits for the ``I`` and ``C`` replies.
4. ``L OK`` → :class:`BackendLoggedIn` with the client's tag and the backend's
   capabilities injected; ``L NO [AUTHENTICATIONFAILED]``, ``L NO`` without a
   resp-code and ``L BAD`` → our own ``[AUTHENTICATIONFAILED]`` text (no user
   enumeration); ``L NO [UNAVAILABLE]`` → AUTH_TEMPFAIL; other resp-codes are
   passed through with the client's tag.  ``* CAPABILITY`` updates the
   remembered capabilities, ``* ID`` and ``* BYE`` are swallowed, other untagged
   lines go to the client as :class:`BackendUntagged`.

Lines are read like Dovecot's proxy input stream: at most 4096 unconsumed bytes
(``MAX_PROXY_INPUT_SIZE``); a longer line is PROTOCOL ``Too long input line``.
EOF before the end is CONNECT ``Disconnected by server: Connection closed``; the
driver appends Dovecot's `` (state=<state_name>, duration=<N>s)``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from proxyd.log import sanitize
from proxyd.protocols.backend_engine import BackendEngineBase, Phase, shown
from proxyd.protocols.backend_events import BackendIgnored, BackendUntagged, ProxyFailure
from proxyd.protocols.imap import replies
from proxyd.protocols.imap.grammar import quote_astring, quote_nstring
from proxyd.protocols.imap.replies import Status
from proxyd.protocols.sasl import encode_base64


@dataclass(frozen=True, slots=True)
class ImapBackendParams:
    """How to log in to one backend (from the passdb reply and the client session).

    ``id_pairs`` are the ID pairs after the retained client ID, in order (empty:
    send no ID, as with ``proxy_not_trusted``); ``client_id`` is
    :attr:`ImapLoginServer.client_id` (``imap_id_retain``), sent verbatim first.
    ``tls_active`` means the connection is already TLS (``ssl=yes``).
    """

    user: str
    password: str = field(repr=False)
    master_user: str = ""
    mech: str = ""
    id_pairs: tuple[tuple[str, str | None], ...] = ()
    client_tag: str = "*"
    client_ignores_capability_resp_code: bool = False
    starttls: bool = False
    tls_active: bool = False
    nopipelining: bool = False
    client_id: str = ""


class _Sent:
    """Commands sent and not answered yet: bits of an ``int``.  Not an ``IntFlag``: its
    ``|``, ``&`` and ``~`` are Python calls into ``enum``, compiled (mypyc) or not."""

    ID: Final = 0x01
    STARTTLS: Final = 0x02
    CAPABILITY: Final = 0x04
    AUTHENTICATE: Final = 0x08
    AUTH_CONTINUE: Final = 0x10
    LOGIN: Final = 0x20


_SENT_NAMES: Final = (
    (_Sent.ID, "id"),
    (_Sent.STARTTLS, "starttls"),
    (_Sent.CAPABILITY, "capability"),
    (_Sent.AUTHENTICATE, "authenticate"),
    (_Sent.AUTH_CONTINUE, "auth-continue"),
    (_Sent.LOGIN, "login"),
)


class _Rcvd(enum.Enum):
    NONE = "none"
    BANNER = "banner"
    ID = "id"
    STARTTLS = "starttls"
    CAPABILITY = "capability"
    AUTH_CONTINUE = "auth-continue"
    LOGIN = "login"


def _has_capability(caps: bytes, name: bytes) -> bool:
    return name.lower() in caps.lower().split(b" ")


def _cut(data: bytes, stop: bytes) -> bytes:
    index = data.find(stop)
    return data if index < 0 else data[:index]


class ImapBackendLogin(BackendEngineBase):
    """The IMAP login dialogue with one backend connection."""

    def __init__(self, params: ImapBackendParams) -> None:
        super().__init__()
        self._params = params
        self._sent = 0  # _Sent bits
        self._rcvd = _Rcvd.NONE
        self._seen_banner = False
        self._caps: bytes | None = None
        self._sasl_ir = False
        self._logindisabled = False
        self._capability_request_sent = False
        self._tag = params.client_tag.encode("utf-8")
        self._mech = self._mechanism(params.mech, "PLAIN" if params.master_user else "")

    # -- public API ------------------------------------------------------

    @property
    def state_name(self) -> str:
        """Dovecot's ``imap_proxy_get_state()``, e.g. ``capability+login/banner``."""
        sent = "+".join(name for flag, name in _SENT_NAMES if self._sent & flag)
        return f"{sent}/{self._rcvd.value}"

    @property
    def capabilities(self) -> str | None:
        """The backend capabilities as last seen (banner or ``* CAPABILITY``)."""
        return None if self._caps is None else self._caps.decode("utf-8", "replace")

    # -- internals ---------------------------------------------------------

    def _tls_ready(self) -> None:
        self._write(self._login_commands())

    def _write(self, commands: Iterable[bytes] | None) -> None:
        if commands is not None and self._phase is not Phase.DONE:
            self._out += b"".join(commands)

    def _parse_line(self, line: bytes) -> None:
        if not self._seen_banner:
            self._rcvd = _Rcvd.BANNER
            self._seen_banner = True
            self._write(self._banner(line))
        elif line.startswith(b"+"):
            self._continuation(line)
        elif line.startswith(b"S "):
            self._sent &= ~_Sent.STARTTLS
            self._rcvd = _Rcvd.STARTTLS
            if not line.startswith(b"S OK "):
                self._fail(ProxyFailure.REMOTE, "STARTTLS failed: " + shown(line[5:]))
            else:
                self._needs_tls()
        elif line.startswith(b"L OK "):
            self._sent &= ~_Sent.LOGIN
            self._rcvd = _Rcvd.LOGIN
            self._logged_in(self._login_reply(line[5:]))
        elif line.startswith(b"L "):
            self._sent &= ~_Sent.LOGIN
            self._rcvd = _Rcvd.LOGIN
            self._login_failed(line[2:])
        elif line[:13].lower() == b"* capability ":
            self._caps = line[13:]
        elif line.startswith(b"C "):
            self._sent &= ~_Sent.CAPABILITY
            self._rcvd = _Rcvd.CAPABILITY
            if line.startswith(b"C OK ") and not self._sent & (_Sent.AUTHENTICATE | _Sent.LOGIN):
                self._write(self._login_commands())  # pipelining was disabled
        elif line[:2].lower() == b"i ":
            self._sent &= ~_Sent.ID
            self._rcvd = _Rcvd.ID
            if self._params.nopipelining:
                self._write(self._after_id())
        elif line[:5].lower() == b"* id " or line.startswith(b"* BYE "):
            pass  # the reply to our ID; a BYE would only confuse a client we keep
        elif line.startswith(b"* "):
            self._events.append(BackendUntagged(line + b"\r\n"))
        else:
            self._events.append(
                BackendIgnored("Unexpected input, ignoring: " + shown(line))
            )

    def _banner(self, line: bytes) -> list[bytes] | None:
        if not line.startswith(b"* OK "):
            self._fail(ProxyFailure.PROTOCOL, "Invalid banner: " + shown(line))
            return None
        commands: list[bytes] = []
        if line[5:].startswith(b"[CAPABILITY "):
            caps = _cut(line[17:], b"]")
            self._caps = caps
            self._sasl_ir = _has_capability(caps, b"SASL-IR")
            self._logindisabled = _has_capability(caps, b"LOGINDISABLED")
            if _has_capability(caps, b"ID") and self._params.id_pairs:
                self._sent |= _Sent.ID
                commands.append(self._id_command())
                if self._params.nopipelining:
                    return commands  # the rest after the I reply
        rest = self._after_id()
        if rest is None:
            return None
        return commands + rest

    def _after_id(self) -> list[bytes] | None:
        """STARTTLS if wanted, else the login commands."""
        if self._params.starttls:
            if self._caps is not None and not _has_capability(self._caps, b"STARTTLS"):
                self._fail(ProxyFailure.REMOTE_CONFIG, "STARTTLS not supported")
                return None
            self._sent |= _Sent.STARTTLS
            return [b"S STARTTLS\r\n"]
        return self._login_commands()

    def _id_command(self) -> bytes:
        parts: list[bytes] = []
        if self._params.client_id:
            parts.append(self._params.client_id.encode("utf-8"))
        for key, value in self._params.id_pairs:
            parts.append(quote_nstring(key) + b" " + quote_nstring(value))
        return b"I ID (" + b" ".join(parts) + b")\r\n"

    def _login_commands(self) -> list[bytes] | None:
        """Dovecot's ``proxy_write_login()``."""
        commands: list[bytes] = []
        params = self._params
        if not self._capability_request_sent and (
            self._caps is None or params.client_ignores_capability_resp_code
        ):
            self._capability_request_sent = True
            self._sent |= _Sent.CAPABILITY
            commands.append(b"C CAPABILITY\r\n")
            if params.nopipelining:
                return commands  # the login follows "C OK"
        if not self._mech:
            if self._logindisabled and not (params.starttls or params.tls_active):
                self._fail(
                    ProxyFailure.REMOTE_CONFIG, "LOGINDISABLED advertised, but SSL/TLS not enabled"
                )
                return None
            commands.append(
                b"L LOGIN "
                + quote_astring(params.user)
                + b" "
                + quote_astring(params.password)
                + b"\r\n"
            )
            self._sent |= _Sent.LOGIN
            return commands
        sasl = self._start_sasl(self._mech, params)
        command = b"L AUTHENTICATE " + self._mech.encode("ascii")
        if self._sasl_ir:
            initial = sasl.output()
            command += b" " + (encode_base64(initial) if initial else b"=")
        commands.append(command + b"\r\n")
        self._sent |= _Sent.AUTHENTICATE
        return commands

    def _continuation(self, line: bytes) -> None:
        if self._sasl is None:
            return  # "+ OK" for a LOGIN literal: nothing to do
        self._sent &= ~_Sent.AUTHENTICATE
        self._rcvd = _Rcvd.AUTH_CONTINUE
        response = self._sasl_response(
            line[2:] if line[1:2] == b" " else None, "Invalid base64 data in AUTHENTICATE response"
        )
        if response is None:
            return
        self._sent |= _Sent.AUTH_CONTINUE
        self._out += encode_base64(response) + b"\r\n"

    def _login_failed(self, rest: bytes) -> None:
        """A tagged ``L`` reply other than OK (Dovecot hides most texts from the client)."""
        log_line = rest[3:] if rest[:3].lower() == b"no " else rest
        kind = ProxyFailure.AUTH
        generic = replies.reply_line(
            self._params.client_tag, Status.NO, replies.AUTH_FAILED_MSG, "AUTHENTICATIONFAILED"
        )
        if rest.startswith(b"NO [AUTHENTICATIONFAILED]"):
            reply = generic
        elif rest.startswith(b"NO ["):
            if _cut(rest[4:], b"]").lower() == b"unavailable":
                kind = ProxyFailure.AUTH_TEMPFAIL
                reply = self._tag + b" NO " + log_line + b"\r\n"
            else:
                reply = self._tag + b" " + rest + b"\r\n"
        else:
            reply = generic
        self._fail(kind, sanitize(log_line), reply)

    def _login_reply(self, rest: bytes) -> bytes:
        """Dovecot's ``client_send_login_reply()``: the client's tag and the backend capabilities."""
        ignores = self._params.client_ignores_capability_resp_code
        capability = self._caps
        tagged_capability = rest[:12].lower() == b"[capability "
        if tagged_capability:
            capability = _cut(rest[12:], b"]")
        out = bytearray()
        if ignores and capability is not None:
            out += b"* CAPABILITY " + capability + b"\r\n"
        out += self._tag + b" OK "
        if not ignores and not tagged_capability and capability is not None:
            out += b"[CAPABILITY " + capability + b"] "
            if rest.startswith(b"["):
                # Replace the backend's own resp-code with ours (Dovecot's intent; its
                # loop stops *at* the "]" and leaves "] " behind).
                end = rest.find(b"]")
                rest = b"" if end < 0 else rest[end + 1 :]
                rest = rest.removeprefix(b" ")
        out += rest + b"\r\n"
        return bytes(out)
