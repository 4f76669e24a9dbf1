"""``proxyd [-c FILE] [-n]``: run the proxy in the foreground, or print the effective settings.

Start-up order matters (style.md §4.4): load and check the config, bind every
listener and the auth socket (still root), become a child subreaper, fork the
zygote with everything imported, and only then start Trio in the master.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import trio

from proxyd import __version__, counters
from proxyd.auth.registry import check_drivers
from proxyd.auth.username import check_username_settings
from proxyd.config.dump import dump_non_default
from proxyd.config.load import load_settings
from proxyd.config.settings import (
    InetListener,
    Settings,
    UnixListener,
    effective_service,
    unix_listener,
)
from proxyd.errors import ConfigError, Location
from proxyd.log import lean_log_records, setup_logging
from proxyd.login.logformat import check_elements
from proxyd.sdnotify import Notifier

if TYPE_CHECKING:
    from proxyd.master.listeners import SocketOwner

DEFAULT_CONFIG = "/etc/proxyd/proxyd.conf"
log = logging.getLogger("proxyd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxyd", description="Trio IMAP/POP3 login proxy")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file")
    parser.add_argument(
        "-n", "--dump", action="store_true", help="print the non-default settings and exit (like doveconf -n)"
    )
    parser.add_argument(
        "-P", dest="show_secrets", action="store_true", help="with -n: show passwords and keys (like doveconf -P)"
    )
    parser.add_argument("--version", action="version", version=f"proxyd {__version__}")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        check_drivers(settings)  # unknown drivers and bad args files are FILE:LINE errors too
        check_username_settings(settings)
        check_elements(
            settings.login_log_format_elements, settings.explicit.get("login_log_format_elements")
        )
        _check_users(settings)
        _check_socket_owners(settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.dump:
        sys.stdout.write(dump_non_default(settings, show_secrets=args.show_secrets))
        return 0
    try:
        setup_logging(
            settings.log_path,
            debug=settings.auth_debug,
            info_log_path=settings.info_log_path,
            debug_log_path=settings.debug_log_path,
            timestamp=settings.log_timestamp,
            syslog_facility=settings.syslog_facility,
        )
    except OSError as exc:
        print(f"{args.config}: cannot open log_path {settings.log_path}: {exc.strerror}", file=sys.stderr)
        return 2
    lean_log_records()
    return _run(settings)


def _check_users(settings: Settings) -> None:
    """Privilege separation needs real users and groups (checked only as root, where they
    are used) and existing chroot directories: each is a config error at its ``FILE:LINE``."""
    from proxyd.master.listeners import enabled_services
    from proxyd.master.privileges import PrivilegeError, resolve_identity

    def where(name: str, key: str, default_setting: str = "") -> Location | None:
        found = settings.explicit.get(f"service/{name}/{key}")
        return found or settings.explicit.get(default_setting) or settings.explicit.get(f"service/{name}")

    services = list(enabled_services(settings))
    if "tcpwrap" in settings.login_access_sockets:
        services.append("tcpwrap")
    for name in services:
        svc = effective_service(settings, name)
        # proxyd creates base_dir/login (Dovecot's default login chroot) itself
        if svc.chroot and svc.chroot != os.path.join(settings.base_dir, "login") and not os.path.isdir(svc.chroot):
            raise ConfigError(where(name, "chroot"), f"service({name}): chroot directory {svc.chroot} doesn't exist")
    if os.geteuid() != 0:
        return
    try:
        resolve_identity(settings.default_internal_user, "", "")
    except PrivilegeError as exc:
        raise ConfigError(settings.explicit.get("default_internal_user"), f"default_internal_user: {exc}") from None
    for name in services:
        svc = effective_service(settings, name)
        default_user = {"$default_login_user": "default_login_user", "$default_internal_user": "default_internal_user"}
        try:
            resolve_identity(svc.user, "", "")
        except PrivilegeError as exc:
            raw = settings.service(name).user
            raise ConfigError(where(name, "user", default_user.get(raw, "")), f"service {name} user: {exc}") from None
        try:
            resolve_identity(svc.user, svc.group, "")
        except PrivilegeError as exc:
            raise ConfigError(where(name, "group"), f"service {name} group: {exc}") from None


def _check_socket_owners(settings: Settings) -> None:
    """The users and groups of ``service auth`` and of the sockets proxyd creates must exist."""
    import grp
    import pwd

    auth = effective_service(settings, "auth")
    checks = [
        ("user", auth.user, settings.explicit.get("service/auth/user")),
        ("group", auth.group, settings.explicit.get("service/auth/group")),
    ]
    for service, name in (("auth", "login/login"), ("tcpwrap", "login/tcpwrap")):
        listener = unix_listener(settings, service, name)
        prefix = f"service/{service}/unix_listener/{name}"
        checks.append(("user", listener.user, settings.explicit.get(f"{prefix}/user") or listener.location))
        checks.append(("group", listener.group, settings.explicit.get(f"{prefix}/group") or listener.location))
    from proxyd.config.schema import FREE_UNIX_LISTENERS
    from proxyd.master.listeners import enabled_services

    for service in enabled_services(settings):
        if service not in FREE_UNIX_LISTENERS:
            continue
        for listener in settings.service(service).unix_listeners:  # the lmtp service's MTA sockets
            prefix = f"service/{service}/unix_listener/{listener.name}"
            checks.append(("user", listener.user, settings.explicit.get(f"{prefix}/user") or listener.location))
            checks.append(("group", listener.group, settings.explicit.get(f"{prefix}/group") or listener.location))
    for kind, name, where in checks:
        if not name:
            continue
        try:
            pwd.getpwnam(name) if kind == "user" else grp.getgrnam(name)
        except KeyError:
            raise ConfigError(where, f"{kind} doesn't exist: {name}") from None


def _run(settings: Settings) -> int:
    # everything the children need is imported here, before the zygote forks; what only
    # the master runs (its accounting, the doveadm and metrics HTTP servers with h11 and
    # prometheus_client: ~2.5 MB) after it: every fork copies the zygote's page tables and
    # every exit tears them down, in high-security mode once per connection
    from proxyd.children import ChildEntry, auth_socket_path
    from proxyd.master.listeners import (
        ListenError,
        bind_all,
        bind_auth_socket,
        bind_master_http,
        handoff_services,
    )
    from proxyd.master.zygote import InheritedSockets, ZygoteHandle, become_subreaper, start_zygote
    from proxyd.proxied.handoff import RELAY_SOCKET_NAME

    _preload()
    # from the moment the listeners are bound clients (and init scripts) see us running:
    # a stop signal is recorded until the master's Trio signal receiver takes over
    early_signals: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: early_signals.append(signum))
    try:
        os.makedirs(settings.base_dir, exist_ok=True)
        bound = bind_all(settings)
        login_gid = _login_gid(settings)
        auth_sock = bind_auth_socket(
            auth_socket_path(settings), login_gid, owner=_owner(unix_listener(settings, "auth", "login/login"))
        )
        tcpwrap_listener = unix_listener(settings, "tcpwrap", "login/tcpwrap")
        tcpwrap_sock = (
            bind_auth_socket(
                os.path.join(settings.base_dir, tcpwrap_listener.name), login_gid, owner=_owner(tcpwrap_listener)
            )
            # mode = 0: not created (a login asking it then fails as with a dead service)
            if "tcpwrap" in settings.login_access_sockets and tcpwrap_listener.mode != 0
            else None
        )
        relay_sock = (
            bind_auth_socket(
                os.path.join(settings.base_dir, "login", RELAY_SOCKET_NAME), login_gid, socket.SOCK_SEQPACKET
            )
            if handoff_services(settings)
            else None
        )
    except (ListenError, OSError) as exc:
        print(f"Fatal: {exc.strerror if isinstance(exc, ListenError) else exc}", file=sys.stderr)
        return 1
    child_main = ChildEntry(settings)
    inherited = InheritedSockets(listeners={}, auth=auth_sock, tcpwrap=tcpwrap_sock, relay=relay_sock)
    for item in bound:
        service = settings.service(item.service)
        # an inet listener by its index; a unix listener after them
        index = (
            service.listeners.index(item.listener)
            if isinstance(item.listener, InetListener)
            else len(service.listeners) + service.unix_listeners.index(item.listener)
        )
        inherited.listeners.setdefault(item.service, []).append((item.sock, index, item.address))
    become_subreaper()
    # systemd's NOTIFY_SOCKET is the master's alone: taken out of the environment before any fork
    notifier = Notifier.take_socket()
    # shared counters for /metrics: a slot per process the zygote will fork
    counters.create(_counter_slots(settings))
    counters.set_slot(0)
    zygote: ZygoteHandle = start_zygote(
        settings, inherited, child_main, on_reload=child_main.reload, before_fork=child_main.prepare
    )
    try:
        try:
            http_bound = bind_master_http(settings)
        except (ListenError, OSError) as exc:
            print(f"Fatal: {exc.strerror if isinstance(exc, ListenError) else exc}", file=sys.stderr)
            return 1
        from proxyd.master.main import Master

        master = Master(settings, zygote, bound)
        master.http_bound = http_bound
        master.notifier = notifier
        master.http_tls = child_main.tls.server
        master.tcpwrap_bound = tcpwrap_sock is not None
        master.relay_bound = relay_sock is not None
        trio.run(master.run, early_signals)
    finally:
        _end_zygote(zygote.pid)
    return 1 if master.failed else 0


def _end_zygote(pid: int, grace: float = 2.0) -> None:
    """SIGTERM the zygote and reap it; SIGKILL if it has not gone within ``grace``
    seconds (it holds nothing worth a clean exit, and the master must not hang on it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.01)
    except ChildProcessError:
        pass


