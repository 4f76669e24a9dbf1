"""The ``oauth2`` passdb (Dovecot's ``passdb-oauth2.c`` / ``db-oauth2.c`` / ``lib-oauth2``).

``args`` names a ``dovecot-oauth2.conf.ext`` file::

    passdb {
      driver = oauth2
      args = /etc/dovecot/dovecot-oauth2.conf.ext
    }

The password of the login (the bearer token of XOAUTH2/OAUTHBEARER) is
checked at the authorization server:

1. with ``tokeninfo_url``: ``GET tokeninfo_url<token>``; a 4xx answer is an
   invalid token; the JSON fields are kept, and when they lack the
   ``username_attribute`` (or ``active_attribute``, or a ``%{oauth2:...}`` of
   ``pass_attrs``), or ``force_introspection = yes``, introspection follows;
2. introspection at ``introspection_url``, by ``introspection_mode``:
   ``auth`` (default: ``GET`` with ``Authorization: Bearer <token>``), ``get``
   (``introspection_url<token>&client_id=..&client_secret=..``) or ``post``
   (form ``token=..&client_id=..&client_secret=..``);
3. the fields must then pass: ``active_attribute`` (default ``active``) equal to
   ``active_value`` (``true``) when present, else "Provided token is not valid";
   ``username_attribute`` (default ``email``) equal to the login name, both
   through ``username_format`` (``%Lu``), else "Username 'x' did not match 'y'"
   (an unknown user); ``scope`` (any of its words in the token's ``scope`` or
   ``aud``), else "Token is not valid for scope 'x'" (a disabled user);
4. ``pass_attrs`` become the passdb's fields, ``%{oauth2:NAME[:default]}`` and
   ``%$`` (the same-named attribute) expanded: ``proxy=y host=... master=...
   pass=...`` routes the login.

The HTTP client is httpx, which runs under Trio (through anyio) in the auth
process; ``timeout_msecs`` (0: none), ``max_parallel_connections``,
``max_idle_time_msecs``, the ``tls_*`` settings and ``send_auth_headers``
(``X-Dovecot-Auth-*``) apply.

With ``introspection_mode = local`` the token is instead a JWT validated in the
auth process (``passdb_drivers.oauth2_jwt``) against the keys of
``local_validation_key_dict`` (``fs:posix:prefix=DIR``) and ``issuers``; no
request is made, and a refusal is logged as "Local validation failed: ...".
Then step 3 applies to the token's claims.

Not supported yet (an error with ``FILE:LINE``): the password grant
(``grant_url``, ``use_grant_password``), ``openid_configuration_url`` and
``rawlog_dir``.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from passdb_drivers._conffile import read_args_file
from passdb_drivers.oauth2_jwt import JwtChecks, JwtError, KeyCache, parse, verify_signature
from passdb_drivers.oauth2_keydict import FsKeyDict
from proxyd.auth.expand import ExpandError, Variables, expand, request_variables
from proxyd.auth.fields import Template
from proxyd.auth.passdb import Passdb, PassdbReply, PassdbResult, PassdbTempFail
from proxyd.auth.request import AuthRequest
from proxyd.config.settings import PassdbSettings
from proxyd.errors import ConfigError, Location
from proxyd.log import MAX_LOG_USERNAME_LEN, sanitize
from proxyd.secret import Secret

log = logging.getLogger("proxyd.auth")

_USER_AGENT: Final = "dovecot-oauth2-passdb/proxyd"
_MODES: Final = ("auth", "get", "post")
_NOT_YET: Final = frozenset(
    {"grant_url", "use_grant_password", "openid_configuration_url", "rawlog_dir"}
)  # fmt: skip
_STRINGS: Final = (
    "tokeninfo_url", "introspection_url", "scope", "introspection_mode", "username_format",
    "username_attribute", "active_attribute", "active_value", "client_id", "client_secret",
    "pass_attrs", "tls_ca_cert_file", "tls_ca_cert_dir", "tls_cert_file", "tls_key_file",
    "tls_cipher_suite", "local_validation_key_dict", "issuers",
)  # fmt: skip
_BOOLS: Final = ("force_introspection", "send_auth_headers", "tls_allow_invalid_cert", "debug")
_INTS: Final = ("timeout_msecs", "max_idle_time_msecs", "max_parallel_connections", "max_pipelined_requests")


@dataclass(slots=True)
class OAuth2Settings:
    """``dovecot-oauth2.conf.ext`` with Dovecot's defaults."""

    tokeninfo_url: str = ""
    introspection_url: str = ""
    scope: str = ""
    introspection_mode: str = ""
    username_format: str = "%Lu"
    username_attribute: str = "email"
    active_attribute: str = "active"
    active_value: str = "true"
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    pass_attrs: str = ""
    local_validation_key_dict: str = ""
    issuers: str = ""
    tls_ca_cert_file: str = ""
    tls_ca_cert_dir: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_cipher_suite: str = "HIGH:!SSLv2"
    force_introspection: bool = False
    send_auth_headers: bool = False
    tls_allow_invalid_cert: bool = False
    debug: bool = False
    timeout_msecs: int = 0
    max_idle_time_msecs: int = 60000
    max_parallel_connections: int = 10
    max_pipelined_requests: int = 1


