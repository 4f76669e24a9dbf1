"""Local JWT validation of the ``oauth2`` passdb (Dovecot 2.3's ``lib-oauth2/oauth2-jwt.c``).

With ``introspection_mode = local`` the bearer token is a JWT checked here,
without asking the authorization server:

1. ``HEADER.BODY.SIGNATURE``, base64url; the header needs ``alg`` (upper-cased);
   ``kid`` defaults to ``default`` and must not be empty;
2. the body needs ``sub`` and ``exp``; ``exp``/``nbf``/``iat`` are integers or
   ISO 8601 dates, ``nbf``/``iat`` default to now; then, in Dovecot's order:
   not valid yet, issued in future, expired, conflicting times; ``iss`` in
   ``issuers`` (when set); ``client_id`` (when set) in ``aud``; every word of
   ``scope`` (when set) in the token's ``scope``;
3. the signing key is looked up as ``<azp>/<alg>/<kid>`` (``azp`` defaults to
   ``default``; ``/`` and ``%`` escaped as ``%2f``/``%25``) in
   ``local_validation_key_dict``; HS256/384/512 keys are base64, RS*/PS*/ES*
   keys PEM public keys; found keys are cached for the passdb's lifetime, as
   Dovecot's key cache does;
4. the body's scalar members (nested objects flattened) become the fields that
   the passdb's usual checks (``username_attribute``, ``active_attribute``)
   and ``pass_attrs`` use.

The signature is checked with ``cryptography`` (and ``hmac`` for HS*), not a
JWT library: Dovecot's claim rules and failure texts are its own, and a JWT
library would have to have every one of its own checks switched off.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from proxyd.log import sanitize

_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC: Final = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
#: ``(azp, alg, kid) -> the key file's text, or None when there is none``; raises JwtError
KeyLookup = Callable[[str, str, str], Awaitable[str | None]]


class JwtError(Exception):
    """A token refused; the text is Dovecot's."""


@dataclass(frozen=True, slots=True)
class JwtChecks:
    """The settings the token's claims are checked against."""

    issuers: tuple[str, ...] = ()
    client_id: str = ""
    scope: str = ""


@dataclass(frozen=True, slots=True)
class ParsedJwt:
    """A token whose claims passed; its signature is still to be checked."""

    alg: str
    kid: str
    azp: str
    signing_input: bytes
    signature: bytes
    fields: dict[str, str]


def _b64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise JwtError("Invalid JSON") from None
    if not isinstance(value, dict):
        raise JwtError("Invalid JSON")
    return value


def _scalar(value: object) -> str | None:
    """``json_tree_get_value_str()`` of a scalar; objects, arrays and null have none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def _field(tree: dict[str, Any], key: str) -> str | None:
    return _scalar(tree.get(key))


def _time_field(tree: dict[str, Any], key: str) -> int | None:
    """``get_time_field()``: an integer or an ISO 8601 date; raises on negative or other."""
    value = _field(tree, key)
    if value is None:
        return None
    digits = value[1:] if value[:1] in "+-" else value
    try:
        if digits.isascii() and digits.isdigit():
            number = int(value)
        else:
            number = int(datetime.datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError, OSError):
        raise JwtError(f"Malformed '{key}' field") from None
    if not 0 <= number < 2**63:  # int64_t in Dovecot
        raise JwtError(f"Malformed '{key}' field")
    return number


def escape_identifier(identifier: str) -> str:
    """``/`` and ``%`` as ``%2f`` and ``%25``: an identifier is one path segment."""
    return identifier.replace("%", "%25").replace("/", "%2f")


def _copy_fields(tree: dict[str, Any]) -> dict[str, str]:
    """``oauth2_jwt_copy_fields()``: scalars, then nested objects' scalars, breadth first."""
    fields: dict[str, str] = {}
    queue = [tree]
    while queue:
        node = queue.pop(0)
        for key, value in node.items():
            if isinstance(value, dict):
                queue.append(value)
            elif (text := _scalar(value)) is not None:
                fields[key] = text
    return fields


def _check_scope(wanted: str, got: str) -> bool:
    got_words = {word.lower() for word in got.replace(",", " ").split()}
    return all(word.lower() in got_words for word in wanted.replace(",", " ").split())


