"""A small RFC 5802 SCRAM client for the tests (no library speaks SCRAM to IMAP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    """One exchange: ``first()``, then ``final(server_first)``, then ``verify(server_final)``."""

    def __init__(self, hash_name: str, user: str, password: str, authzid: str = "") -> None:
        self.hash_name = hash_name
        self.password = password
        self.cnonce = secrets.token_urlsafe(18)
        self.gs2_header = f"n,{'a=' + _escape(authzid) if authzid else ''},"
        self.first_bare = f"n={_escape(user)},r={self.cnonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2_header + self.first_bare).encode()

    def final(self, server_first: bytes, *, password: str | None = None) -> bytes:
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.cnonce)
        secret = (self.password if password is None else password).encode()
        salted = hashlib.pbkdf2_hmac(self.hash_name, secret, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self.hash_name)
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        binding = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={binding},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash_name)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash_name)
        self.server_signature = hmac.digest(server_key, auth_message, self.hash_name)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)