def _owner(listener: UnixListener) -> SocketOwner:
    """The mode and owner of a socket from its ``unix_listener`` (user/group resolved now)."""
    import grp
    import pwd

    from proxyd.master.listeners import SocketOwner

    uid = gid = -1
    if os.geteuid() == 0:
        if listener.user:
            entry = pwd.getpwnam(listener.user)
            uid, gid = entry.pw_uid, entry.pw_gid
        if listener.group:
            gid = grp.getgrnam(listener.group).gr_gid
    return SocketOwner(listener.mode, uid, gid)


def _counter_slots(settings: Settings) -> int:
    """Every process that may live at once, twice over (a reload's old processes finish
    beside the new ones), and room for the support processes."""
    from proxyd.master.listeners import enabled_services

    limits = sum(effective_service(settings, name).process_limit for name in enabled_services(settings))
    return 2 * limits + 64


def _login_gid(settings: Settings) -> int | None:
    if os.geteuid() != 0:
        return None
    import pwd

    from proxyd.master.listeners import enabled_services

    for name in enabled_services(settings):
        return pwd.getpwnam(effective_service(settings, name).user).pw_gid
    return None


def _preload() -> None:
    """Modules the chrooted children would otherwise import lazily, where no files exist."""
    import encodings.idna  # noqa: F401 - TLS server names
    import json  # noqa: F401

    import passdb_drivers  # noqa: F401
    import proxyd.protocols.registry  # noqa: F401 - every protocol's engines
    from proxyd.access import server  # noqa: F401
    from proxyd.auth import authenticator, registry, schemes  # noqa: F401
    from proxyd.login import access, haproxy, worker  # noqa: F401

    for name in ("static", "passwd_file"):
        __import__(f"passdb_drivers.{name}")
    schemes.preload()  # libcrypt, libpass handlers and backends: every scheme verified once
