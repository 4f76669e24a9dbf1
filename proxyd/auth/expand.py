"""Dovecot's %-variable expansion (``src/lib/var-expand.c``), the subset passdbs need.

Syntax of one variable: ``%`` ``[-][0][width][.[-][0]len]`` ``[modifiers]``
then a one-letter name (``%u``) or ``{long_name}`` (``%{user}``), where
``%{func:arg}`` calls a function such as ``%{passdb:field:default}`` or
``%{env:NAME}``.  ``%%`` is a literal ``%``.

* Modifiers apply left to right: ``L`` lower, ``U`` upper (ASCII only, as in
  Dovecot), ``E`` backslash-escape ``' " \\``, ``X`` decimal → hex, ``R``
  reverse, ``H`` Dovecot's string hash (modulo ``width``), ``N`` MD5-based hash,
  ``M`` MD5 hex, ``D`` ``.`` → ``,dc=``, ``T`` trim trailing whitespace.
* The offset/width part works as in Dovecot: ``%3.2u`` skips 3 characters and
  keeps 2; a negative offset counts from the end; ``%05X``-style zero padding.
* The optional ``escape`` function is applied to each value taken from the
  request *before* the modifiers (Dovecot escapes there too).
* An unknown variable raises ``ExpandError`` (Dovecot: "Unknown variable").

``request_variables()`` builds the table for an ``AuthRequest``.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from proxyd.auth.request import AuthRequest
from proxyd.errors import ProxydError

EscapeFunc = Callable[[str], str]

_MAX_MODIFIERS: Final = 10
_ESCAPED_CHARS: Final = frozenset("\"'\\")


class ExpandError(ProxydError):
    """A template could not be expanded (unknown variable)."""


def str_escape(value: str) -> str:
    """Dovecot's ``str_escape()``: a backslash before ``"``, ``'`` and ``\\``."""
    if not any(c in _ESCAPED_CHARS for c in value):
        return value
    return "".join("\\" + c if c in _ESCAPED_CHARS else c for c in value)


def ascii_lower(value: str) -> str:
    """Lowercase A-Z only, as Dovecot's ``t_str_lcase()``."""
    return value.translate(_LOWER)


def ascii_upper(value: str) -> str:
    """Uppercase a-z only, as Dovecot's ``t_str_ucase()``."""
    return value.translate(_UPPER)


_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


#: one-letter variables and the long names they stand for (Dovecot's static table order)
SHORT_NAMES: Final[Mapping[str, str]] = {
    "u": "user",
    "n": "username",
    "d": "domain",
    "s": "service",
    "h": "home",
    "l": "lip",
    "r": "rip",
    "p": "pid",
    "w": "password",
    "m": "mech",
    "c": "secured",
    "a": "lport",
    "b": "rport",
    "k": "cert",
}


@dataclass(frozen=True, slots=True)
class Variables:
    """What a template can refer to.

    ``short`` maps one-letter names, ``long`` maps ``%{name}`` names; a value of
    None expands to ``""``.  ``passdb_fields`` feeds ``%{passdb:name}``.
    """

    short: Mapping[str, str | None] = field(default_factory=dict)
    long: Mapping[str, str | None] = field(default_factory=dict)
    passdb_fields: Mapping[str, str] = field(default_factory=dict)
    #: driver-specific ``%{NAMESPACE:name[:default]}`` lookups (the oauth2 passdb's ``%{oauth2:...}``)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def _after(value: str, sep: str) -> str | None:
    idx = value.find(sep)
    return None if idx == -1 else value[idx + 1 :]


