"""One login attempt's state in the passdb chain, and the field rules that change it.

Field rules (Dovecot's ``auth_request_set_field``): ``name:protected`` sets
only if unset, ``name:remove`` deletes; ``password``/``password_noscheme`` is
the stored password (the driver's default scheme is prepended when it has no
``{SCHEME}``; a second one is an error); ``user``/``username``/``domain``
rewrite the user name; ``nopassword`` accepts any password (refused with an
error when a non-empty password was returned too); ``allow_nets``,
``allow_real_nets``, ``fail`` and ``delay_until`` are checks; ``userdb_*`` are
dropped (proxyd has no userdb); ``passdb_import`` sets a tab-separated list;
everything else is an extra field for the login process.  NULL values (None)
are skipped by the caller, and any non-NULL value, even ``N`` or ``""``,
enables a boolean.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Final

from proxyd.auth import schemes
from proxyd.auth.expand import request_variables
from proxyd.auth.fields import Template
from proxyd.auth.passdb import PassdbResult
from proxyd.auth.request import AuthRequest
from proxyd.log import MAX_LOG_USERNAME_LEN, sanitize

log = logging.getLogger("proxyd.auth")

#: the scheme for passwords in default_fields/override_fields (Dovecot's STATIC_PASS_SCHEME)
STATIC_PASS_SCHEME: Final = "PLAIN"  # noqa: S105 - a scheme name
#: delay_until may be at most this far in the future (AUTH_REQUEST_MAX_DELAY_SECS)
MAX_DELAY_SECS: Final = 300


class Result(enum.Enum):
    """PassdbResult plus Dovecot's internal PASSDB_RESULT_NEXT (``noauthenticate``)."""

    OK = "ok"
    NEXT = "next"
    USER_UNKNOWN = "user_unknown"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - result names, not passwords
    PASSWORD_MISMATCH = "password_mismatch"  # noqa: S105
    SCHEME_NOT_AVAILABLE = "scheme_not_available"
    INTERNAL_FAILURE = "internal_failure"

    @classmethod
    def of(cls, result: PassdbResult) -> Result:
        # a dict look-up: an Enum's call by value costs several Python calls, once per passdb
        return _RESULT_OF.get(result) or cls(result.value)


_RESULT_OF: Final = {
    passdb: result for passdb in PassdbResult for result in Result if result.value == passdb.value
}