def _bool(value: str, location: Location) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "y", "1", "true"):
        return True
    if lowered in ("no", "n", "0", "false", ""):
        return False
    raise ConfigError(location, f"Invalid boolean: {value}")


def read_settings(path: str, where: Location | None) -> OAuth2Settings:
    """Parse the args file; raises ``ConfigError`` with ``FILE:LINE`` for what Dovecot refuses
    and for what proxyd does not do yet."""
    settings = OAuth2Settings()
    last = where
    for item in read_args_file(path, where):
        last = item.location
        key = item.key
        if key in _NOT_YET:
            raise ConfigError(item.location, f"oauth2: setting '{key}' is not supported yet")
        if key in _STRINGS:
            setattr(settings, key, item.value)
        elif key in _BOOLS:
            setattr(settings, key, _bool(item.value, item.location))
        elif key in _INTS:
            if not item.value.isdigit():
                raise ConfigError(item.location, f"Invalid number: {item.value}")
            setattr(settings, key, int(item.value))
        else:
            raise ConfigError(item.location, f"Unknown setting: {key}")
        if key == "introspection_mode" and item.value not in ("", "local", *_MODES):
            raise ConfigError(
                item.location,
                f"oauth2: Invalid value '{item.value}' for introspection mode, must be on auth, get, post or local",
            )
    if settings.introspection_mode == "local":
        if not settings.local_validation_key_dict:
            raise ConfigError(last, "oauth2: local_validation_key_dict is required for local introspection.")
    elif settings.local_validation_key_dict or settings.issuers:
        # Dovecot reads them only with introspection_mode = local; proxyd ignores no setting silently
        raise ConfigError(last, "oauth2: local_validation_key_dict and issuers need introspection_mode = local")
    if not settings.tokeninfo_url and not settings.introspection_url and not settings.local_validation_key_dict:
        raise ConfigError(
            last,
            "oauth2: Password grant, tokeninfo, introspection URL or validation key dictionary must be given",
        )
    if settings.active_attribute and not settings.active_value:
        raise ConfigError(last, "oauth2: Cannot have empty active_value if active_attribute is set")
    if not settings.active_attribute and settings.active_value:
        raise ConfigError(last, "oauth2: Cannot have empty active_attribute is active_value is set")
    return settings


class _Failed(Exception):
    """A lookup that ends here: the passdb result and Dovecot's error text."""

    def __init__(self, result: PassdbResult, error: str) -> None:
        super().__init__(error)
        self.result = result
        self.error = error