def parse(token: str, checks: JwtChecks, now: int | None = None) -> ParsedJwt:
    """Decode ``token`` and check its claims (``oauth2_try_parse_jwt()`` up to the signature)."""
    blobs = token.split(".")
    if len(blobs) != 3:
        raise JwtError("Not a JWT token")
    header_bytes = _b64url(blobs[0])
    if not header_bytes:
        raise JwtError("Not a JWT token")
    header = _json_object(header_bytes)
    alg = _field(header, "alg")
    if alg is None:
        raise JwtError("Cannot find 'alg' field")
    alg = alg.upper()
    kid = _field(header, "kid")
    if kid is None:
        kid = "default"
    elif not kid:
        raise JwtError("'kid' field is empty")
    else:
        kid = escape_identifier(kid)
    body = _json_object(_b64url(blobs[1]))
    t0 = int(time.time()) if now is None else now
    if _field(body, "sub") is None:
        raise JwtError("Missing 'sub' field")
    exp = _time_field(body, "exp")
    if exp is None:
        raise JwtError("Missing 'exp' field")
    nbf = _time_field(body, "nbf") or t0
    iat = _time_field(body, "iat") or t0
    if nbf > t0:
        raise JwtError("Token is not valid yet")
    if iat > t0:
        raise JwtError("Token is issued in future")
    if exp < t0:
        raise JwtError("Token has expired")
    if exp < iat or exp < nbf:
        raise JwtError("Token time values are conflicting")
    if checks.issuers:
        iss = _field(body, "iss")
        if iss is None:
            raise JwtError("Token is missing 'iss' field")
        if iss not in checks.issuers:
            raise JwtError(f"Issuer '{sanitize(iss, 128)}' is not allowed")
    if checks.client_id:
        aud = body.get("aud")
        auds = [_scalar(item) for item in aud] if isinstance(aud, list) else [_scalar(aud)]
        if aud is None or isinstance(aud, dict):
            raise JwtError("client_id set but aud is missing")
        if checks.client_id not in auds:
            raise JwtError("client_id not found in aud field")
    if checks.scope:
        got_scope = _field(body, "scope")
        if got_scope is None:
            raise JwtError("scope set but not found in token")
        if not _check_scope(checks.scope, got_scope):
            raise JwtError(f"configured scope '{checks.scope}' missing from token scope '{sanitize(got_scope)}'")
    azp = _field(body, "azp")
    return ParsedJwt(
        alg=alg,
        kid=kid,
        azp="default" if azp is None else escape_identifier(azp),
        signing_input=f"{blobs[0]}.{blobs[1]}".encode(),
        signature=_b64url(blobs[2]),
        fields=_copy_fields(body),
    )


class KeyCache:
    """The validation keys of one passdb: looked up once, then kept (Dovecot's key cache)."""

    def __init__(self, lookup: KeyLookup) -> None:
        self._lookup = lookup
        self._hmac: dict[str, bytes] = {}
        self._public: dict[str, PublicKey] = {}

    async def _text(self, jwt: ParsedJwt) -> str:
        text = await self._lookup(jwt.azp, jwt.alg, jwt.kid)
        if text is None:
            raise JwtError(f"{jwt.alg} key '{jwt.kid}' not found")
        return text

    async def hmac_key(self, jwt: ParsedJwt) -> bytes:
        cache_id = f"{jwt.azp}.{jwt.alg}.{jwt.kid}"
        if (key := self._hmac.get(cache_id)) is None:
            try:
                key = base64.b64decode("".join((await self._text(jwt)).split()))
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise JwtError("Invalid base64 encoded key")
            self._hmac[cache_id] = key
        return key

    async def public_key(self, jwt: ParsedJwt) -> PublicKey:
        cache_id = f"{jwt.azp}.{jwt.alg}.{jwt.kid}"
        if (key := self._public.get(cache_id)) is None:
            text = await self._text(jwt)
            try:
                loaded = load_pem_public_key(text.encode())
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise JwtError(f"Cannot load key: {exc}") from None
            if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise JwtError("Cannot load key: not an RSA or EC public key")
            key = self._public[cache_id] = loaded
        return key


async def verify_signature(jwt: ParsedJwt, keys: KeyCache) -> None:
    """``oauth2_validate_signature()``: HS* by HMAC, RS*/PS*/ES* by the public key."""
    alg = jwt.alg
    if alg.startswith("HS"):
        digest = _HMAC.get(alg)
        if digest is None:
            raise JwtError(f"unsupported algorithm '{alg}'")
        mac = hmac.digest(await keys.hmac_key(jwt), jwt.signing_input, digest)
        if not hmac.compare_digest(mac, jwt.signature):
            raise JwtError("Incorrect JWT signature")
        return
    if not alg.startswith(("RS", "PS", "ES")) or alg[2:] not in _HASHES:
        raise JwtError(f"Unsupported algorithm '{alg}'")
    algorithm = _HASHES[alg[2:]]()
    key = await keys.public_key(jwt)
    try:
        if alg.startswith("ES"):
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            # JWS ES* signatures are r || s, each as long as the curve's order
            half = len(jwt.signature) // 2
            if half == 0 or len(jwt.signature) % 2:
                raise InvalidSignature
            r = int.from_bytes(jwt.signature[:half], "big")
            s = int.from_bytes(jwt.signature[half:], "big")
            key.verify(encode_dss_signature(r, s), jwt.signing_input, ec.ECDSA(algorithm))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidSignature
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            )
            key.verify(jwt.signature, jwt.signing_input, pad, algorithm)
    except (InvalidSignature, ValueError):
        raise JwtError("Bad signature") from None
