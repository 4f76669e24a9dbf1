"""User name checks and normalisation before any passdb lookup (``auth_request_fix_username``).

proxyd applies Dovecot's defaults, which are not configurable yet:

* ``auth_username_chars = a-zA-Z0-9.-_@``: any other character fails the login.
* ``auth_username_format = %Lu``: the name is lowercased (ASCII only).

and the password check ``password_has_illegal_chars``: a password containing
``\\x01``, TAB, CR or LF is never looked up (Dovecot treats it as an unknown
user, because those bytes are separators in its internal protocols).
"""

from __future__ import annotations

from typing import Final

from proxyd.auth.expand import ascii_lower
from proxyd.log import sanitize

_USERNAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@"
)
_ILLEGAL_PASSWORD_CHARS: Final = frozenset("\x01\t\r\n")


class UsernameError(ValueError):
    """The name cannot be used; the message is safe to log (Dovecot's wording)."""


def normalize_username(user: str) -> str:
    """The name as passdbs see it, or ``UsernameError``."""
    for char in user:
        if char not in _USERNAME_CHARS:
            code = ord(char)
            shown = f"0x{code:02x}" if code < 0x100 else f"U+{code:04X}"
            raise UsernameError(
                "Username character disallowed by auth_username_chars: "
                f"{shown} (username: {sanitize(user, 128)})"
            )
    normalized = ascii_lower(user)
    if not normalized:
        raise UsernameError("Empty username")
    return normalized


def password_has_illegal_chars(password: str) -> bool:
    """True for passwords Dovecot refuses to look up at all."""
    return any(char in _ILLEGAL_PASSWORD_CHARS for char in password)

