"""Binding every listener in the master, before any fork or privilege drop."""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from proxyd.config.schema import FREE_UNIX_LISTENERS, MASTER_HTTP_SERVICES
from proxyd.config.settings import Settings, UnixListener, effective_service
from proxyd.ipc.inherited import BoundSocket
from proxyd.protocols import registry
from proxyd.sockstream import set_tcp_options

log = logging.getLogger("proxyd")



class ListenError(OSError):
    """A listener that could not be bound; the message is Dovecot-shaped."""


def waiting_connections(sock: socket.socket) -> int:
    """How many connections wait in a listening TCP socket's accept queue.

    Linux reports it for a listener as ``tcpi_unacked`` in ``TCP_INFO``; 0 where
    it cannot be read.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_UNACKED + 4)
    except OSError:
        return 0
    return int.from_bytes(info[_TCP_INFO_UNACKED : _TCP_INFO_UNACKED + 4], sys.byteorder)


#: offset of tcpi_unacked in struct tcp_info (8 one-byte fields, then rto, ato, snd_mss, rcv_mss)
_TCP_INFO_UNACKED = 24


def enabled_services(settings: Settings) -> Iterator[str]:
    """The services of the protocols in ``protocols``, in that order."""
    for proto in settings.protocols:
        yield registry.service_of(proto)


def handoff_services(settings: Settings) -> frozenset[str]:
    """The high-security login services whose plaintext sessions go to the relay process."""
    if not settings.proxyd_plaintext_handoff:
        return frozenset()
    return frozenset(
        s
        for s in enabled_services(settings)
        if registry.by_service(s).login is not None and effective_service(settings, s).service_count == 1
    )


def bind_all(settings: Settings) -> list[BoundSocket]:
    """Bind the listeners of every enabled login service (``port = 0`` disables one;
    with ``ssl = no`` the ``ssl = yes`` ones are not bound either, as in Dovecot)."""
    bound: list[BoundSocket] = []
    for service in enabled_services(settings):
        for listener in settings.service(service).listeners:
            if listener.port == 0 or (listener.ssl and settings.ssl == "no"):
                continue
            for address in listener.addresses or settings.listen:
                sock = _bind(service, listener.port, address)
                if sock is not None:
                    bound.append(BoundSocket(service, listener, address, sock))
        if service in FREE_UNIX_LISTENERS:  # e.g. the MTA-facing sockets of the lmtp service
            for unix in settings.service(service).unix_listeners:
                if unix.mode == 0:
                    continue  # mode = 0: not created, as for the other sockets
                path = os.path.join(settings.base_dir, unix.name)
                bound.append(BoundSocket(service, unix, path, _bind_unix(service, unix, path)))
    return bound


def bind_master_http(settings: Settings) -> list[BoundSocket]:
    """The HTTP listeners the master serves itself (``service doveadm { inet_listener http }``).
    Bound after the zygote has forked, so that no child ever holds them."""
    bound: list[BoundSocket] = []
    for service in sorted(MASTER_HTTP_SERVICES):
        for listener in settings.service(service).listeners:
            if listener.port == 0:
                continue
            for address in listener.addresses or settings.listen:
                sock = _bind(service, listener.port, address)
                if sock is not None:
                    sock.set_inheritable(False)
                    bound.append(BoundSocket(service, listener, address, sock))
    return bound


def _bind_unix(service: str, listener: UnixListener, path: str) -> socket.socket:
    """A service's UNIX socket with its ``mode``, ``user`` and ``group`` (Dovecot's unix_listener)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket of an earlier run
        sock.bind(path)
        if os.geteuid() == 0 and (listener.user or listener.group):
            uid = pwd.getpwnam(listener.user).pw_uid if listener.user else -1
            gid = grp.getgrnam(listener.group).gr_gid if listener.group else -1
            os.chown(path, uid, gid)
        os.chmod(path, listener.mode)
        sock.listen(512)
        sock.setblocking(False)
    except KeyError as exc:
        sock.close()
        raise ListenError(errno.EINVAL, f"service({service}): unix_listener {path}: unknown user or group {exc}") from None
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"service({service}): net_listen_unix({path}) failed: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def _bind(service: str, port: int, address: str) -> socket.socket | None:
    host = "0.0.0.0" if address == "*" else address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if address == "::" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            log.warning("%s: IPv6 not available here, skipping listen on [::]", service)
            return None
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by every accepted connection: none of them needs a setsockopt of its own
        set_tcp_options(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if address == "::" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            log.warning("%s: IPv6 not available here, skipping listen on [::]", service)
            return None
        raise ListenError(exc.errno, f"service({service}): listen({address}, {port}) failed: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """A socket's mode and owner (-1: leave as created, i.e. root)."""

    mode: int = 0o666
    uid: int = -1
    gid: int = -1


def bind_auth_socket(
    path: str, login_gid: int | None, kind: int = socket.SOCK_STREAM, *, owner: SocketOwner = SocketOwner()
) -> socket.socket:
    """A service's UNIX socket (auth, tcpwrap, relay) inside the login chroot directory.

    The socket gets exactly ``owner``'s mode and owner (its ``unix_listener``);
    the directory, root and the login group only, is what keeps strangers out.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if login_gid is not None and os.geteuid() == 0:
        os.chown(directory, 0, login_gid)
        os.chmod(directory, 0o750)  # noqa: S103 - root and the login group only
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind)
    # created without any access, so nobody connects before mode and owner are set
    previous = os.umask(0o777)
    try:
        sock.bind(path)
    finally:
        os.umask(previous)
    os.chmod(path, owner.mode)
    if (owner.uid != -1 or owner.gid != -1) and os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
    sock.listen(512)
    sock.setblocking(False)
    return sock
