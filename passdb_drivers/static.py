"""The ``static`` passdb (Dovecot's ``passdb-static.c``): the same fields for every user.

``args`` is a field template, ``key=value`` or bare ``key`` items separated by
spaces, values %-expanded per lookup::

    passdb {
      driver = static
      args = proxy=y host=10.0.0.1 port=143 nopassword=y
    }

``password=...`` is the stored password (``{SCHEME}`` prefix optional, default
PLAIN); it is compared by the chain like any other passdb's.  With neither
``password`` nor ``nopassword`` every password check fails ("No password
returned (and no nopassword)"), as in Dovecot.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Final

from proxyd.auth.expand import ExpandError, Variables, expand, request_variables
from proxyd.auth.fields import Template
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.auth.schemes import split_scheme
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError

#: Dovecot's STATIC_PASS_SCHEME
DEFAULT_PASS_SCHEME: Final = "PLAIN"  # noqa: S105 - a scheme name


class StaticPassdb:
    """Answers every lookup with the configured fields."""

    default_pass_scheme: str = DEFAULT_PASS_SCHEME

    def __init__(self, template: Template, password_template: str | None) -> None:
        self._template = template
        self._password_template = password_template
        #: the reply when no value has a %-variable (the usual static passdb): made once
        self._fixed: PassdbReply | None = None
        values = [value for _key, value in template.items if value is not None]
        if password_template is not None:
            values.append(password_template)
        if not any("%" in value for value in values):
            self._fixed = self._reply(Variables())

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """The template's fields for ``request``, then the stored password if one is configured."""
        if self._fixed is not None:
            return self._fixed
        return self._reply(request_variables(request))

    def _reply(self, variables: Variables) -> PassdbReply:
        try:
            fields: list[tuple[str, str | None]] = list(self._template.export(variables))
            password = (
                None
                if self._password_template is None
                else expand(self._password_template, variables)
            )
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand template: {exc}") from None
        if password is not None:
            scheme, data = split_scheme(password)
            fields.append(("password", data if scheme is None else f"{{{scheme}}}{data}"))
        return PassdbReply(PassdbResult.OK, tuple(fields))


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The static passdb for ``settings.args``; raises ``ConfigError`` for a malformed template."""
    try:
        template = Template.parse(settings.args)
    except ValueError as exc:
        raise ConfigError(settings.location, f"passdb static: {exc}") from None
    rest, password, found = template.without("password")
    passdb = StaticPassdb(rest, (password or "") if found else None)
    return contextlib.nullcontext(passdb)
