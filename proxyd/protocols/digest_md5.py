"""RFC 2831 DIGEST-MD5 directives as Dovecot's ``mech-digest-md5.c`` reads them (sans-IO).

The challenge is built and the client's ``digest-response`` parsed here; the
MD5 arithmetic is in ``proxyd.auth.mechanisms.digest_md5``.  Errors are
Dovecot's log texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyd.log import sanitize

_UINT_MAX = 2**32 - 1
_ULONG_MAX = 2**64 - 1
QOP_NAMES = ("auth", "auth-int", "auth-conf")
#: the QoPs Dovecot offers (integrity and confidentiality layers are not implemented)
OFFERED_QOP = "auth"


class DigestParseError(ValueError):
    """The client's response is malformed; ``str(exc)`` is Dovecot's log text."""


@dataclass(frozen=True, slots=True)
class DigestResponse:
    username: str
    realm: str  # "" when the client named none
    cnonce: str
    nonce_count: str
    qop: str
    digest_uri: str | None
    response: str
    authzid: str  # "" when none


def challenge(nonce: str, realms: tuple[str, ...] = ()) -> bytes:
    """``get_digest_challenge()``: realms, nonce, qop, charset and algorithm."""
    parts = [f'realm="{realm}",' for realm in realms] if realms else ['realm="",']
    parts.append(f'nonce="{nonce}",')
    parts.append(f'qop="{OFFERED_QOP}",')
    parts.append('charset="utf-8",algorithm="md5-sess"')
    return "".join(parts).encode()


def _is_lws(char: str) -> bool:
    return char in " \t"


def directives(text: str) -> list[tuple[str, str]]:
    """``parse_next()`` over the whole string: ``key=value`` / ``key="quoted"`` pairs.

    A part without ``=`` is skipped; quoted values lose their backslashes.
    """
    pairs: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and _is_lws(text[pos]):
            pos += 1
        key_start = pos
        while pos < end and text[pos] not in "=,":
            pos += 1
        if pos >= end or text[pos] != "=":
            if pos < end and text[pos] == ",":
                pos += 1
            continue
        key = text[key_start:pos].rstrip(" \t")
        pos += 1
        while pos < end and _is_lws(text[pos]):
            pos += 1
        if pos < end and text[pos] == '"':
            pos += 1
            value: list[str] = []
            while pos < end and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < end:
                    pos += 1
                value.append(text[pos])
                pos += 1
            if pos < end:
                pos += 1  # the closing quote
            pairs.append((key, "".join(value)))
        else:
            value_start = pos
            while pos < end and text[pos] != ",":
                pos += 1
            pairs.append((key, text[value_start:pos].rstrip(" \t")))
            if pos < end:
                pos += 1
        if pos < end and text[pos] == ",":
            pos += 1
    return pairs


def parse_response(data: bytes, nonce: str) -> DigestResponse:
    """``parse_digest_response()`` + ``auth_handle_response()`` for the challenge with ``nonce``."""
    if not data:
        raise DigestParseError("Client sent no input")
    try:
        text = data.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise DigestParseError("invalid input (not UTF-8)") from None
    username: str | None = None
    realm = ""
    cnonce: str | None = None
    nonce_count: str | None = None
    qop: str | None = None
    digest_uri: str | None = None
    response = ""
    authzid: str | None = None
    maxbuf_seen = False
    nonce_found = False
    for raw_key, value in directives(text):
        key = raw_key.lower()
        if key == "realm":
            if not realm and value:
                realm = value
        elif key == "username":
            if username is not None:
                raise DigestParseError("username must not exist more than once")
            if not value:
                raise DigestParseError("empty username")
            username = value
        elif key == "nonce":
            if value != nonce:
                raise DigestParseError("Invalid nonce")
            nonce_found = True
        elif key == "cnonce":
            if cnonce is not None:
                raise DigestParseError("cnonce must not exist more than once")
            if not value:
                raise DigestParseError("cnonce can't contain empty value")
            cnonce = value
        elif key == "nc":
            if nonce_count is not None:
                raise DigestParseError("nonce-count must not exist more than once")
            if not value.isascii() or not value.isdigit() or int(value) > _UINT_MAX:
                raise DigestParseError("nonce-count value invalid")
            if int(value) != 1:
                raise DigestParseError("re-auth not supported currently")
            nonce_count = value
        elif key == "qop":
            lowered = value.lower()
            if lowered not in QOP_NAMES:
                raise DigestParseError(f"Unknown QoP value: {sanitize(value, 32)}")
            if lowered != OFFERED_QOP:
                raise DigestParseError("Nonallowed QoP requested")
            qop = value
        elif key == "digest-uri":
            if "/" not in value:  # serv-type "/" host [ "/" serv-name ]
                raise DigestParseError("Invalid digest-uri")
            digest_uri = value
        elif key == "maxbuf":
            if maxbuf_seen:
                raise DigestParseError("maxbuf must not exist more than once")
            if not value.isascii() or not value.isdigit() or not 0 < int(value) <= _ULONG_MAX:
                raise DigestParseError("Invalid maxbuf value")
            maxbuf_seen = True
        elif key == "charset":
            if value.lower() != "utf-8":
                raise DigestParseError("Only utf-8 charset is allowed")
        elif key == "response":
            if len(value) != 32:
                raise DigestParseError("Invalid response value")
            response = value
        elif key == "authzid":
            if authzid is not None:
                raise DigestParseError("authzid must not exist more than once")
            if not value:
                raise DigestParseError("empty authzid")
            authzid = value
        # cipher and unknown keys are ignored
    if not nonce_found:
        raise DigestParseError("Missing nonce parameter")
    if cnonce is None:
        raise DigestParseError("Missing cnonce parameter")
    if username is None:
        raise DigestParseError("Missing username parameter")
    return DigestResponse(
        username=username,
        realm=realm,
        cnonce=cnonce,
        nonce_count=nonce_count or "00000001",
        qop=qop or "auth",
        digest_uri=digest_uri,
        response=response,
        authzid=authzid or "",
    )

