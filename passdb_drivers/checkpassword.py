"""The ``checkpassword`` passdb (Dovecot's ``passdb-checkpassword.c`` / ``db-checkpassword.c``).

``args`` is the checkpassword program (%-variables expanded, split on spaces)::

    passdb {
      driver = checkpassword
      args = /usr/local/bin/checkpassword
    }

The program gets ``user NUL password NUL NUL`` on fd 3 and, as its arguments,
the reply helper: Dovecot's ``/usr/lib/dovecot/checkpassword-reply`` when it
is installed, else proxyd's own (``passdb_drivers.checkpassword_reply``, run
by the Python that runs proxyd).  A program that accepts the login runs the helper,
which writes the extra fields (``USER``, ``HOME`` and the variables named in
``EXTRA``) tab-separated to fd 4.  Exit status 0 with fields is a success, 1
a wrong password, anything else an internal failure.  A lookup without a
password (non-plaintext mechanisms, ``proxyctl auth test USER``) sets
``AUTHORIZED=1`` (and, for a mechanism's credentials, ``CREDENTIALS_LOOKUP=1``
and ``SCHEME``): the program then exits 2 with fields (found) or 3 (unknown
user); a ``password=`` field (``{SCHEME}`` optional there) serves the mechanism.

The environment carries ``PROTO=TCP``, ``SERVICE``, ``TCPLOCALIP``,
``TCPREMOTEIP``, ``TCPLOCALPORT``, ``TCPREMOTEPORT`` (and the older
``LOCAL_IP``/``REMOTE_IP``), ``ORIG_UID``, the extra fields so far (upper
case) and the request variables as ``AUTH_<NAME>`` (never the password).

The program runs as a child process under Trio, off the event loop, and is
killed after ``TIMEOUT`` seconds (an internal failure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import trio

from proxyd.auth.expand import ExpandError, expand, request_variables
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError
from proxyd.log import MAX_LOG_USERNAME_LEN, sanitize
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth")

#: Dovecot's CHECKPASSWORD_MAX_REQUEST_LEN
MAX_REQUEST_LEN: Final = 512
#: a program that has not answered by then is killed
TIMEOUT: Final = 30.0
#: Dovecot's own reply helper, when Dovecot is installed (a C program any user can run)
DOVECOT_REPLY: Final = "/usr/lib/dovecot/checkpassword-reply"


def reply_command() -> tuple[str, ...]:
    """The reply helper the program gets as its arguments: Dovecot's, else proxyd's own."""
    if os.access(DOVECOT_REPLY, os.X_OK):
        return (DOVECOT_REPLY,)
    return (sys.executable, "-m", "passdb_drivers.checkpassword_reply")
#: the request variables exported as AUTH_<NAME> (Dovecot's var-expand table, long names)
_AUTH_VARS: Final = (
    "user", "username", "domain", "service", "home", "lip", "rip", "pid", "mech", "secured",
    "lport", "rport", "cert", "login_user", "login_username", "login_domain", "session",
    "real_lip", "real_rip", "real_lport", "real_rport", "domain_first", "domain_last",
    "master_user", "session_pid", "orig_user", "orig_username", "orig_domain", "auth_user",
    "auth_username", "auth_domain", "local_name", "client_id",
)  # fmt: skip


def _unescape_tab(value: str) -> str:
    """Dovecot's ``str_tabunescape()``: ``\\001`` escapes ``\\001``, ``\\t``, ``\\r``, ``\\n``."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\x01":
            out.append(char)
            continue
        code = next(chars, "")
        out.append({"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}.get(code, code))
    return "".join(out)


def parse_reply(data: bytes) -> list[tuple[str, str | None]]:
    """The helper's tab-separated ``key=value`` fields (``password=`` included); ValueError for
    what Dovecot refuses."""
    if b"\0" in data:
        raise ValueError("NUL characters in checkpassword reply")
    if b"\n" in data:
        raise ValueError("LF characters in checkpassword reply")
    fields: list[tuple[str, str | None]] = []
    for item in data.decode("utf-8", "replace").split("\t"):
        if not item:
            continue
        raw_key, sep, value = item.partition("=")
        key = _unescape_tab(raw_key)
        if not key or "\t" in key:
            continue  # a nameless field (or a lone escape) means nothing; no field name has a tab
        fields.append((key, _unescape_tab(value) if sep else ""))
    return fields


class CheckpasswordPassdb:
    """Runs the checkpassword program for each login (it checks the password itself)."""

    default_pass_scheme: str = "PLAIN"  # noqa: S105 - a scheme name

    def __init__(self, command: str, *, timeout: float = TIMEOUT) -> None:
        self._command = command
        self._timeout = timeout

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        return await self._call(request, password)

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        return await self._call(request, None)

    def _environment(self, request: AuthRequest, authenticate: bool) -> dict[str, str]:
        conn = request.conn
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROTO": "TCP"}
        env["ORIG_UID"] = str(os.getuid())
        env["SERVICE"] = conn.service
        if conn.local_ip:
            env["TCPLOCALIP"] = env["LOCAL_IP"] = conn.local_ip
        if conn.remote_ip:
            env["TCPREMOTEIP"] = env["REMOTE_IP"] = conn.remote_ip
        if conn.local_port:
            env["TCPLOCALPORT"] = str(conn.local_port)
        if conn.remote_port:
            env["TCPREMOTEPORT"] = str(conn.remote_port)
        for key, value in request.passdb_fields.items():
            if key.replace("_", "").isalnum():
                env[key.upper()] = value or "1"
        variables = request_variables(request, passdb_fields=request.passdb_fields).long
        for name in _AUTH_VARS:
            variable = variables.get(name)
            if variable is not None:
                env[f"AUTH_{name.upper()}"] = variable
        if not authenticate:
            # a lookup: the program must not check a password (Dovecot's AUTHORIZED)
            env["AUTHORIZED"] = "1"
            if request.credentials_scheme:
                env["CREDENTIALS_LOOKUP"] = "1"
                env["SCHEME"] = request.credentials_scheme
        return env

    async def _call(self, request: AuthRequest, password: Secret | None) -> PassdbReply:
        secret = b"" if password is None else password.reveal().encode("utf-8")
        payload = request.user.encode("utf-8") + b"\0" + secret + b"\0\0"
        if len(payload) > MAX_REQUEST_LEN:
            log.info(
                "checkpassword(%s): Username+password combination too long (%d bytes)",
                sanitize(request.user, MAX_LOG_USERNAME_LEN), len(payload),
            )
            result = PassdbResult.PASSWORD_MISMATCH if password is not None else PassdbResult.USER_UNKNOWN
            return PassdbReply(result)
        try:
            program = expand(self._command, request_variables(request)).split(" ")
        except ExpandError as exc:
            raise PassdbTempFail(f"Failed to expand checkpassword_path={self._command}: {exc}") from None
        status, output = await self._run(program, payload, self._environment(request, password is not None))
        return self._result(request, status, output, authenticate=password is not None)

    async def _run(self, program: list[str], payload: bytes, env: dict[str, str]) -> tuple[int, bytes]:
        """Run the program with the request on fd 3 and the helper's reply on fd 4."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        # fds 3 and 4 exactly, as the checkpassword interface wants: bash moves them there
        # (dash takes single-digit fds only; preexec_fn is unsafe beside worker threads)
        shell = f'exec "$@" 3<&{request_read} 4>&{reply_write} {request_read}<&- {reply_write}>&-'
        argv = ["/bin/bash", "-c", shell, "checkpassword", *program, *reply_command()]
        try:
            process = await trio.lowlevel.open_process(
                argv,
                env=env,
                pass_fds=(request_read, reply_write),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (request_read, request_write, reply_read, reply_write):
                os.close(fd)
            raise PassdbTempFail(f"fork() failed: {exc.strerror}") from None
        os.close(request_read)
        os.close(reply_write)
        output = bytearray()
        try:
            with trio.fail_after(self._timeout):
                async with (
                    trio.lowlevel.FdStream(request_write) as to_child,
                    trio.lowlevel.FdStream(reply_read) as from_child,
                ):
                    with contextlib.suppress(trio.BrokenResourceError):
                        await to_child.send_all(payload)
                    await to_child.aclose()
                    while chunk := await from_child.receive_some(4096):
                        output += chunk
                        if len(output) > 65536:
                            raise PassdbTempFail("checkpassword reply too long")
                    status = await process.wait()
        except trio.TooSlowError:
            raise PassdbTempFail(f"Child {process.pid} timed out after {self._timeout:g} secs") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await process.wait()
        if status < 0:
            raise PassdbTempFail(f"Child {process.pid} died with signal {-status}")
        return status, bytes(output)

    def _result(self, request: AuthRequest, status: int, output: bytes, *, authenticate: bool) -> PassdbReply:
        user = sanitize(request.user, MAX_LOG_USERNAME_LEN)
        if authenticate:
            if status == 1:
                log.info("checkpassword(%s): Login failed (status=1)", user)
                return PassdbReply(PassdbResult.PASSWORD_MISMATCH)
            if status == 2:
                raise PassdbTempFail(
                    "Child exited with status 2 (tried to use userdb-only checkpassword program for passdb?)"
                )
            if status != 0:
                raise PassdbTempFail(f"Child exited with status {status}")
        else:
            if status == 3:
                log.info("checkpassword(%s): User unknown", user)
                return PassdbReply(PassdbResult.USER_UNKNOWN)
            if status != 2:
                raise PassdbTempFail(f"Child exited with status {status}")
        if not output:
            raise PassdbTempFail("Received no input")
        try:
            fields = parse_reply(output)
        except ValueError as exc:
            raise PassdbTempFail(str(exc)) from None
        checked: list[tuple[str, str | None]] = []
        for key, value in fields:
            if key == "password" and not (value or "").startswith("{"):
                if request.credentials_scheme and not authenticate:
                    # a credentials lookup: a bare password is in the scheme asked for
                    value = f"{{{request.credentials_scheme}}}{value}"
                else:
                    log.error("checkpassword(%s): password field returned without {scheme} prefix", user)
                    continue
            checked.append((key, value))
        return PassdbReply(PassdbResult.OK, tuple(checked))


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The checkpassword passdb running ``settings.args``."""
    if not settings.args.strip():
        raise ConfigError(settings.location, "passdb checkpassword: Checkpassword program path missing")

    @asynccontextmanager
    async def opened() -> AsyncIterator[Passdb]:
        yield CheckpasswordPassdb(settings.args.strip())

    return opened()