def request_variables(
    request: AuthRequest,
    *,
    user: str | None = None,
    original_user: str | None = None,
    passdb_fields: Mapping[str, str] | None = None,
) -> Variables:
    """The variables of Dovecot's auth request table for ``request``.

    ``user`` is the current user name (after ``auth_username_format`` and any
    ``user=`` rewrites), default ``request.user``; ``original_user`` is the name
    as the client gave it.
    """
    conn = request.conn
    user = request.user if user is None else user
    orig = request.user if original_user is None else original_user
    password = request.password.reveal() if request.password is not None else None
    login_user = request.login_user or None

    username = user.partition("@")[0]
    domain = _after(user, "@")
    secured = ("TLS" if conn.tls else "secured") if conn.secured else ""
    values: dict[str, str | None] = {
        "user": user,
        "username": username,
        "domain": domain,
        "service": conn.service,
        "home": None,
        "lip": conn.local_ip or None,
        "rip": conn.remote_ip or None,
        "pid": str(os.getpid()),
        "password": password,
        "mech": request.mech,
        "secured": secured,
        "lport": str(conn.local_port),
        "rport": str(conn.remote_port),
        "cert": "",
        "login_user": login_user,
        "login_username": login_user.partition("@")[0] if login_user else None,
        "login_domain": _after(login_user, "@") if login_user else None,
        "session": conn.session_id or None,
        "real_lip": conn.real_local_ip or None,
        "real_rip": conn.real_remote_ip or None,
        "real_lport": str(conn.real_local_port),
        "real_rport": str(conn.real_remote_port),
        "domain_first": (domain or "").partition("@")[0] if domain is not None else None,
        "domain_last": user.rpartition("@")[2] if "@" in user else None,
        "master_user": None,
        "session_pid": None,
        "orig_user": orig,
        "orig_username": orig.partition("@")[0],
        "orig_domain": _after(orig, "@"),
        "auth_user": orig,
        "auth_username": orig.partition("@")[0],
        "auth_domain": _after(orig, "@"),
        "local_name": None,
        "client_id": conn.client_id,
    }
    aliases = {
        "local_ip": "lip",
        "remote_ip": "rip",
        "local_port": "lport",
        "remote_port": "rport",
        "real_local_ip": "real_lip",
        "real_remote_ip": "real_rip",
        "real_local_port": "real_lport",
        "real_remote_port": "real_rport",
        "mechanism": "mech",
        "original_user": "orig_user",
        "original_username": "orig_username",
        "original_domain": "orig_domain",
    }
    long_names = dict(values)
    long_names.update({alias: values[target] for alias, target in aliases.items()})
    short = {key: values[name] for key, name in SHORT_NAMES.items()}
    short["!"] = ""
    if passdb_fields is None:
        passdb_fields = request.passdb_fields
    return Variables(short=short, long=long_names, passdb_fields=dict(passdb_fields))


@dataclass(slots=True)
class _Spec:
    offset: int = 0
    width: int = 0
    zero_padding: bool = False


def _str_hash(value: str) -> int:
    h = 0
    for byte in value.encode("utf-8", "surrogateescape"):
        h = ((h << 4) + byte) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
            h ^= g
    return h


def _hash_modifier(value: str, spec: _Spec, *, new: bool) -> str:
    if new:
        digest = hashlib.md5(value.encode("utf-8", "surrogateescape")).digest()  # noqa: S324
        number = int.from_bytes(digest[:8], "big")
    else:
        number = _str_hash(value)
    if spec.width != 0:
        number %= spec.width
        spec.width = 0
    text = f"{number & 0xFFFFFFFF:x}"
    text = text.rjust(spec.offset, "0") if spec.offset > 0 else text
    spec.offset = 0
    return text


def _hex_modifier(value: str) -> str:
    number = int(value) if value.isascii() and value.isdigit() else 0
    return f"{number:x}"


def _apply_modifier(mod: str, value: str, spec: _Spec) -> str:
    if mod == "L":
        return ascii_lower(value)
    if mod == "U":
        return ascii_upper(value)
    if mod == "E":
        return str_escape(value)
    if mod == "X":
        return _hex_modifier(value)
    if mod == "R":
        return value[::-1]
    if mod == "H":
        return _hash_modifier(value, spec, new=False)
    if mod == "N":
        return _hash_modifier(value, spec, new=True)
    if mod == "M":
        return hashlib.md5(value.encode("utf-8", "surrogateescape")).hexdigest()  # noqa: S324
    if mod == "D":
        return value.replace(".", ",dc=")
    # "T"
    return value.rstrip(" \t\r\n\v\f")


_MODIFIERS: Final = frozenset("LUEXRHNMDT")


def _lookup_long(name: str, variables: Variables, escape: EscapeFunc | None) -> str:
    if name in variables.long:
        value = variables.long[name]
        return "" if value is None else (escape(value) if escape else value)
    if name == "pid":
        return str(os.getpid())
    if name == "uid":
        return str(os.geteuid())
    if name == "gid":
        return str(os.getegid())
    if name == "hostname":
        return socket.gethostname()
    func, sep, data = name.partition(":")
    if sep or func in ("env", "passdb"):
        if func == "env":
            return os.environ.get(data, "")
        if func == "passdb" or func in variables.namespaces:
            source = variables.passdb_fields if func == "passdb" else variables.namespaces[func]
            key, _, default = data.partition(":")
            found = source.get(key)
            value = found if found is not None else default
            return escape(value) if escape else value
    raise ExpandError(f"Unknown variable '%{name}'")


def _parse_spec(template: str, pos: int) -> tuple[_Spec, int]:
    """The ``[-][0]width[.[0][-]len]`` part after ``%``."""
    spec = _Spec()
    sign = 1
    if template.startswith("-", pos):
        sign = -1
        pos += 1
    if template.startswith("0", pos):
        spec.zero_padding = True
        pos += 1
    while pos < len(template) and template[pos].isascii() and template[pos].isdigit():
        spec.width = spec.width * 10 + int(template[pos])
        pos += 1
    if template.startswith(".", pos):
        spec.offset = sign * spec.width
        sign = 1
        spec.width = 0
        pos += 1
        spec.zero_padding = False
        if template.startswith("0", pos):
            spec.zero_padding = True
            pos += 1
        if template.startswith("-", pos):
            sign = -1
            pos += 1
        while pos < len(template) and template[pos].isascii() and template[pos].isdigit():
            spec.width = spec.width * 10 + int(template[pos])
            pos += 1
        spec.width *= sign
    return spec, pos


