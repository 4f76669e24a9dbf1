"""The passdb driver interface (Dovecot's ``passdb_module_interface``, kept to the async minimum).

A driver module exposes a factory, registered under the entry-point group
``proxyd.passdb``::

    def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]

The context manager opens whatever the driver needs (files, pools, connections)
and closes it on exit.  The returned object answers lookups.

A driver reports *results*, not exceptions: "user unknown" is
``PassdbResult.USER_UNKNOWN``.  Trouble with the backing store (database down,
unreadable file, timeout) is ``raise PassdbTempFail(...)``, which the client sees
as Dovecot's temporary failure.  Drivers never verify passwords themselves unless
they must (LDAP ``auth_bind``): they return the stored password with its scheme and
the chain verifies it in one place (``proxyd.auth.schemes``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from proxyd.errors import ProxydError

if TYPE_CHECKING:
    from proxyd.auth.request import AuthRequest
    from proxyd.config.settings import PassdbSettings
    from proxyd.secret import Secret


class PassdbResult(enum.Enum):
    """Mirrors Dovecot's ``enum passdb_result``."""

    OK = "ok"
    USER_UNKNOWN = "user_unknown"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - an enum name, not a password
    PASSWORD_MISMATCH = "password_mismatch"  # noqa: S105 - an enum name, not a password
    SCHEME_NOT_AVAILABLE = "scheme_not_available"
    INTERNAL_FAILURE = "internal_failure"


class PassdbTempFail(ProxydError):
    """The passdb could not answer now (store down, timeout, bad data). Never contains a password."""


@dataclass(frozen=True, slots=True)
class PassdbReply:
    """A driver's answer to a lookup.

    ``fields`` are the raw fields in the order the store gave them, as
    ``(name, value)`` pairs; ``value`` is None for a NULL (SQL NULL, missing LDAP
    attribute), which the chain skips, and ``""`` for a value-less field such as
    ``nopassword``.  The stored password travels as the field ``password`` (with an
    optional ``{SCHEME}`` prefix) or ``password_noscheme``, exactly as Dovecot's
    drivers return it; the chain applies Dovecot's field rules (``user``,
    ``nopassword``, ``nologin``, ...).
    """

    result: PassdbResult
    fields: Sequence[tuple[str, str | None]] = field(default_factory=tuple)

    def __repr__(self) -> str:
        shown = [(k, "<hidden>" if k.startswith("password") or k == "pass" else v) for k, v in self.fields]
        return f"PassdbReply(result={self.result.name}, fields={shown!r})"


@runtime_checkable
class Passdb(Protocol):
    """One opened passdb."""

    #: Dovecot's default password scheme for stored passwords without ``{SCHEME}``.
    default_pass_scheme: str

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Look the user up; return the stored password and extra fields."""
        ...


@runtime_checkable
class VerifyingPassdb(Passdb, Protocol):
    """A passdb that checks the password itself (LDAP ``auth_bind``)."""

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        """Check ``password`` and return the result with the extra fields."""
        ...


PassdbFactory = Callable[["PassdbSettings"], AbstractAsyncContextManager[Passdb]]
