"""RFC 5802 SCRAM messages as Dovecot's ``mech-scram.c`` reads and writes them (sans-IO).

Only parsing and formatting live here; the proof arithmetic is in
``proxyd.auth.mechanisms.scram``.  Parse errors are Dovecot's log texts.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from proxyd.protocols.sasl import decode_base64, unescape_saslname


class ScramParseError(ValueError):
    """The client's message is malformed; ``str(exc)`` is Dovecot's log text."""


@dataclass(frozen=True, slots=True)
class ClientFirst:
    """``client-first-message``: ``gs2-header client-first-message-bare``."""

    gs2_header: str
    authzid: str  # "" when the client named none
    username: str
    cnonce: str
    bare: str


@dataclass(frozen=True, slots=True)
class ClientFinal:
    """``client-final-message``: what the proof signs, and the proof itself."""

    without_proof: str
    channel_binding: str
    nonce: str
    proof: bytes


def _c_string(data: bytes) -> str:
    """Dovecot reads the message as a C string: it ends at the first NUL."""
    try:
        return data.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ScramParseError("Invalid input (not UTF-8)") from None


def parse_client_first(data: bytes) -> ClientFirst:
    """``parse_scram_client_first()``."""
    text = _c_string(data)
    flag, sep, rest = text.partition(",")
    if not sep:
        raise ScramParseError("Invalid initial client message: Missing first ',' in GS2 header")
    authzid_field, sep, bare = rest.partition(",")
    if not sep:
        raise ScramParseError("Invalid initial client message: Missing second ',' in GS2 header")
    fields = bare.split(",")
    if len(fields) < 2:
        raise ScramParseError("Invalid initial client message: Missing nonce field")
    username_field, nonce_field = fields[0], fields[1]
    if flag[:1] == "p":
        raise ScramParseError("Channel binding not supported")
    if flag[:1] not in ("y", "n"):
        raise ScramParseError("Invalid GS2 header")
    authzid = ""
    if authzid_field:
        if not authzid_field.startswith("a="):
            raise ScramParseError("Invalid authzid field")
        unescaped = unescape_saslname(authzid_field[2:])
        if unescaped is None:
            raise ScramParseError("authzid escaping is invalid")
        authzid = unescaped
    if username_field[:1] == "m":
        raise ScramParseError("Mandatory extension(s) not supported")
    if not username_field.startswith("n="):
        raise ScramParseError("Invalid username field")
    username = unescape_saslname(username_field[2:])
    if username is None:
        raise ScramParseError("Username escaping is invalid")
    if not nonce_field.startswith("r="):
        raise ScramParseError("Invalid client nonce")
    return ClientFirst(
        gs2_header=f"{flag},{authzid_field},",
        authzid=authzid,
        username=username,
        cnonce=nonce_field[2:],
        bare=bare,
    )


def parse_client_final(data: bytes, digest_size: int) -> ClientFinal:
    """``parse_scram_client_final()`` up to the checks that need the exchange's state."""
    fields = _c_string(data).split(",")
    if len(fields) < 3:
        raise ScramParseError("Invalid final client message")
    last = fields[-1]
    if last[:1] != "p":
        raise ScramParseError("Invalid ClientProof")
    proof = decode_base64(last[2:].encode("ascii", "replace"))
    if proof is None:
        raise ScramParseError("Invalid base64 encoding")
    if len(proof) != digest_size:
        raise ScramParseError("Invalid ClientProof length")
    return ClientFinal(
        without_proof=",".join(fields[:-1]),
        channel_binding=fields[0],
        nonce=fields[1],
        proof=proof,
    )


def channel_binding(gs2_header: str) -> str:
    """The ``c=`` field a client without channel binding must send back."""
    return "c=" + base64.b64encode(gs2_header.encode("utf-8")).decode("ascii")


def server_first(nonce: str, salt_b64: str, iterations: int) -> bytes:
    return f"r={nonce},s={salt_b64},i={iterations}".encode()


def server_final(signature: bytes) -> bytes:
    return b"v=" + base64.b64encode(signature)
