"""The ``passwd-file`` passdb (Dovecot's ``db-passwd-file.c``, ``passdb-passwd-file.c``).

``args = [scheme=X] [username_format=%u] PATH``.  ``scheme`` is the default
scheme for passwords without ``{SCHEME}`` (default CRYPT).  ``PATH`` may hold
%-variables (``/etc/proxyd/users.d/%d``): each expanded path is its own file,
and a ``/`` inside a variable's value cuts the value there.  A relative PATH is
taken from the directory of the config file that defined the passdb.

File format, one user a line::

    user:password:uid:gid:gecos:home:shell:extra fields

Lines that are empty or start with ``#`` or ``:`` are skipped; only the first
line of a user counts.  Extra fields are everything after the 7th field (``:``
included), split at spaces into ``key=value`` / ``key`` items whose values are
%-expanded at lookup time.  A password ending in ``[NN]`` (libpam-pwdfile) gets
its scheme from NN: 34 = PLAIN-MD5, 56 = DIGEST-MD5, other = CRYPT.

The file is read in a worker thread and read again whenever its mtime, size or
inode changes, checked on every lookup.  Trouble reading it is a temporary
failure.  A missing file: for a PATH with variables the user is unknown (as in
Dovecot: per-domain files); for a fixed PATH it is a temporary failure (Dovecot
says "unknown user" here too, which locks every user out with a wrong-password
answer when the file is lost; a temporary failure tells clients to retry).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final

import trio

from proxyd.auth.expand import (
    ExpandError,
    Variables,
    expand,
    has_variables,
    request_variables,
    str_escape,
)
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.auth.schemes import is_known_scheme, split_scheme
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError

log = logging.getLogger("proxyd.auth.passwd_file")

DEFAULT_PASS_SCHEME: Final = "CRYPT"  # noqa: S105 - a scheme name
DEFAULT_USERNAME_FORMAT: Final = "%u"
#: threads reading files at once, per passdb
_THREADS: Final = 2


@dataclass(frozen=True, slots=True)
class PasswdFileArgs:
    """The parsed ``args`` line."""

    path: str
    scheme: str = DEFAULT_PASS_SCHEME
    username_format: str = DEFAULT_USERNAME_FORMAT


def parse_args(settings: PassdbSettings) -> PasswdFileArgs:
    """Parse ``settings.args``; raises ``ConfigError`` at the passdb's location."""
    rest = settings.args.strip()
    options: dict[str, str] = {}
    while rest and not rest.startswith("/"):
        word, _, after = rest.partition(" ")
        key, sep, value = word.partition("=")
        if not sep:
            break  # the (relative) path
        if key not in ("scheme", "username_format"):
            raise ConfigError(settings.location, f"passdb passwd-file: Unknown setting: {key}")
        options[key] = value
        rest = after.lstrip(" ")
    if not rest:
        raise ConfigError(settings.location, "passdb passwd-file: Missing args")
    scheme = options.get("scheme", DEFAULT_PASS_SCHEME)
    if not is_known_scheme(scheme):
        raise ConfigError(settings.location, f"passdb passwd-file: Unknown scheme: {scheme}")
    path = rest
    if not path.startswith(("/", "%")):
        path = os.path.join(settings.config_dir, path)
    return PasswdFileArgs(
        path=path,
        scheme=scheme,
        username_format=options.get("username_format", DEFAULT_USERNAME_FORMAT),
    )


@dataclass(frozen=True, slots=True)
class PasswdUser:
    """One user line: the password as stored (None: no password field) and the extra fields."""

    password: str | None
    extra_fields: tuple[str, ...] = ()


def _fix_password(password: str) -> str:
    """libpam-pwdfile's ``password[NN]`` type suffix."""
    if (
        len(password) > 4
        and password[0] not in "{$"
        and password[-1] == "]"
        and password[-4] == "["
    ):
        digits = password[-3:-1]
        number = (ord(digits[0]) - 48) * 10 + (ord(digits[1]) - 48)
        bare = password[:-4]
        if number == 34:
            return "{PLAIN-MD5}" + bare
        if number == 56:
            return "{DIGEST-MD5}" + bare
        return "{CRYPT}" + bare
    return password


def parse_passwd_file(text: str, path: str) -> dict[str, PasswdUser]:
    """Parse the whole file; errors in single lines are logged and the line dropped."""
    users: dict[str, PasswdUser] = {}
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line or line[0] in "#:":
            continue
        parts = line.split(":")
        name = parts[0]
        if name in users:
            log.error("passwd-file %s: User %s exists more than once", path, name)
            continue
        password = None if len(parts) < 2 else _fix_password(parts[1])
        if password is not None and password.startswith("{DIGEST-MD5}") and len(password) != 44:
            log.error("passwd-file %s: User %s has invalid password", path, name)
            continue
        extra: tuple[str, ...] = ()
        rest = parts[7:]  # after uid, gid, gecos, home, shell
        if rest and rest[0] != "":
            extra = tuple(":".join(rest).split())
        # an empty 8th field is the old format ("::userdb_mail"), userdb only
        users[name] = PasswdUser(password=password, extra_fields=extra)
    return users


_Stamp = tuple[int, int, int]  # mtime_ns, size, inode


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _FileMissingError(Exception):
    pass


def _stat(path: str) -> _Stamp:
    try:
        return _stamp(os.stat(path))
    except FileNotFoundError:
        raise _FileMissingError from None
    except OSError as exc:
        raise PassdbTempFail(f"stat({path}) failed: {exc.strerror or exc}") from None


