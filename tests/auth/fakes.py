"""An in-memory passdb for chain and authenticator tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from proxyd.auth.chain import ChainEntry, PassdbChain
from proxyd.auth.passdb import PassdbReply, PassdbResult
from proxyd.auth.request import AuthRequest
from proxyd.auth.username import UsernameRules
from proxyd.config.settings import PassdbSettings
from proxyd.errors import Location
from proxyd.secret import Secret

Fields = Sequence[tuple[str, str | None]]


class FakePassdb:
    """Users map to the raw fields a driver would return; records every lookup."""

    def __init__(
        self,
        users: Mapping[str, Fields] | None = None,
        *,
        scheme: str = "PLAIN",
        error: Exception | None = None,
        result: PassdbResult = PassdbResult.OK,
    ) -> None:
        self.default_pass_scheme = scheme
        self.users = dict(users or {})
        self.error = error
        self.result = result
        self.calls: list[str] = []

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        await trio.lowlevel.checkpoint()
        self.calls.append(request.user)
        if self.error is not None:
            raise self.error
        if request.user not in self.users:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        return PassdbReply(self.result, tuple(self.users[request.user]))


class FakeVerifyingPassdb(FakePassdb):
    """Checks the password itself, like LDAP auth_bind: ``password`` fields are compared here."""

    def __init__(self, users: Mapping[str, Fields], passwords: Mapping[str, str]) -> None:
        super().__init__(users)
        self.passwords = dict(passwords)
        self.verify_calls: list[str] = []

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        await trio.lowlevel.checkpoint()
        self.verify_calls.append(request.user)
        if request.user not in self.users:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        if self.passwords.get(request.user) != password.reveal():
            return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
        return PassdbReply(PassdbResult.OK, tuple(self.users[request.user]))


def passdb_settings(driver: str = "fake", line: int = 10, **kw: Any) -> PassdbSettings:
    return PassdbSettings(driver=driver, location=Location("/etc/proxyd/proxyd.conf", line), **kw)


def make_chain(
    *passdbs: FakePassdb | tuple[FakePassdb, dict[str, Any]],
    verbose: bool = True,
    debug: bool = False,
    username_rules: Callable[[str], UsernameRules] | None = None,
) -> PassdbChain:
    entries = []
    for item in passdbs:
        passdb, kw = item if isinstance(item, tuple) else (item, {})
        entries.append(ChainEntry.build(passdb_settings(**kw), passdb))
    return PassdbChain(entries, verbose=verbose, debug=debug, username_rules=username_rules)
