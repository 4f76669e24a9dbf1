"""SASL mechanisms for both sides (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER; EXTERNAL as a client), plus Dovecot's base64 rules.

Theory of operation
-------------------
The login engines only move SASL messages (decoded bytes) between the client and
the driver.  The driver runs one :class:`SaslServer` per exchange::

    server = SaslServer.create(event.mech)
    step = server.start(event.initial_response)
    while isinstance(step, Challenge):
        engine.sasl_challenge(step.data)
        ...                              # wait for AuthContinue / AuthAborted
        step = server.step(continue_event.response)
    # step is Credentials (check them) or SaslFailed (engine.auth_failed(...))

The server mechanisms behave like Dovecot's auth process (``src/auth/mech-plain.c``,
``mech-login.c``): PLAIN is ``authzid NUL authcid NUL password`` with exactly two
NULs, an authzid equal to the authcid counts as none, and no initial response
means an empty challenge first; LOGIN prompts ``Username:`` then ``Password:``,
takes a non-empty initial response as the user name, and refuses NUL bytes.
Names and passwords must be UTF-8 (they become ``str``).

The client side (:class:`SaslClient`, for logging in to a backend) mirrors
Dovecot's ``lib-sasl`` client mechanisms and their error texts.

Base64 follows Dovecot too: :func:`decode_base64` is Dovecot's decoder (white
space is skipped, padding must be right) and :func:`is_base64_text` is the
character check a login process applies to a continuation line before it goes
to the auth process.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Final, TypeAlias

#: Mechanisms this module implements on the server side.
SERVER_MECHANISMS: Final = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
#: Mechanisms this module implements on the client side (Dovecot 2.3's dsasl client has these five).
CLIENT_MECHANISMS: Final = ("PLAIN", "LOGIN", "EXTERNAL", "XOAUTH2", "OAUTHBEARER")
#: Server mechanisms whose failure carries a final JSON challenge (Dovecot's mech-oauth2.c)
OAUTH2_MECHANISMS: Final = ("XOAUTH2", "OAUTHBEARER")

_LOGIN_PROMPT_USER: Final = b"Username:"
_LOGIN_PROMPT_PASS: Final = b"Password:"

# -- base64 ------------------------------------------------------------------

_B64_ALPHABET: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)
_B64_SPACE: Final = b"\r\n \t"
_B64_SHAPE: Final = re.compile(rb"[A-Za-z0-9+/]*(={0,2})\Z")


def encode_base64(data: bytes) -> bytes:
    """Standard base64 with padding and no line breaks."""
    return base64.b64encode(data)


def decode_base64(text: bytes) -> bytes | None:
    """Dovecot's ``base64_decode()``: None when Dovecot would reject ``text``.

    CR, LF, SP and TAB are ignored anywhere; the data must end on a full group,
    with ``=`` padding exactly where a partial group needs it and nothing but
    white space after it.
    """
    compact = text.translate(None, _B64_SPACE)
    match = _B64_SHAPE.match(compact)
    if match is None:
        return None
    padding = len(match.group(1))
    remainder = (len(compact) - padding) % 4
    if (remainder, padding) not in ((0, 0), (2, 2), (3, 1)):
        return None
    try:
        # Dovecot ignores non-zero bits in the last partial group; so does binascii.
        return binascii.a2b_base64(compact)
    except binascii.Error:  # pragma: no cover - the checks above rule it out
        return None


def is_base64_text(text: bytes) -> bool:
    """Only base64 alphabet and ``=``: what a login process accepts as a SASL response line."""
    return all(byte in _B64_ALPHABET or byte == 0x3D for byte in text)


# -- server side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this (decoded) challenge to the client and wait for its response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """The exchange is complete: check these credentials.

    ``authzid`` is empty unless the client asked to act as another user.
    """

    authzid: str
    authcid: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(authzid={self.authzid!r}, authcid={self.authcid!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class SaslFailed:
    """The exchange failed; ``reason`` is for the log (Dovecot's wording)."""

    reason: str


SaslStep: TypeAlias = Challenge | Credentials | SaslFailed


class UnsupportedMechanism(ValueError):
    """No implementation for this SASL mechanism."""


def _utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class SaslServer(ABC):
    """Server side of one SASL exchange; create with :meth:`create`."""

    mech: str = ""

    @staticmethod
    def create(mech: str) -> SaslServer:
        """A fresh exchange for ``mech`` (case-insensitive): PLAIN or LOGIN."""
        name = mech.upper()
        if name == "PLAIN":
            return _PlainServer()
        if name == "LOGIN":
            return _LoginServer()
        if name == "XOAUTH2":
            return _XOAuth2Server()
        if name == "OAUTHBEARER":
            return _OAuthBearerServer()
        raise UnsupportedMechanism(f"Unsupported SASL mechanism {mech}")

    @abstractmethod
    def start(self, initial_response: bytes | None) -> SaslStep:
        """Begin; ``initial_response`` is the decoded SASL-IR (``b""`` for ``=``) or None."""

    @abstractmethod
    def step(self, response: bytes) -> SaslStep:
        """Feed the client's decoded response to the last challenge."""


class _PlainServer(SaslServer):
    mech = "PLAIN"

    def __init__(self) -> None:
        self._done = False

    def start(self, initial_response: bytes | None) -> SaslStep:
        if initial_response is None:
            return Challenge(b"")
        return self.step(initial_response)

    def step(self, response: bytes) -> SaslStep:
        if self._done:
            return SaslFailed("Unexpected continuation")
        self._done = True
        parts = response.split(b"\0")
        if len(parts) != 3:
            return SaslFailed("invalid input")
        authzid_raw, authcid_raw, password_raw = parts
        authzid, authcid, password = _utf8(authzid_raw), _utf8(authcid_raw), _utf8(password_raw)
        if authzid is None or authcid is None or password is None:
            return SaslFailed("invalid input (not UTF-8)")
        if authcid == "":
            return SaslFailed("Empty username")
        if authzid == authcid:
            authzid = ""  # the login user isn't different
        return Credentials(authzid, authcid, password)


class _LoginServer(SaslServer):
    mech = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None
        self._done = False

    def start(self, initial_response: bytes | None) -> SaslStep:
        if not initial_response:
            return Challenge(_LOGIN_PROMPT_USER)
        return self.step(initial_response)

    def step(self, response: bytes) -> SaslStep:
        if self._done:
            return SaslFailed("Unexpected continuation")
        if b"\0" in response:
            self._done = True
            return SaslFailed("Unexpected NUL in auth data")
        value = _utf8(response)
        if value is None:
            self._done = True
            return SaslFailed("invalid input (not UTF-8)")
        if self._user is None:
            if value == "":
                self._done = True
                return SaslFailed("Empty username")
            self._user = value
            return Challenge(_LOGIN_PROMPT_PASS)
        self._done = True
        return Credentials("", self._user, value)


def oauth2_failure_challenge(mech: str) -> bytes:
    """The JSON a failed XOAUTH2/OAUTHBEARER login is answered with before the final NO.

    Dovecot's ``xoauth2_verify_callback()`` / ``oauthbearer_verify_callback()``;
    the client acknowledges it with any line, then gets the failure reply.
    """
    if mech.upper() == "XOAUTH2":
        return b'{"status":"401","schemes":"bearer","scope":"mail"}'
    return b'{"status":"invalid_token"}'


def _valid_token(token: str) -> bool:
    """``oauth2_valid_token()``: non-empty, no CR or LF."""
    return token != "" and "\r" not in token and "\n" not in token


def _bearer_token(fields: list[str]) -> str | bool | None:
    """The ``auth=Bearer <token>`` field: the token, None if absent, False if malformed."""
    token: str | None = None
    for item in fields:
        if item.startswith("auth="):
            value = item[5:]
            if value[:7].lower() != "bearer " or not _valid_token(value[7:]):
                return False
            token = value[7:]
    return token


class _OAuth2Server(SaslServer):
    """XOAUTH2 / OAUTHBEARER: the bearer token is checked like a password by the passdb chain."""

    def __init__(self) -> None:
        self._done = False

    def start(self, initial_response: bytes | None) -> SaslStep:
        if initial_response is None:
            return Challenge(b"")  # mech_generic_auth_initial()
        return self.step(initial_response)

    def step(self, response: bytes) -> SaslStep:
        if self._done:
            return SaslFailed("Unexpected continuation")
        self._done = True
        text = _utf8(response)
        if text is None:
            return SaslFailed("invalid input (not UTF-8)")
        return self._parse(text.split("\x01"))

    @abstractmethod
    def _parse(self, fields: list[str]) -> SaslStep: ...


class _XOAuth2Server(_OAuth2Server):
    """``user=<name>^Aauth=Bearer <token>^A^A`` (Dovecot's ``mech_xoauth2_auth_continue()``)."""

    mech = "XOAUTH2"

    def _parse(self, fields: list[str]) -> SaslStep:
        user: str | None = None
        for item in fields:
            if item.startswith("user="):
                user = item[5:]
        token = _bearer_token(fields)
        if token is False:
            return SaslFailed("Invalid continued data")
        if not user or not isinstance(token, str):
            return SaslFailed("Username or token missing")
        return Credentials("", user, token)


class _OAuthBearerServer(_OAuth2Server):
    """RFC 7628: ``n,a=<name>,^A...^Aauth=Bearer <token>^A^A`` (``mech_oauthbearer_auth_continue()``)."""

    mech = "OAUTHBEARER"

    def _parse(self, fields: list[str]) -> SaslStep:
        if not fields or fields[0] == "":
            return SaslFailed("Invalid continued data")
        user: str | None = None
        for part in (p for p in fields[0].split(",") if p):
            kind = part[0]
            if kind == "f":
                return SaslFailed("Client requested non-standard mechanism")
            if kind == "p":
                return SaslFailed("Client requested and used channel-binding")
            if kind in "ny":
                continue
            if kind == "a":
                user = unescape_saslname(part[2:]) if part[1:2] == "=" else None
                if user is None:
                    return SaslFailed("Invalid username escaping")
                continue
            return SaslFailed("Invalid gs2-header in request")
        token = _bearer_token(fields)
        if token is False:
            return SaslFailed("Invalid continued data")
        if not user or not isinstance(token, str):
            return SaslFailed("Missing username or token")
        return Credentials("", user, token)


def unescape_saslname(text: str) -> str | None:
    """RFC 5801 ``saslname``: ``=2C`` is ``,`` and ``=3D`` is ``=``; a bare ``,`` or other ``=`` is invalid."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == ",":
            return None
        if char == "=":
            code = text[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
            continue
        out.append(char)
        i += 1
    return "".join(out)


# -- client side ---------------------------------------------------------------


def plain_client_response(authzid: str, authcid: str, password: str) -> bytes:
    """``authzid NUL authcid NUL password`` as Dovecot's PLAIN client sends it (authzid kept even if equal)."""
    return b"\0".join(part.encode("utf-8") for part in (authzid, authcid, password))


class SaslClientError(Exception):
    """The server broke the exchange; the message is Dovecot's error text."""


class SaslClient(ABC):
    """Client side of one exchange towards a backend (Dovecot's ``dsasl_client``)."""

    mech: str = ""

    @staticmethod
    def create(mech: str, *, authzid: str, authcid: str, password: str) -> SaslClient:
        """One of :data:`CLIENT_MECHANISMS` (case-insensitive); else :class:`UnsupportedMechanism`.

        As in Dovecot's proxies, ``authzid`` is the user to log in as (``destuser``)
        and ``authcid`` the identity whose ``password`` is given (the master user,
        or the same user).
        """
        name = mech.upper()
        if name == "PLAIN":
            return _PlainClient(authzid, authcid, password)
        if name == "LOGIN":
            return _LoginClient(authcid, password)
        if name == "EXTERNAL":
            return _ExternalClient(authzid or authcid)
        if name == "XOAUTH2":
            return _XOAuth2Client(authcid, password)
        if name == "OAUTHBEARER":
            return _OAuthBearerClient(authcid, password)
        raise UnsupportedMechanism(f"Unsupported SASL mechanism {mech}")

    @abstractmethod
    def output(self) -> bytes:
        """What to send now (the initial response, or the answer to the last challenge)."""

    @abstractmethod
    def input(self, challenge: bytes) -> None:
        """Take the server's decoded challenge; raises :class:`SaslClientError`."""

    def __repr__(self) -> str:
        return f"<SaslClient {self.mech}>"


class _PlainClient(SaslClient):
    mech = "PLAIN"

    def __init__(self, authzid: str, authcid: str, password: str) -> None:
        self._authzid = authzid
        self._authcid = authcid
        self._password = password
        self._output_sent = False

    def output(self) -> bytes:
        self._output_sent = True
        return plain_client_response(self._authzid, self._authcid, self._password)

    def input(self, challenge: bytes) -> None:
        if self._output_sent:
            raise SaslClientError("Server didn't finish authentication")
        if challenge:
            raise SaslClientError("Server sent non-empty initial response")


class _LoginClient(SaslClient):
    mech = "LOGIN"

    def __init__(self, authcid: str, password: str) -> None:
        self._authcid = authcid
        self._password = password
        self._state = 0  # 0 initial, 1 user asked, 2 password asked

    def output(self) -> bytes:
        if self._state == 0:
            return b""
        if self._state == 1:
            return self._authcid.encode("utf-8")
        return self._password.encode("utf-8")

    def input(self, challenge: bytes) -> None:
        if self._state == 2:
            raise SaslClientError("Server didn't finish authentication")
        self._state += 1


class _ExternalClient(SaslClient):
    """EXTERNAL: the identity comes from the TLS client certificate; we only name the user."""

    mech = "EXTERNAL"

    def __init__(self, username: str) -> None:
        self._username = username
        self._output_sent = False

    def output(self) -> bytes:
        self._output_sent = True
        return self._username.encode("utf-8")

    def input(self, challenge: bytes) -> None:
        if self._output_sent:
            raise SaslClientError("Server didn't finish authentication")
        if challenge:
            raise SaslClientError("Server sent non-empty initial response")


class _OAuth2Client(SaslClient):
    """XOAUTH2 / OAUTHBEARER with the password as the bearer token (``mech-oauthbearer.c``)."""

    def __init__(self, authcid: str, token: str) -> None:
        self._authcid = authcid
        self._token = token
        self._output_sent = False

    @abstractmethod
    def _message(self) -> bytes: ...

    def output(self) -> bytes:
        self._output_sent = True
        return self._message()

    def input(self, challenge: bytes) -> None:
        if not self._output_sent:
            if challenge:
                raise SaslClientError("Server sent non-empty initial response")
            return
        if not challenge:
            return  # an empty response means success follows
        # the server refused: it sent a JSON error (answered by the final reply)
        try:
            status = json.loads(challenge.decode("utf-8")).get("status")
        except (ValueError, AttributeError):
            status = None
        if not isinstance(status, str | int):
            raise SaslClientError("Error parsing JSON reply: Status value missing")
        raise SaslClientError(f"Failed to authenticate: {status}")


class _XOAuth2Client(_OAuth2Client):
    mech = "XOAUTH2"

    def _message(self) -> bytes:
        return f"user={self._authcid}\x01auth=Bearer {self._token}\x01\x01".encode()


class _OAuthBearerClient(_OAuth2Client):
    mech = "OAUTHBEARER"

    def _message(self) -> bytes:
        # Dovecot's proxies set neither host nor port, and do not escape the name
        return f"n,a={self._authcid},\x01auth=Bearer {self._token}\x01\x01".encode()
