"""User name checks and normalisation before any passdb lookup (``auth_request_fix_username``).

Dovecot's settings, in its order (``UsernameRules``):

* ``auth_default_realm``: appended as ``@realm`` to a name without ``@``;
* ``auth_username_translation`` (pairs of characters, ``from to``) is applied,
  then every character must be in ``auth_username_chars`` (default
  ``a-zA-Z0-9.-_@``; empty allows any), else the login fails;
* ``auth_username_format`` (default ``%Lu``: lowercased, ASCII only) is expanded
  with the auth request's variables, ``%u`` being the name so far (``%n`` the
  part before ``@``, ``%d`` the domain, ``%Ln``, ...).  An empty format leaves
  the name as it is.

and the password check ``password_has_illegal_chars``: a password containing
``\\x01``, TAB, CR or LF is never looked up (Dovecot treats it as an unknown
user, because those bytes are separators in its internal protocols).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from proxyd.auth.expand import ExpandError, Variables, ascii_lower, expand
from proxyd.config.filters import FilterResolver
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError
from proxyd.log import sanitize

DEFAULT_USERNAME_CHARS: Final = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@"
)
_ILLEGAL_PASSWORD_CHARS: Final = frozenset("\x01\t\r\n")


class UsernameError(ValueError):
    """The name cannot be used; the message is safe to log (Dovecot's wording)."""


@dataclass(frozen=True, slots=True)
class UsernameRules:
    """``auth_username_chars``, ``auth_username_translation``, ``auth_username_format``, ``auth_default_realm``."""

    chars: str = DEFAULT_USERNAME_CHARS
    translation: str = ""
    format: str = "%Lu"
    default_realm: str = ""
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False)
    _table: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", frozenset(self.chars))
        pairs = self.translation
        table = {ord(pairs[i]): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}
        object.__setattr__(self, "_table", table)

    def apply(self, user: str, variables: Callable[[str], Variables] | None = None) -> str:
        """The name as passdbs see it, or ``UsernameError``.

        ``variables(name)`` gives the auth request's variables with ``%u`` = name
        (without it only the user name variables exist).
        """
        name = user
        if self.default_realm and "@" not in name:
            name = f"{name}@{self.default_realm}"
        if self._table:
            name = name.translate(self._table)
        if self.chars and not self._allowed.issuperset(name):
            for char in name:
                if char not in self._allowed:
                    code = ord(char)
                    shown = f"0x{code:02x}" if code < 0x100 else f"U+{code:04X}"
                    raise UsernameError(
                        "Username character disallowed by auth_username_chars: "
                        f"{shown} (username: {sanitize(user, 128)})"
                    )
        if self.format == "%Lu":
            name = ascii_lower(name)  # the default, without building the variables
        elif self.format:
            table = variables(name) if variables is not None else _user_variables(name)
            try:
                name = expand(self.format, table)
            except ExpandError as exc:
                raise UsernameError(f"Failed to expand username_format={self.format}: {exc}") from None
        if not name:
            raise UsernameError("Empty username")
        return name


DEFAULT_RULES: Final = UsernameRules()


def _user_variables(user: str) -> Variables:
    username, at, domain = user.partition("@")
    values = {"user": user, "username": username, "domain": domain if at else None}
    return Variables(
        short={"u": user, "n": username, "d": values["domain"]}, long=values
    )


def rules_from(settings: Settings) -> UsernameRules:
    return UsernameRules(
        chars=settings.auth_username_chars,
        translation=settings.auth_username_translation,
        format=settings.auth_username_format,
        default_realm=settings.auth_default_realm,
    )


class RulesByProtocol:
    """The user name rules of each protocol (``protocol NAME { auth_username_format = ... }``)."""

    def __init__(self, settings: Settings) -> None:
        self._resolver = FilterResolver(settings)
        self._rules: dict[str, UsernameRules] = {}

    def __call__(self, protocol: str) -> UsernameRules:
        rules = self._rules.get(protocol)
        if rules is None:
            rules = self._rules[protocol] = rules_from(self._resolver.lookup(protocol))
        return rules


def check_username_settings(settings: Settings) -> None:
    """``auth_username_format`` with an unknown variable is a ``FILE:LINE`` error (``proxyd -n``)."""
    for protocol in ("", *settings.protocols):
        rules = RulesByProtocol(settings)(protocol)
        try:
            rules.apply("check@example.org")
        except UsernameError as exc:
            if str(exc).startswith("Failed to expand"):
                raise ConfigError(settings.explicit.get("auth_username_format"), str(exc)) from None


def normalize_username(
    user: str,
    rules: UsernameRules = DEFAULT_RULES,
    variables: Callable[[str], Variables] | None = None,
) -> str:
    """The name as passdbs see it, or ``UsernameError`` (see :class:`UsernameRules`)."""
    return rules.apply(user, variables)


def password_has_illegal_chars(password: str) -> bool:
    """True for passwords Dovecot refuses to look up at all."""
    return not _ILLEGAL_PASSWORD_CHARS.isdisjoint(password)

