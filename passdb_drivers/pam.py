"""The ``pam`` passdb (Dovecot's ``passdb-pam.c``), through pamela (a maintained ctypes binding).

``args`` are Dovecot's: ``[setcred=yes] [cache_key=KEY] [blocking=yes] [SERVICE]``;
the PAM service defaults to ``dovecot`` (``/etc/pam.d/dovecot``), ``*`` means the
protocol's name (``%Ls``), and the service may hold %-variables::

    passdb {
      driver = pam
      args = dovecot
    }

The password is checked with ``pam_authenticate()``, then ``pam_acct_mgmt()``;
each call runs in a worker thread (PAM modules block).  Results as Dovecot's:
an unknown user, an expired password or account (``PASS_EXPIRED``), any other
failure is a password mismatch.  Not supported yet (an error with
``FILE:LINE``): ``session=yes``, ``failure_show_msg=yes`` and ``max_requests``
(Dovecot's auth-worker recycling).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import pamela
import trio

from proxyd.auth.expand import ExpandError, expand, request_variables
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.log import MAX_LOG_USERNAME_LEN, sanitize
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth")

# Linux-PAM's return codes (security/_pam_types.h)
PAM_AUTH_ERR: Final = 7
PAM_USER_UNKNOWN: Final = 10
PAM_NEW_AUTHTOK_REQD: Final = 12
PAM_ACCT_EXPIRED: Final = 13
_PAM_DIRS: Final = ("/etc/pam.d", "/usr/lib/pam.d")
#: PAM modules are blocking and some are slow (network, crypt): a few threads at a time
_THREADS: Final = 4


def _missing_service_file(service: str) -> str | None:
    """Dovecot's ``pam_get_missing_service_file_path()``: the file PAM looked for, if none exists."""
    paths = [os.path.join(directory, service) for directory in _PAM_DIRS]
    if any(os.path.exists(path) for path in paths):
        return None
    return paths[0]


class PamPassdb:
    """Checks passwords with PAM (it checks them itself: a ``verify_plain`` passdb)."""

    default_pass_scheme: str = "PLAIN"  # noqa: S105 - a scheme name

    def __init__(self, service: str, *, setcred: bool = False, cache_key: str | None = None) -> None:
        self._service = service
        self._setcred = setcred
        self._limiter = trio.CapacityLimiter(_THREADS)
        if cache_key is not None:
            self.cache_key = cache_key

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """PAM cannot look a user up without a password (Dovecot's passdb has no lookup either)."""
        self._log(request, logging.INFO, "passdb doesn't support credential lookups")
        return PassdbReply(PassdbResult.USER_UNKNOWN)

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        try:
            service = expand(self._service, request_variables(request))
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand service {self._service}: {exc}") from None
        status, step, text = await trio.to_thread.run_sync(
            self._call, request.user, password.reveal(), service, limiter=self._limiter
        )
        if status == 0:
            return PassdbReply(PassdbResult.OK)
        if step == "pam_authenticate()":
            message = "unknown user" if status == PAM_USER_UNKNOWN else f"pam_authenticate() failed: {text}"
            missing = _missing_service_file(service)
            if missing is not None:
                self._log(request, logging.ERROR, f"{message} ({missing} missing?)")
            elif status == PAM_AUTH_ERR:
                self._log(request, logging.INFO, f"{message} (Password mismatch?)")
            else:
                self._log(request, logging.INFO, message)
        else:
            self._log(request, logging.ERROR, f"{step} failed: {text}")
        if status == PAM_USER_UNKNOWN:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        if status in (PAM_NEW_AUTHTOK_REQD, PAM_ACCT_EXPIRED):
            return PassdbReply(PassdbResult.PASS_EXPIRED)
        return PassdbReply(PassdbResult.PASSWORD_MISMATCH)

    def _call(self, user: str, password: str, service: str) -> tuple[int, str, str]:
        """In a worker thread: ``(PAM status, the call that failed, its text)``; 0 is success."""
        step = "pam_authenticate()"
        try:
            resetcred = pamela.PAM_ESTABLISH_CRED if self._setcred else 0
            pamela.authenticate(user, password, service=service, resetcred=resetcred, check=False)
            step = "pam_acct_mgmt()"
            pamela.check_account(user, service=service)
        except pamela.PAMError as exc:
            errno = exc.errno if isinstance(exc.errno, int) else -1
            return errno, step, str(exc.message)
        return 0, "", ""

    def _log(self, request: AuthRequest, level: int, message: str) -> None:
        conn = request.conn
        parts = [sanitize(request.user, MAX_LOG_USERNAME_LEN) or "?"]
        if conn.remote_ip:
            parts.append(conn.remote_ip)
        if conn.session_id:
            parts.append(f"<{conn.session_id}>")
        log.log(level, "pam(%s): %s", ",".join(parts), message)


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The pam passdb for Dovecot's ``args``; raises ``ConfigError`` for what proxyd does not do."""
    service = "dovecot"
    setcred = False
    cache_key: str | None = None
    words = settings.args.split()
    for index, word in enumerate(words):
        if word in ("-session", "session=yes", "failure_show_msg=yes") or word.startswith("max_requests="):
            name = word.lstrip("-").partition("=")[0]
            raise ConfigError(settings.location, f"pam: setting '{name}' is not supported yet")
        if word == "setcred=yes":
            setcred = True
        elif word.startswith("cache_key="):
            cache_key = word[len("cache_key=") :]
        elif word == "blocking=yes":
            continue  # for backwards compatibility, as in Dovecot
        elif word == "*":
            service = "%Ls"
        elif index == len(words) - 1:
            service = word
        else:
            raise ConfigError(settings.location, f"pam: Unknown setting: {word}")

    @asynccontextmanager
    async def opened() -> AsyncIterator[Passdb]:
        yield PamPassdb(service, setcred=setcred, cache_key=cache_key)

    return opened()
