"""What a freshly forked child does to itself before it serves anything.

Resource limits, the process title, chroot and the uid/gid switch happen in
that order, so that everything which needs the file system or root (TLS
contexts, the auth socket connection) is done by the caller before ``drop()``.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
from dataclasses import dataclass
from typing import Final

from setproctitle import setproctitle


class PrivilegeError(Exception):
    """A user, group or chroot that cannot be used."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a child becomes: uid/gid resolved at config time, ``chroot`` may be empty."""

    user: str
    uid: int
    gid: int
    chroot: str
    #: the user's home directory (from the passwd entry)
    home: str = "/"


def resolve_identity(user: str, group: str, chroot: str) -> Identity:
    """Look the user (and optional group) up; only meaningful when we run as root."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"User doesn't exist: {user} (create it, e.g. useradd -r -s /usr/sbin/nologin {user})") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"Group doesn't exist: {group}") from None
    return Identity(user=user, uid=entry.pw_uid, gid=gid, chroot=chroot, home=entry.pw_dir)


def set_title(title: str) -> None:
    setproctitle(f"proxyd: {title}")


def limit_memory(vsz_limit: int) -> None:
    """Dovecot's ``vsz_limit``: RLIMIT_AS and RLIMIT_DATA (0 = unlimited)."""
    if vsz_limit <= 0:
        return
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        resource.setrlimit(limit, (vsz_limit, vsz_limit))


def raise_fd_limit(clients: int) -> None:
    """Room for ``clients`` proxied sessions (two sockets each, and some spare),
    as far as the hard limit allows, like Dovecot's master does for its services."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + 64
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def drop(identity: Identity | None) -> None:
    """chroot and switch to the identity; a no-op when not running as root."""
    if identity is None or os.geteuid() != 0:
        return
    if identity.chroot:
        os.chroot(identity.chroot)
        os.chdir("/")
    os.setgroups([])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    _become_environment(identity)


def _become_environment(identity: Identity) -> None:
    """HOME, USER and LOGNAME of the user we became, as Dovecot's processes have them:
    root's HOME (often mode 0700) is unreadable now, and libraries that look there
    for per-user files (asyncpg's ~/.postgresql/postgresql.key) would fail on it.
    A chrooted process's home is the chroot's root."""
    os.environ["HOME"] = "/" if identity.chroot else identity.home
    os.environ["USER"] = os.environ["LOGNAME"] = identity.user


#: systemd's variables, always kept (Dovecot does the same when built with libsystemd)
_SYSTEMD_ENV: Final = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")


def import_environment(spec: str) -> None:
    """Dovecot's ``import_environment`` for a new child process: only the listed variables
    stay (``NAME``), or are set (``NAME=VALUE``); every other one is removed."""
    keep = set(_SYSTEMD_ENV)
    for word in spec.split():
        name, equals, value = word.partition("=")
        if equals:
            os.environ[name] = value
        keep.add(name)
    for name in list(os.environ):
        if name not in keep:
            del os.environ[name]