def _flatten(body: bytes) -> dict[str, str]:
    """The response's top-level scalar members as strings (``lib-oauth2``'s field list)."""
    if not body.strip():
        return {}  # an empty response is fine
    try:
        data = json.loads(body)
    except ValueError:
        raise _Failed(PassdbResult.INTERNAL_FAILURE, "Invalid response data") from None
    if not isinstance(data, dict):
        raise _Failed(PassdbResult.INTERNAL_FAILURE, "Invalid response data")
    fields: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, str):
            fields[key] = value
        elif isinstance(value, int | float):
            fields[key] = json.dumps(value)
        # objects, arrays and null are skipped, as Dovecot's parser does
    return fields


def _check_known_fields(fields: Mapping[str, str]) -> None:
    """``oauth2_request_field_parse()``: ``expires_in`` and ``token_type`` must make sense."""
    for key, value in fields.items():
        lowered = key.lower()
        if lowered == "expires_in" and not (value.isdigit() and int(value) < 2**32):
            raise _Failed(PassdbResult.INTERNAL_FAILURE, f"Malformed number '{value}' in expires_in")
        if lowered == "token_type" and value.lower() != "bearer":
            raise _Failed(PassdbResult.INTERNAL_FAILURE, f"Expected Bearer token, got '{value}'")


