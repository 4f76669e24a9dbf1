"""``proxyctl``: the administrator's command line (Dovecot's ``doveadm`` for proxyd).

Implemented:

* ``proxyctl pw [-s SCHEME] [-p PASSWORD] [-u USER] [-r ROUNDS]`` prints a hash
  in Dovecot's ``{SCHEME}...`` form (default SHA512-CRYPT).  Without ``-p`` the
  password is read from the terminal twice, or one line from a pipe.
* ``proxyctl [-c FILE] auth test [-x KEY=VALUE] USER [PASSWORD]`` runs the
  passdb chain of the configuration: a lookup, or a full authentication (no
  failure delay) when a password is given.  It prints the result line, then
  ``user=`` and every extra field as ``key=value`` (passwords masked).

* ``proxyctl [-c FILE] who [MASK]`` / ``kick MASK`` / ``kick --host HOST [MASK]`` /
  ``reload`` / ``stop`` talk to the running proxyd over its admin socket.
* ``proxyctl [-c FILE] move USER HOST [--delay S] [--spread N] [--wait SECONDS]``
  moves a user to another backend (``proxyd.cli.move``).

Exit codes: 0 success, 1 the check or hash failed, 2 usage or configuration error
(configuration errors are printed as ``FILE:LINE: message``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final, TextIO

import trio

from proxyd.auth import schemes
from proxyd.auth.request import AuthReply, AuthRequest, AuthStatus, ConnectionInfo, is_secret_field
from proxyd.cli import drain, move
from proxyd.config.settings import Settings
from proxyd.errors import ConfigError
from proxyd.protocols import registry
from proxyd.secret import Secret

DEFAULT_CONFIG: Final = "/etc/proxyd/proxyd.conf"
DEFAULT_SCHEME: Final = "SHA512-CRYPT"
_MASK: Final = "<hidden>"
_AUTH_INFO_KEYS: Final = ("service", "lip", "rip", "lport", "rport", "session", "secured")
#: the ``proto`` column of ``who``: as wide as the longest protocol name (``submission``)
_PROTO: Final = max(len(p.name) for p in registry.PROTOCOLS)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyctl", description="Control and test proxyd.")
    parser.add_argument(
        "-c", dest="config", metavar="FILE", default=DEFAULT_CONFIG, help="configuration file"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pw = commands.add_parser("pw", help="generate a password hash")
    pw.add_argument(
        "-s", dest="scheme", default=DEFAULT_SCHEME, help="scheme (default %(default)s)"
    )
    pw.add_argument("-p", dest="password", help="the password (default: read from stdin)")
    pw.add_argument("-u", dest="user", default="", help="user name (DIGEST-MD5 needs it)")
    pw.add_argument("-r", dest="rounds", type=int, default=0, help="rounds (0 = scheme default)")
    pw.add_argument("-l", dest="list", action="store_true", help="list the known schemes")
    pw.add_argument(
        "--allow-empty", action="store_true", help="hash an empty password (refused otherwise)"
    )

    auth = commands.add_parser("auth", help="passdb tests")
    auth_commands = auth.add_subparsers(dest="auth_command", metavar="SUBCOMMAND", required=True)
    test = auth_commands.add_parser("test", help="look a user up, or authenticate with PASSWORD")
    test.add_argument(
        "-x",
        dest="info",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"connection info ({', '.join(_AUTH_INFO_KEYS)})",
    )
    test.add_argument("user")
    test.add_argument("password", nargs="?")
    cache = auth_commands.add_parser("cache", help="the auth cache of the running proxyd")
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", required=True)
    flush = cache_commands.add_parser("flush", help="forget every cached entry, or USERs' entries")
    flush.add_argument("users", nargs="*", metavar="USER")

    who = commands.add_parser("who", help="list proxied sessions")
    who.add_argument("mask", nargs="?", default="*", help="user mask (* and ? wildcards)")
    who.add_argument(
        "--cluster", action="store_true", help="every node of proxyd_cluster_peers (doveadm HTTP API)"
    )
    # -h is Dovecot's ``doveadm proxy kick -h HOST``; help stays as --help
    kick = commands.add_parser(
        "kick",
        help="disconnect the matching users' proxied sessions (or those to one backend)",
        add_help=False,
    )
    kick.add_argument("--help", action="help", help="show this help message and exit")
    kick.add_argument(
        "--host", "-h", dest="host", metavar="HOST",
        help="only sessions proxied to this backend (its IP, or host as the passdb names it)",
    )
    kick.add_argument("mask", nargs="?", help="user mask (* and ? wildcards; with --host default *)")
    kick.add_argument(
        "--cluster", action="store_true", help="on every node of proxyd_cluster_peers; prints the total"
    )
    drain.add_arguments(move.add_parser(commands))
    commands.add_parser("reload", help="reload the configuration (like SIGHUP)")
    commands.add_parser("stop", help="stop proxyd (like SIGTERM)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one proxyctl command; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "pw":
            return _pw(args, sys.stdin, sys.stdout)
        if args.command == "auth" and args.auth_command == "cache":
            return _cache_flush(args, sys.stdout)
        if args.command == "auth":
            return _auth_test(args, sys.stdout)
        if args.command == "move":
            from proxyd.config.load import load_settings

            settings = load_settings(args.config)
            if args.source is not None or args.target is not None:
                if args.source is None or args.target is None or args.user is not None:
                    raise _UsageError("move --from HOST --to HOST drains a backend (no USER then)")
                return drain.run(args, settings, sys.stdout, sys.stderr)
            return move.run(args, settings, sys.stdout, sys.stderr)
        return _admin(args, sys.stdout)
    except _UsageError as exc:
        print(f"proxyctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE


def _cache_flush(args: argparse.Namespace, stdout: TextIO) -> int:
    """Ask the running proxyd's auth process to forget cached entries."""
    from proxyd.config.load import load_settings
    from proxyd.ipc.admin import AdminCacheFlush, admin_request

    settings = load_settings(args.config)
    try:
        reply = admin_request(settings.base_dir, AdminCacheFlush(tuple(args.users)))
    except OSError as exc:
        print(f"proxyctl: proxyd is not running (base_dir {settings.base_dir}): {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    if not reply.ok:
        print(f"proxyctl: {reply.message or 'failed'}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{reply.count} cache entries flushed", file=stdout)
    return EXIT_OK


def _admin(args: argparse.Namespace, stdout: TextIO) -> int:
    """who / kick / reload / stop: ask the running proxyd over its admin socket."""
    from proxyd.config.load import load_settings
    from proxyd.ipc.admin import (
        AdminKick,
        AdminReload,
        AdminRequest,
        AdminStop,
        AdminWho,
        admin_request,
    )

    request: AdminRequest
    if args.command == "who":
        request = AdminWho(args.mask or "*")
    elif args.command == "kick":
        if args.mask is None and args.host is None:
            raise _UsageError("kick: a user mask or --host HOST is needed")
        request = AdminKick(args.mask or "*", args.host)
    elif args.command == "reload":
        request = AdminReload()
    else:
        request = AdminStop()
    settings = load_settings(args.config)
    if getattr(args, "cluster", False):
        return _cluster(args, settings, stdout)
    try:
        reply = admin_request(settings.base_dir, request)
    except OSError as exc:
        print(f"proxyctl: proxyd is not running (base_dir {settings.base_dir}): {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    if not reply.ok:
        print(f"proxyctl: {reply.message or 'failed'}", file=sys.stderr)
        return EXIT_FAILED
    if args.command == "who":
        print(f"{'username':<24} {'proto':<{_PROTO}} {'client':<40} {'backend':<40} age", file=stdout)
        for row in sorted(reply.sessions, key=lambda r: (r.user, r.age)):
            print(
                f"{row.user:<24} {row.protocol:<{_PROTO}} {row.ip:<40} {row.backend:<40} {row.age}s",
                file=stdout,
            )
    elif args.command == "kick":
        print(f"{reply.count} connections kicked", file=stdout)
    return EXIT_OK


def _cluster(args: argparse.Namespace, settings: Settings, stdout: TextIO) -> int:
    """``who --cluster`` / ``kick --cluster``: every peer through its doveadm HTTP API."""
    import fnmatch

    from proxyd.cli import cluster

    if args.command == "who":
        command: list[Any] = ["proxyList", {}, "who"]
    else:
        params: dict[str, Any] = {"user": [args.mask or "*"]}
        if args.host is not None:
            params["host"] = args.host
        command = ["proxyKick", params, "kick"]
    try:
        answers = cluster.ask_all(settings, [command])
    except cluster.ClusterConfigError as exc:
        raise _UsageError(str(exc)) from None
    failed = False
    rows: list[tuple[str, dict[str, str]]] = []
    total = 0
    for answer in answers:
        try:
            if answer.entries is None:
                raise ValueError(answer.error)
            result = cluster.payload(answer.entries[0])
            if args.command == "who":
                rows += [(answer.peer, row) for row in result if fnmatch.fnmatchcase(str(row["username"]), args.mask)]
            else:
                total += int(result[0]["count"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            print(f"proxyctl: {answer.peer}: {exc}", file=sys.stderr)
            failed = True
    if args.command == "who":
        print(f"{'node':<22} {'username':<24} {'proto':<{_PROTO}} {'client':<40} backend", file=stdout)
        for node, row in sorted(rows, key=lambda item: (item[1]["username"], item[0])):
            backend = _join_host_port(row["dest-ip"], row["dest-port"])
            print(f"{node:<22} {row['username']:<24} {row['service']:<{_PROTO}} {row['src-ip']:<40} {backend}", file=stdout)
    else:
        print(f"{total} connections kicked", file=stdout)
    return EXIT_FAILED if failed else EXIT_OK


def _join_host_port(host: str, port: str) -> str:
    return f"{host}:{port}"  # as proxyctl who prints it


# -- pw -----------------------------------------------------------------------------


def _read_password(stdin: TextIO) -> str:
    """From the terminal (twice, not echoed) or one line of a pipe; Ctrl-D or an empty
    pipe is no password at all."""
    if stdin.isatty():
        try:
            first = getpass.getpass("Enter new password: ")
            second = getpass.getpass("Retype new password: ")
        except EOFError:
            print(file=sys.stderr)
            raise _UsageError("no password given") from None
        if first != second:
            raise _UsageError("Passwords don't match!")
        return first
    line = stdin.readline()
    if not line:
        raise _UsageError("no password given")
    return line.removesuffix("\n").removesuffix("\r")


def _pw(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if args.list:
        print(" ".join(schemes.generatable_schemes()), file=stdout)
        return EXIT_OK
    scheme: str = args.scheme
    base = scheme.partition(".")[0].upper()
    if not schemes.is_known_scheme(scheme) or base not in schemes.generatable_schemes():
        raise _UsageError(f"Unknown scheme: {scheme}")
    if args.rounds < 0:
        raise _UsageError("rounds must not be negative")
    try:
        password = args.password if args.password is not None else _read_password(stdin)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_FAILED
    if not password and not args.allow_empty:
        raise _UsageError("the password is empty (--allow-empty hashes it anyway)")
    try:
        hashed = schemes.hash_password(password, scheme, user=args.user, rounds=args.rounds)
    except schemes.SchemeError as exc:
        print(f"proxyctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(hashed, file=stdout)
    return EXIT_OK


# -- auth test --------------------------------------------------------------------------


def _load_settings(path: str) -> Settings:
    try:
        from proxyd.config.load import load_settings
    except ImportError as exc:
        raise _UsageError(f"cannot load configuration: {exc}") from None
    return load_settings(path)


def _connection(info: Sequence[str]) -> ConnectionInfo:
    values: dict[str, str] = {}
    for item in info:
        key, sep, value = item.partition("=")
        if key not in _AUTH_INFO_KEYS:
            raise _UsageError(f"unknown -x key '{key}' (known: {', '.join(_AUTH_INFO_KEYS)})")
        values[key] = value if sep else "yes"
    try:
        lport = int(values.get("lport", "0"))
        rport = int(values.get("rport", "0"))
    except ValueError:
        raise _UsageError("lport and rport must be numbers") from None
    lip, rip = values.get("lip", ""), values.get("rip", "")
    secured = "secured" in values
    return ConnectionInfo(
        service=values.get("service", "imap"),
        local_ip=lip,
        local_port=lport,
        remote_ip=rip,
        remote_port=rport,
        real_local_ip=lip,
        real_local_port=lport,
        real_remote_ip=rip,
        real_remote_port=rport,
        secured=secured,
        tls=False,
        session_id=values.get("session", ""),
    )


def _auth_test(args: argparse.Namespace, stdout: TextIO) -> int:
    conn = _connection(args.info)
    settings = _load_settings(args.config)
    password: str | None = args.password
    request = AuthRequest(
        conn=conn,
        mech="PLAIN" if password is not None else "",
        user=args.user,
        password=Secret(password) if password is not None else None,
    )
    with _logging_to_stderr(settings):
        reply = trio.run(_run_auth_test, settings, request)
    _print_reply(args.user, reply, authenticated=password is not None, out=stdout)
    return EXIT_OK if reply.status is AuthStatus.OK else EXIT_FAILED


async def _run_auth_test(settings: Settings, request: AuthRequest) -> AuthReply:
    from proxyd.auth.opening import open_authenticator

    async with open_authenticator(settings, failure_delay=0, penalty=False) as authenticator:
        if request.password is None:
            return await authenticator.lookup(request)
        return await authenticator.authenticate(request)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never break the command
            self.handleError(record)


@contextlib.contextmanager
def _logging_to_stderr(settings: Settings) -> Iterator[None]:
    """Show passdb errors (and auth_verbose/auth_debug lines) on stderr while the test runs."""
    level = logging.WARNING
    if settings.auth_verbose:
        level = logging.INFO
    if settings.auth_debug:
        level = logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("proxyd")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _print_reply(user: str, reply: AuthReply, *, authenticated: bool, out: TextIO) -> None:
    what = "auth" if authenticated else "lookup"
    if reply.status is AuthStatus.OK:
        line = f"passdb: {user} {what} succeeded"
    else:
        line = f"passdb: {user} {what} failed"
        if reply.fail_code is not None:
            line += f" ({reply.fail_code.value})"
    print(line, file=out)
    print(f"user={reply.user}", file=out)
    for key, value in reply.fields.items():
        print(f"{key}={_MASK if is_secret_field(key) else value}", file=out)