def _long_name_end(template: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (nested braces, ``\\`` escapes)."""
    depth = 1
    pos = start + 1
    escaped = False
    while pos < len(template):
        char = template[pos]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    return len(template)


def _shape(value: str, spec: _Spec) -> str:
    if spec.offset < 0:
        value = value[spec.offset :] if len(value) > -spec.offset else value
    elif spec.offset > 0:
        value = value[spec.offset :]
    if spec.width == 0:
        return value
    if not spec.zero_padding:
        width = len(value) + spec.width if spec.width < 0 else spec.width
        return value[: max(width, 0)]
    return value.rjust(spec.width, "0")


def expand(template: str, variables: Variables, escape: EscapeFunc | None = None) -> str:
    """Expand every ``%`` variable in ``template``; raise ``ExpandError`` on an unknown one."""
    out: list[str] = []
    pos = 0
    length = len(template)
    while pos < length:
        pct = template.find("%", pos)
        if pct == -1:
            out.append(template[pos:])
            break
        out.append(template[pos:pct])
        spec, pos = _parse_spec(template, pct + 1)
        modifiers: list[str] = []
        while len(modifiers) < _MAX_MODIFIERS and pos < length and template[pos] in _MODIFIERS:
            modifiers.append(template[pos])
            pos += 1
        if pos >= length:
            break  # a lone '%' at the end vanishes, as in Dovecot
        char = template[pos]
        if char == "{" and "}" in template[pos:]:
            end = _long_name_end(template, pos)
            value = _lookup_long(template[pos + 1 : end], variables, escape)
            pos = end + 1
        else:
            pos += 1
            if char == "%":
                value = "%"
            elif char in variables.short:
                raw = variables.short[char]
                value = "" if raw is None else (escape(raw) if escape else raw)
            else:
                raise ExpandError(f"Unknown variable '%{char}'")
        for mod in modifiers:
            value = _apply_modifier(mod, value, spec)
        out.append(_shape(value, spec))
    return "".join(out)


def has_variables(template: str) -> bool:
    """True if ``template`` refers to any variable (``%%`` alone does not count)."""
    return "%" in template.replace("%%", "")


@dataclass(frozen=True, slots=True)
class VariableRef:
    """Where one variable stands in a template: ``template[start:end]`` is all of it.

    ``name`` is the long name (``user`` for both ``%u`` and ``%{user}``), or the
    whole ``func:arg`` text of a function such as ``%{passdb:host}``; a one-letter
    name that is not in the table is kept as that letter.
    """

    start: int
    end: int
    name: str


def iter_variables(template: str) -> list[VariableRef]:
    """Every variable of ``template`` in order; ``%%`` is not one.

    Scans exactly as :func:`expand` does (width/offset, modifiers, ``{long}``),
    so ``template[ref.start:ref.end]`` expands on its own to the same value.
    """
    refs: list[VariableRef] = []
    pos = 0
    while True:
        pct = template.find("%", pos)
        if pct == -1:
            break
        ref = variable_at(template, pct)
        if ref.name != "%":
            refs.append(ref)
        pos = ref.end
    return refs


def variable_at(template: str, pos: int) -> VariableRef:
    """The variable whose ``%`` is at ``template[pos]``.

    ``%%`` (also with a width, ``%5%``) has the name ``%``: it is a literal
    percent sign, not a variable.  A lone ``%`` (with modifiers) at the end has
    an empty name: it expands to nothing.
    """
    length = len(template)
    _, end = _parse_spec(template, pos + 1)
    count = 0
    while count < _MAX_MODIFIERS and end < length and template[end] in _MODIFIERS:
        count += 1
        end += 1
    if end >= length:
        return VariableRef(pos, length, "")
    char = template[end]
    if char == "{" and "}" in template[end:]:
        close = _long_name_end(template, end)
        return VariableRef(pos, close + 1, template[end + 1 : close])
    return VariableRef(pos, end + 1, SHORT_NAMES.get(char, char))


_TAB_ESCAPES: Final = str.maketrans({"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"})


def tab_escape(value: str) -> str:
    """Dovecot's ``str_tabescape()``: ``\\001``, tab, CR and LF become ``\\001`` + 1/t/r/n."""
    return value.translate(_TAB_ESCAPES)


_TAB_UNESCAPES: Final = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def tab_unescape(value: str) -> str:
    """The inverse of :func:`tab_escape`."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\x01" and i + 1 < len(value):
            out.append(_TAB_UNESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)