def _load(path: str) -> tuple[_Stamp, dict[str, PasswdUser]]:
    try:
        with open(path, "rb") as handle:
            stamp = _stamp(os.fstat(handle.fileno()))
            data = handle.read()
    except FileNotFoundError:
        raise _FileMissingError from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise PassdbTempFail(f"open({path}) failed: Is a directory") from None
        raise PassdbTempFail(f"open({path}) failed: {exc.strerror or exc}") from None
    users = parse_passwd_file(data.decode("utf-8", "surrogateescape"), path)
    log.debug("passwd-file %s: Read %d users", path, len(users))
    return stamp, users


class _PasswdFile:
    """One file's cached contents, re-read when it changes."""

    def __init__(self, path: str, limiter: trio.CapacityLimiter) -> None:
        self.path = path
        self._limiter = limiter
        self._lock = trio.Lock()
        self._stamp: _Stamp | None = None
        self._users: Mapping[str, PasswdUser] = {}

    async def users(self) -> Mapping[str, PasswdUser]:
        """The current contents; raises ``PassdbTempFail`` or ``_FileMissingError``."""
        stamp = await trio.to_thread.run_sync(_stat, self.path, limiter=self._limiter)
        if stamp == self._stamp:
            return self._users
        async with self._lock:
            if stamp == self._stamp:
                return self._users  # another task reloaded it meanwhile
            # forget the old contents first: a failed reload is a tempfail, as in Dovecot
            self._stamp = None
            self._users = {}
            new_stamp, users = await trio.to_thread.run_sync(
                _load, self.path, limiter=self._limiter
            )
            self._stamp, self._users = new_stamp, users
            return users


def _path_fix(value: str) -> str:
    # a "/" in a variable's value would escape the directory: cut it off there
    return value.partition("/")[0]


class PasswdFilePassdb:
    """A passwd-file passdb; see the module docstring."""

    def __init__(
        self, args: PasswdFileArgs, config_dir: str, limiter: trio.CapacityLimiter
    ) -> None:
        self.default_pass_scheme: str = args.scheme
        self._args = args
        self._config_dir = config_dir
        self._limiter = limiter
        self._has_vars = has_variables(args.path)
        # "%%" alone is no variable: Dovecot expands it once, to a literal "%"
        fixed = args.path if self._has_vars else args.path.replace("%%", "%")
        self._files: dict[str, _PasswdFile] = {}
        self._fixed = None if self._has_vars else _PasswdFile(fixed, limiter)

    async def preload(self) -> None:
        """Read a fixed-path file now, as Dovecot does at startup; problems are only logged.

        Lookups keep retrying (and fail temporarily) until the file is fixed.
        """
        if self._fixed is None:
            return
        try:
            await self._fixed.users()
        except _FileMissingError:
            log.error("passwd-file %s: missing passwd file", self._fixed.path)
        except PassdbTempFail as exc:
            log.error("passwd-file %s: %s", self._fixed.path, exc)

    def _file_for(self, variables: Variables) -> _PasswdFile:
        if self._fixed is not None:
            return self._fixed
        path = expand(self._args.path, variables, _path_fix)
        if not os.path.isabs(path):
            path = os.path.join(self._config_dir, path)
        found = self._files.get(path)
        if found is None:
            found = self._files[path] = _PasswdFile(path, self._limiter)
        return found

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Find ``request.user`` (after ``username_format``) in the file."""
        variables = request_variables(request)
        try:
            passwd_file = self._file_for(variables)
        except ExpandError as exc:
            raise PassdbTempFail(
                f"Failed to expand passwd-file path {self._args.path}: {exc}"
            ) from None
        try:
            users = await passwd_file.users()
        except _FileMissingError:
            if self._has_vars:
                log.debug("missing passwd file: %s", passwd_file.path)
                self._files.pop(passwd_file.path, None)
                return PassdbReply(PassdbResult.USER_UNKNOWN)
            raise PassdbTempFail(f"missing passwd file: {passwd_file.path}") from None
        try:
            username = expand(self._args.username_format, variables, str_escape)
        except ExpandError as exc:
            raise PassdbTempFail(
                f"Failed to expand username_format={self._args.username_format}: {exc}"
            ) from None
        user = users.get(username)
        if user is None:
            return PassdbReply(PassdbResult.USER_UNKNOWN)
        return PassdbReply(PassdbResult.OK, self._fields(user, variables))

    def _fields(self, user: PasswdUser, variables: Variables) -> tuple[tuple[str, str | None], ...]:
        stored = user.password if user.password is not None else ""
        scheme, data = split_scheme(stored)
        fields: list[tuple[str, str | None]] = [
            ("password", f"{{{scheme or self.default_pass_scheme}}}{data}")
        ]
        for item in user.extra_fields:
            key, sep, template = item.partition("=")
            if not sep:
                fields.append((key, ""))
                continue
            try:
                fields.append((key, expand(template, variables)))
            except ExpandError as exc:
                raise PassdbTempFail(f"Failed to expand extra field {item}: {exc}") from None
        return tuple(fields)


@contextlib.asynccontextmanager
async def _opened(args: PasswdFileArgs, config_dir: str) -> AsyncIterator[Passdb]:
    passdb = PasswdFilePassdb(args, config_dir, trio.CapacityLimiter(_THREADS))
    await passdb.preload()
    yield passdb


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The passwd-file passdb for ``settings.args``; raises ``ConfigError`` for bad args."""
    return _opened(parse_args(settings), settings.config_dir)