@dataclass(slots=True)
class Attempt:
    """Per-request mutable state of one chain run, with its field rules and log lines."""

    request: AuthRequest
    original_user: str
    user: str
    verify_password: bool
    verbose: bool = False
    debug: bool = False
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the fields as the last successful passdb left them (rolled back to on failure)
    snapshot: dict[str, str] = dataclasses.field(default_factory=dict)
    passdb_password: str | None = None
    failed: bool = False
    skip_password_check: bool = False
    passdb_success: bool = False
    seen_internal_failure: bool = False
    delay_until: float | None = None
    #: the log prefix name of the passdb being run (None before the first)
    passdb_name: str | None = None
    seen_user_unknown: bool = False
    #: a master user login (``user*master``, an authzid): the user to log in as,
    #: until a master passdb accepted the master user; then the master user
    login_user: str = ""
    master_user: str = ""
    #: a credentials lookup (non-plaintext mechanisms): the scheme wanted, the
    #: name a plaintext password is hashed with, and what was found
    wanted_scheme: str | None = None
    scheme_user: str = ""
    credentials: bytes | None = dataclasses.field(default=None, repr=False)

    # -- logging -------------------------------------------------------------

    def prefix(self, subsystem: str | None = None) -> str:
        conn = self.request.conn
        name = subsystem or self.passdb_name or "auth"
        parts = [sanitize(self.user, MAX_LOG_USERNAME_LEN) if self.user else "?"]
        if conn.remote_ip:
            parts.append(conn.remote_ip)
        if conn.session_id:
            parts.append(f"<{sanitize(conn.session_id)}>")
        return f"{name}({','.join(parts)}): "

    def info(self, message: str, subsystem: str | None = None) -> None:
        if self.verbose:
            log.info("%s%s", self.prefix(subsystem), message)

    def debug_log(self, message: str) -> None:
        if self.debug:
            log.debug("%s%s", self.prefix(), message)

    def error(self, message: str) -> None:
        log.error("%s%s", self.prefix(), message)

    # -- passwords -------------------------------------------------------------

    async def check_password(self, stored: str, default_scheme: str) -> Result:
        """Verify the typed password against ``stored``."""
        password = self.request.password
        assert password is not None
        try:
            matched = await schemes.verify_async(
                password.reveal(), stored, default_scheme, self.original_user
            )
        except schemes.UnknownSchemeError as exc:
            self.error(f"Unknown scheme {exc.scheme}")
            return Result.SCHEME_NOT_AVAILABLE
        except schemes.SchemeError as exc:
            scheme = schemes.split_scheme(stored)[0] or default_scheme
            self.error(f"Password data is not valid for scheme {scheme}: {exc}")
            return Result.INTERNAL_FAILURE
        if not matched:
            self.info("Password mismatch")
            return Result.PASSWORD_MISMATCH
        return Result.OK

    async def get_credentials(self, stored: str, default_scheme: str) -> Result:
        """``passdb_get_credentials()``: ``stored`` as credentials in the wanted scheme."""
        assert self.wanted_scheme is not None
        try:
            self.credentials = await schemes.credentials_async(
                stored, default_scheme, self.wanted_scheme, self.scheme_user
            )
        except schemes.UnknownSchemeError as exc:
            self.error(f"Unknown scheme {exc.scheme}")
            return Result.SCHEME_NOT_AVAILABLE
        except schemes.CredentialsUnavailableError as exc:
            self.info(str(exc))
            return Result.SCHEME_NOT_AVAILABLE
        except schemes.SchemeError as exc:
            scheme = schemes.split_scheme(stored)[0] or default_scheme
            self.error(f"Password data is not valid for scheme {scheme}: {exc}")
            return Result.SCHEME_NOT_AVAILABLE
        return Result.OK

    # -- the field rules --------------------------------------------------------

    def export(self, template: Template, what: str) -> None:
        """Apply ``default_fields``/``override_fields``; raises ``ExpandError``."""
        if not template:
            return
        variables = request_variables(
            self.request,
            user=self.user,
            original_user=self.original_user,
            passdb_fields=self.fields,
        )
        for name, value in template.export(variables):
            self.set_field(name, value, STATIC_PASS_SCHEME)
        self.debug_log(f"{what} applied")

    def set_field(self, name: str, value: str, default_scheme: str) -> None:
        """Apply one field a passdb (or a template, or the cache) returned."""
        if name.endswith(":protected") and len(name) > len(":protected"):
            name = name[: -len(":protected")]
            if name in self.fields:
                return
        elif name.endswith(":remove") and len(name) > len(":remove"):
            self.fields.pop(name[: -len(":remove")], None)
            return

        if name in ("password", "password_noscheme"):
            self._set_password(value, default_scheme, noscheme=name == "password_noscheme")
            return
        if name in ("user", "username", "domain"):
            self._update_user(name, value)
        elif name == "allow_nets":
            self._check_networks(name, value, self.request.conn.remote_ip)
        elif name == "allow_real_nets":
            self._check_networks(name, value, self.request.conn.real_remote_ip)
        elif name == "fail":
            self.failed = True
        elif name == "delay_until":
            self._set_delay_until(value)
        elif name.startswith("userdb_"):
            return  # prefetch userdb fields: a proxy has no userdb
        elif name == "passdb_import":
            for item in value.split("\t"):
                key, _, item_value = item.partition("=")
                if key:
                    self.set_field(key, item_value, default_scheme)
            return
        elif name == "noauthenticate":
            self.fields[name] = value
            self.fields["nopassword"] = ""
            return
        elif name == "nopassword":
            stored = self.passdb_password
            if (
                stored is not None
                and "noauthenticate" not in self.fields
                and schemes.split_scheme(stored)[1] != ""
            ):
                self.error("nopassword set but password is non-empty")
                return
            self.passdb_password = None
            self.fields[name] = value
            return
        # login_user is remembered (hidden) but master users are not supported
        self.fields[name] = value

    def _set_password(self, value: str, default_scheme: str, *, noscheme: bool) -> None:
        if self.passdb_password is not None:
            self.error("Multiple password values not supported")
            return
        if value.startswith("{") and not noscheme and "}" in value:
            self.passdb_password = value
        else:
            self.passdb_password = f"{{{default_scheme}}}{value}"

    def _update_user(self, name: str, value: str) -> None:
        old = self.user
        local, at, domain = old.partition("@")
        if name == "user":
            new = value
        elif name == "username":
            new = value if "@" in value else value + at + domain
        else:  # domain
            new = f"{local}@{value}"
        if not new:
            self.error("username attempted to be changed to empty")
            self.failed = True
            return
        if new != old:
            shown = [sanitize(name, MAX_LOG_USERNAME_LEN) for name in (old, new)]
            self.debug_log(f"username changed {shown[0]} -> {shown[1]}")
            # Dovecot keeps a rewrite even if this passdb then fails
            self.user = new

    def _check_networks(self, name: str, value: str, remote_ip: str) -> None:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if remote_ip:
            try:
                address = ipaddress.ip_address(remote_ip)
            except ValueError:
                address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for net in value.replace(",", " ").split():
            if net == "local":
                if address is None:
                    self.fields[name] = value
                    return
                continue
            try:
                network = ipaddress.ip_network(net, strict=False)
            except ValueError:
                self.info(f"{name}: Invalid network '{net}'")
                continue
            if address is not None and address.version == network.version and address in network:
                self.fields[name] = value
                return
        if address is None:
            self.info(f"{name} check failed: Remote IP not known and 'local' missing")
        else:
            self.info(f"{name} check failed: IP {address} not in allowed networks")
        self.failed = True

    def _set_delay_until(self, value: str) -> None:
        stamp_text, plus, extra_text = value.partition("+")
        extra = 0
        if plus:
            if not extra_text.isascii() or not extra_text.isdigit():
                self.error(f"Invalid delay_until randomness number '{extra_text}'")
                self.failed = True
                return
            extra = secrets.randbelow(int(extra_text)) if int(extra_text) > 0 else 0
        if not stamp_text.isascii() or not stamp_text.isdigit():
            self.error(f"Invalid delay_until timestamp '{stamp_text}'")
            self.failed = True
            return
        now = time.time()
        stamp = int(stamp_text)
        if stamp <= now:
            return
        if stamp - now > MAX_DELAY_SECS:
            self.error(f"delay_until timestamp {stamp_text} is too much in the future, failing")
            self.failed = True
            return
        self.delay_until = min(stamp + extra, now + MAX_DELAY_SECS)