class OAuth2Passdb:
    """Checks bearer tokens at the authorization server."""

    default_pass_scheme: str = "PLAIN"  # noqa: S105 - a scheme name

    def __init__(
        self, settings: OAuth2Settings, client: httpx.AsyncClient, keys: FsKeyDict | None = None
    ) -> None:
        self._set = settings
        self._client = client
        self._template = Template.parse(settings.pass_attrs)
        self._keys = KeyCache(keys.lookup) if keys is not None else None
        self._checks = JwtChecks(
            issuers=tuple(settings.issuers.split()), client_id=settings.client_id, scope=settings.scope
        )

    async def lookup(self, request: AuthRequest) -> PassdbReply:
        """Without a token there is nothing to check (``proxyctl auth test USER``)."""
        self._log(request, logging.INFO, "oauth2 failed: No token given")
        return PassdbReply(PassdbResult.USER_UNKNOWN)

    async def verify_plain(self, request: AuthRequest, password: Secret) -> PassdbReply:
        token = password.reveal()
        try:
            fields = await self._validate(request, token)
        except _Failed as failed:
            if failed.result is PassdbResult.INTERNAL_FAILURE:
                raise PassdbTempFail(f"oauth2 failed: {failed.error}") from None
            self._log(request, logging.INFO, f"oauth2 failed: {failed.error}")
            return PassdbReply(failed.result)
        return PassdbReply(PassdbResult.OK, (*fields, ("token", token)))

    def _log(self, request: AuthRequest, level: int, message: str) -> None:
        conn = request.conn
        parts = [sanitize(request.user, MAX_LOG_USERNAME_LEN) or "?"]
        if conn.remote_ip:
            parts.append(conn.remote_ip)
        if conn.session_id:
            parts.append(f"<{conn.session_id}>")
        log.log(level, "oauth2(%s): %s", ",".join(parts), sanitize(message))

    async def _validate(self, request: AuthRequest, token: str) -> list[tuple[str, str | None]]:
        if self._keys is not None:
            return await self._validate_locally(request, token, self._keys)
        fields: dict[str, str] = {}
        if self._set.tokeninfo_url:
            prefix = "Token validation failed: "
            url = self._set.tokeninfo_url + urllib.parse.quote(token, safe="")
            status, body = await self._get(request, "GET", url, token, prefix)
            if status // 100 == 4:
                raise _Failed(PassdbResult.PASSWORD_MISMATCH, prefix + "Invalid token")
            fields = self._parse(body, prefix)
            if not self._have_all_fields(fields) or self._set.force_introspection:
                self._user_is_enabled(fields, "Token is not valid: ")
                if self._set.introspection_url:
                    fields.update(await self._introspect(request, token))
                    prefix = "Introspection failed: "
            return self._process(request, fields, prefix)
        fields = await self._introspect(request, token)
        return self._process(request, fields, "Introspection failed: ")

    async def _validate_locally(
        self, request: AuthRequest, token: str, keys: KeyCache
    ) -> list[tuple[str, str | None]]:
        """``db_oauth2_local_validation()``: a bad token is a password mismatch."""
        prefix = "Local validation failed: "
        try:
            jwt = parse(token, self._checks)
            await verify_signature(jwt, keys)
        except JwtError as exc:
            raise _Failed(PassdbResult.PASSWORD_MISMATCH, prefix + str(exc)) from None
        return self._process(request, jwt.fields, prefix)

    async def _introspect(self, request: AuthRequest, token: str) -> dict[str, str]:
        prefix = "Introspection failed: "
        mode = self._set.introspection_mode or "auth"
        secrets = {"client_id": self._set.client_id, "client_secret": self._set.client_secret}
        if mode == "get":
            url = self._set.introspection_url + urllib.parse.quote(token, safe="")
            url += "&" + urllib.parse.urlencode(secrets)
            status, body = await self._get(request, "GET", url, token, prefix)
        elif mode == "post":
            form = {"token": token, **secrets}
            status, body = await self._get(request, "POST", self._set.introspection_url, token, prefix, form)
        else:
            status, body = await self._get(request, "GET", self._set.introspection_url, token, prefix)
        del status  # a 4xx answer's fields are judged like a 2xx one's, as in Dovecot
        return self._parse(body, prefix)

    async def _get(
        self,
        request: AuthRequest,
        method: str,
        url: str,
        token: str,
        prefix: str,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        headers = {"User-Agent": _USER_AGENT}
        if (self._set.introspection_mode or "auth") == "auth" and "@" not in urllib.parse.urlsplit(url).netloc:
            headers["Authorization"] = f"Bearer {token}"
        if self._set.send_auth_headers:
            conn = request.conn
            headers["X-Dovecot-Auth-Service"] = conn.service
            if conn.local_ip:
                headers["X-Dovecot-Auth-Local"] = f"{conn.local_ip}:{conn.local_port}"
            if conn.remote_ip:
                headers["X-Dovecot-Auth-Remote"] = f"{conn.remote_ip}:{conn.remote_port}"
        try:
            response = await self._client.request(method, url, headers=headers, data=form)
        except httpx.TimeoutException:
            raise _Failed(PassdbResult.INTERNAL_FAILURE, prefix + "Request timed out") from None
        except httpx.HTTPError as exc:
            raise _Failed(PassdbResult.INTERNAL_FAILURE, prefix + (str(exc) or type(exc).__name__)) from None
        if response.status_code // 100 not in (2, 4):
            raise _Failed(
                PassdbResult.INTERNAL_FAILURE, prefix + f"{response.status_code} {response.reason_phrase}"
            )
        return response.status_code, response.content

    def _parse(self, body: bytes, prefix: str) -> dict[str, str]:
        try:
            fields = _flatten(body)
            _check_known_fields(fields)
        except _Failed as failed:
            raise _Failed(failed.result, prefix + failed.error) from None
        return fields

    def _have_all_fields(self, fields: Mapping[str, str]) -> bool:
        """``db_oauth2_have_all_fields()``: everything the checks and pass_attrs need is there."""
        for _key, value in self._template.items:
            for name in _oauth2_references(value or ""):
                if name not in fields:
                    return False
        if self._set.username_attribute not in fields:
            return False
        return not (self._set.active_attribute and self._set.active_attribute not in fields)

    def _user_is_enabled(self, fields: Mapping[str, str], prefix: str) -> None:
        active = fields.get(self._set.active_attribute) if self._set.active_attribute else None
        if active is not None and active != self._set.active_value:
            raise _Failed(PassdbResult.PASSWORD_MISMATCH, prefix + "Provided token is not valid")

    def _process(self, request: AuthRequest, fields: dict[str, str], prefix: str) -> list[tuple[str, str | None]]:
        """``db_oauth2_process_fields()``: active, username, scope, then ``pass_attrs``."""
        self._user_is_enabled(fields, prefix)
        self._validate_username(request, fields, prefix)
        self._in_scope(fields, prefix)
        variables = request_variables(request)
        out: list[tuple[str, str | None]] = []
        for key, value in self._template.items:
            if value is None:
                out.append((key, ""))
                continue
            scoped = Variables(
                short={**variables.short, "$": fields.get(key)},
                long=variables.long,
                passdb_fields=variables.passdb_fields,
                namespaces={"oauth2": fields},
            )
            try:
                out.append((key, expand(value, scoped)))
            except ExpandError as exc:
                raise _Failed(PassdbResult.INTERNAL_FAILURE, prefix + f"var_expand({value}) failed: {exc}") from None
        return out

    def _validate_username(self, request: AuthRequest, fields: Mapping[str, str], prefix: str) -> None:
        value = fields.get(self._set.username_attribute)
        if value is None:
            raise _Failed(PassdbResult.INTERNAL_FAILURE, prefix + "No username returned")
        name, at, domain = value.partition("@")
        from_token = Variables(
            short={"u": value, "n": name, "d": domain if at else None},
            long={"user": value, "username": name, "domain": domain if at else None},
        )
        fmt = self._set.username_format
        try:
            wanted = expand(fmt, request_variables(request))
            found = expand(fmt, from_token)
        except ExpandError as exc:
            raise _Failed(PassdbResult.INTERNAL_FAILURE, prefix + f"var_expand({fmt}) failed: {exc}") from None
        if wanted != found:
            raise _Failed(PassdbResult.USER_UNKNOWN, prefix + f"Username '{wanted}' did not match '{found}'")

    def _in_scope(self, fields: Mapping[str, str], prefix: str) -> None:
        if not self._set.scope:
            return
        value = fields.get("scope")
        if value is None:
            value = fields.get("aud")
        scopes = set(value.split()) if value is not None else set()
        if not any(wanted in scopes for wanted in self._set.scope.split()):
            raise _Failed(PassdbResult.USER_DISABLED, prefix + f"Token is not valid for scope '{self._set.scope}'")


def _oauth2_references(template: str) -> list[str]:
    """The NAMEs of ``%{oauth2:NAME[:default]}`` in ``template``."""
    names: list[str] = []
    start = 0
    while (pos := template.find("%{oauth2:", start)) != -1:
        end = template.find("}", pos)
        if end == -1:
            break
        names.append(template[pos + len("%{oauth2:") : end].partition(":")[0])
        start = end + 1
    return names


def _tls_context(settings: OAuth2Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=settings.tls_ca_cert_file or None, capath=settings.tls_ca_cert_dir or None
    )
    if settings.tls_cert_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
    if settings.tls_cipher_suite:
        context.set_ciphers(settings.tls_cipher_suite)
    if settings.tls_allow_invalid_cert:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def create(settings: PassdbSettings) -> AbstractAsyncContextManager[Passdb]:
    """The oauth2 passdb for the args file ``settings.args``; raises ``ConfigError``."""
    path = settings.args.strip()
    if not path:
        raise ConfigError(settings.location, "oauth2: args must name the oauth2 configuration file")
    if not path.startswith("/"):
        path = f"{settings.config_dir}/{path}"
    oauth2 = read_settings(path, settings.location)
    try:
        Template.parse(oauth2.pass_attrs)
        tls = _tls_context(oauth2)
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise ConfigError(settings.location, f"oauth2 {path}: {exc}") from None
    keys: FsKeyDict | None = None
    if oauth2.introspection_mode == "local":
        try:
            keys = FsKeyDict.from_uri(oauth2.local_validation_key_dict)
        except ValueError as exc:
            raise ConfigError(settings.location, f"oauth2 {path}: Cannot initialize key dict: {exc}") from None

    @asynccontextmanager
    async def opened() -> AsyncIterator[Passdb]:
        timeout: Any = oauth2.timeout_msecs / 1000 if oauth2.timeout_msecs else None
        limits = httpx.Limits(
            max_connections=oauth2.max_parallel_connections or None,
            keepalive_expiry=oauth2.max_idle_time_msecs / 1000,
        )
        async with httpx.AsyncClient(verify=tls, timeout=timeout, limits=limits) as client:
            yield OAuth2Passdb(oauth2, client, keys)

    return opened()
