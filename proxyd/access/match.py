"""libwrap's ``hosts_access()`` over parsed tables: which (daemon, client) pairs are allowed.

Semantics are Debian's tcp-wrappers 7.6.q, pattern by pattern: the first rule
of hosts.allow that matches grants access, else the first of hosts.deny that
matches refuses it, else access is granted; options of the matching rule can
turn the verdict (``allow``, ``deny``) and an error in them refuses access.

Patterns: ``ALL``, ``KNOWN``, ``UNKNOWN``, ``LOCAL``, ``PARANOID`` (as names),
``EXCEPT`` (nesting), ``.suffix``, ``prefix.``, ``n.n.n.n/m.m.m.m``,
``n.n.n.n/len``, ``[v6]``, ``[v6]/len``, ``*``/``?`` wildcards, ``/file`` of
patterns, ``daemon@host``, ``user@host``, a server port number in the daemon
list; comparisons are ASCII-case-insensitive.

**No lookups.**  proxyd does no reverse DNS, IDENT (RFC 931) or NIS lookups
here: every host name and the client user name are libwrap's ``"unknown"``.
So, exactly as libwrap behaves when such a lookup fails, ``UNKNOWN`` matches
every client, ``KNOWN``, ``LOCAL`` and ``PARANOID`` match none, a host name
pattern (``.example.com``, ``mail.example.com``, ``@netgroup``) never matches,
and ``user@host`` matches only with a user pattern that matches ``unknown``
(``ALL``, ``UNKNOWN``).  Write rules with addresses.

**No commands.**  Options that run commands are not executed: ``twist`` and
``aclexec`` refuse access (fail closed), ``spawn`` and ``banners`` are
ignored; ``user``, ``group``, ``setenv``, ``umask``, ``nice``, ``linger``,
``keepalive``, ``rfc931``, ``severity`` change nothing, but their values are
checked like libwrap checks them (a bad value refuses access), except that user
and group names are not looked up.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from proxyd.access.tables import Rule, Table, split_at

UNKNOWN: Final = "unknown"
PARANOID: Final = "paranoid"
_INADDR_NONE: Final = 0xFFFF_FFFF
#: ``/file`` patterns may name further files; libwrap recurses without limit
_MAX_HOSTFILE_DEPTH: Final = 8

HostFileReader = Callable[[str], bytes | None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of the connection as libwrap sees it.

    ``addr`` is the printable address (``"unknown"`` if not known), ``name``
    the host name (``"unknown"``: no lookup is done), ``port`` the TCP port.
    """

    addr: str = UNKNOWN
    name: str = UNKNOWN
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """The question asked: may ``client`` use ``daemon`` (on ``server``)?"""

    daemon: str
    client: Endpoint
    server: Endpoint = field(default_factory=Endpoint)
    user: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict and why, for the log."""

    allowed: bool
    reason: str
    #: options that were not carried out (``spawn ...``)
    notes: tuple[str, ...] = ()


class _Verdict(Exception):
    """libwrap's ``longjmp(tcpd_buf, AC_PERMIT/AC_DENY)`` out of option processing."""

    def __init__(self, allowed: bool, reason: str) -> None:
        super().__init__(reason)
        self.allowed = allowed
        self.reason = reason


# --- C helpers ------------------------------------------------------------------

_UPPER_TO_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_C_SPACE: Final = " \t\n\v\f\r"


def _fold(text: str) -> str:
    return text.translate(_UPPER_TO_LOWER)


def _eq(a: str, b: str) -> bool:
    """``strcasecmp() == 0`` (ASCII only, as in the C locale)."""
    return _fold(a) == _fold(b)


def _wrap_int32(value: int) -> int:
    value = max(min(value, 2**63 - 1), -(2**63))  # strtol() saturates at LONG_MIN/MAX
    return ((value + 2**31) % 2**32) - 2**31


_ATOI: Final = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_SCANF_INT: Final = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _atoi(text: str) -> int:
    match = _ATOI.match(text)
    return _wrap_int32(int(match.group(1))) if match else 0


def _scanf_int(text: str) -> int | None:
    """``sscanf(text, "%d%c", ...) == 1``: a whole-string integer."""
    match = _SCANF_INT.fullmatch(text)
    return _wrap_int32(int(match.group(1))) if match else None


def _scanf_uint(text: str, base: int = 10) -> int | None:
    """``sscanf(text, "%u%c" or "%o%c", ...) == 1``, as the unsigned int it stores."""
    digits = "[0-9]" if base == 10 else "[0-7]"
    match = re.fullmatch(rf"[ \t\n\v\f\r]*([+-]?)({digits}+)", text)
    if match is None:
        return None
    value = min(int(match.group(2), base), 2**64 - 1)  # strtoul() saturates
    if match.group(1) == "-":
        value = (-value) % 2**64
    return value & 0xFFFF_FFFF


def _dot_quad_addr(text: str) -> int:
    """libwrap's ``dot_quad_addr()``: four dot-separated runs through ``inet_addr()``."""
    runs = sum(1 for part in text.split(".") if part)
    if runs != 4:
        return _INADDR_NONE
    try:
        packed = socket.inet_aton(text)
    except (OSError, ValueError, UnicodeError):
        return _INADDR_NONE
    return int.from_bytes(packed, "big")  # 255.255.255.255 is INADDR_NONE too, as in C


def _cidr_mask_addr(text: str) -> int:
    bits = _atoi(text)
    if bits < 1 or bits > 32:
        return 0
    return (0xFFFF_FFFF << (32 - bits)) & 0xFFFF_FFFF


def _ipv6(text: str) -> int | None:
    """``getaddrinfo(text, AF_INET6, AI_NUMERICHOST)``'s address, as an integer."""
    if not text or "\0" in text:
        return None
    try:
        infos = socket.getaddrinfo(
            text,
            None,
            socket.AF_INET6,
            socket.SOCK_STREAM,
            0,
            socket.AI_PASSIVE | socket.AI_NUMERICHOST,
        )
    except (OSError, UnicodeError, ValueError):
        return None
    host = str(infos[0][4][0]).split("%", 1)[0]
    return int.from_bytes(socket.inet_pton(socket.AF_INET6, host), "big")


def _unmap(string: str) -> str:
    # "::ffff:a.b.c.d" is compared as "a.b.c.d"
    if _fold(string[:7]) == "::ffff:" and _dot_quad_addr(string[7:]) != _INADDR_NONE:
        return string[7:]
    return string


def _wildcard(string: str, pattern: str) -> bool:
    """``match_pattern_ylo()``: ``*`` and ``?`` over the whole string, ASCII case ignored."""
    s, p = _fold(string), _fold(pattern)
    si = pi = 0
    star, mark = -1, 0
    while si < len(s):
        if pi < len(p) and (p[pi] == "?" or (p[pi] != "*" and p[pi] == s[si])):
            si += 1
            pi += 1
        elif pi < len(p) and p[pi] == "*":
            star, mark = pi, si
            pi += 1
        elif star >= 0:
            pi = star + 1
            mark += 1
            si = mark
        else:
            return False
    return all(ch == "*" for ch in p[pi:])


def _hostname_known(name: str) -> bool:
    return not _eq(name, UNKNOWN) and not _eq(name, PARANOID)


def _not_inaddr(tok: str) -> bool:
    return any(ch not in "01234567890./" for ch in tok)


# --- patterns -------------------------------------------------------------------


def _string_match(tok: str, string: str) -> bool:
    string = _unmap(string)
    if "*" in tok or "?" in tok:
        return _wildcard(string, tok)
    if tok.startswith("."):
        n = len(string) - len(tok)
        return n > 0 and _eq(tok, string[n:])
    if _eq(tok, "ALL"):
        return True
    if _eq(tok, "KNOWN"):
        return not _eq(string, UNKNOWN)
    if tok.endswith("."):
        return len(string) >= len(tok) and _eq(tok, string[: len(tok)])
    if len(tok) >= 2 and tok.startswith("[") and tok.endswith("]"):
        pattern = _ipv6(tok[1:-1])
        return pattern is not None and pattern == _ipv6(string)
    return _eq(tok, string)


def _masked_match4(net_tok: str, mask_tok: str, string: str) -> bool:
    addr = _dot_quad_addr(string)
    if addr == _INADDR_NONE:
        return False
    net = _dot_quad_addr(net_tok)
    if net == _INADDR_NONE:
        return False
    mask = _dot_quad_addr(mask_tok)
    if mask == _INADDR_NONE:
        mask = _cidr_mask_addr(mask_tok)
        if mask == 0:
            return False
    return addr & mask == net


def _masked_match6(net_tok: str, mask_tok: str, string: str) -> bool:
    if _fold(string[:7]) == "::ffff:" and _dot_quad_addr(string[7:]) != _INADDR_NONE:
        return _masked_match4(net_tok, mask_tok, string[7:])
    addr = _ipv6(string)
    if addr is None or not (net_tok.startswith("[") and net_tok.endswith("]")):
        return False
    net = _ipv6(net_tok[1:-1])
    if net is None:
        return False
    bits = _atoi(mask_tok)
    if bits < 0 or bits > 128:
        return False
    shift = 128 - bits
    return addr >> shift == net >> shift


class _Matcher:
    """Pattern matching for one request (carries the host-file reader)."""

    def __init__(self, request: Request, read_hostfile: HostFileReader) -> None:
        self.request = request
        self.read_hostfile = read_hostfile
        self.depth = 0

    def list_match(self, toks: tuple[str, ...], start: int, match: Callable[[str], bool]) -> bool:
        for i in range(start, len(toks)):
            if _eq(toks[i], "EXCEPT"):
                return False
            if match(toks[i]):
                j = i + 1
                while j < len(toks) and not _eq(toks[j], "EXCEPT"):
                    j += 1
                return j >= len(toks) or not self.list_match(toks, j + 1, match)
        return False

    def daemon_or_port(self, tok: str) -> bool:
        port = _scanf_uint(tok)
        if port is None or port > 65535:
            return _string_match(tok, self.request.daemon)
        return self.request.server.port is not None and port == self.request.server.port

    def server(self, tok: str) -> bool:
        at = split_at(tok[1:], "@")
        if at is None:
            return self.daemon_or_port(tok)
        return self.daemon_or_port(tok[0] + at[0]) and self.host(at[1], self.request.server)

    def client(self, tok: str) -> bool:
        at = split_at(tok[1:], "@")
        if at is None:
            return self.host(tok, self.request.client)
        return self.host(at[1], self.request.client) and _string_match(
            tok[0] + at[0], self.request.user
        )

    def host(self, tok: str, host: Endpoint) -> bool:
        if tok.startswith("@"):
            return False  # NIS netgroup: needs the host name, which is never looked up
        if tok.startswith("/"):
            return self.hostfile(tok, host)
        if _eq(tok, "KNOWN"):
            return not _eq(host.addr, UNKNOWN) and _hostname_known(host.name)
        if _eq(tok, "LOCAL"):
            return "." not in host.name and _hostname_known(host.name)
        net_mask = split_at(tok, "/")
        if net_mask is not None:
            net, mask = net_mask
            return _masked_match4(net, mask, host.addr) or _masked_match6(net, mask, host.addr)
        return _string_match(tok, host.addr) or (_not_inaddr(tok) and _string_match(tok, host.name))

    def hostfile(self, path: str, host: Endpoint) -> bool:
        if self.depth >= _MAX_HOSTFILE_DEPTH:
            return False
        data = self.read_hostfile(path)
        if data is None:
            return False
        self.depth += 1
        try:
            # fscanf("%s"): whitespace-separated words, up to a NUL
            words = data.split(b"\0", 1)[0].decode("latin-1").split()
            return any(self.host(word, host) for word in words)
        finally:
            self.depth -= 1

    def rule(self, rule: Rule) -> bool:
        return self.list_match(rule.daemons, 0, self.server) and self.list_match(
            rule.clients, 0, self.client
        )


# --- options (hosts_options(5)) ---------------------------------------------------

_NEED_ARG: Final = 1
_OPT_ARG: Final = 2
_USE_LAST: Final = 4
_OPTIONS: Final[dict[str, int]] = {
    "user": _NEED_ARG,
    "group": _NEED_ARG,
    "umask": _NEED_ARG,
    "linger": _NEED_ARG,
    "keepalive": 0,
    "aclexec": _NEED_ARG,
    "spawn": _NEED_ARG,
    "twist": _NEED_ARG | _USE_LAST,
    "rfc931": _OPT_ARG,
    "setenv": _NEED_ARG,
    "nice": _OPT_ARG,
    "severity": _NEED_ARG,
    "allow": _USE_LAST,
    "deny": _USE_LAST,
    "banners": _NEED_ARG,
}
#: libwrap's own ``log_fac`` / ``log_sev`` tables (not glibc's longer ones)
_FACILITIES: Final = frozenset(
    (
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "lpr",
        "news",
        "uucp",
        "cron",
        *(f"local{i}" for i in range(8)),
    )
)
_PRIORITIES: Final = frozenset(
    ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
)


def _option_fields(options: str) -> list[str]:
    """``get_field()``: ``:``-separated fields, ``\\:`` standing for a literal colon."""
    fields: list[str] = []
    i = 0
    while i < len(options):
        out: list[str] = []
        while i < len(options):
            ch = options[i]
            if ch == ":":
                i += 1
                break
            if ch == "\\" and options[i + 1 : i + 2] == ":":
                i += 1
            out.append(options[i])
            i += 1
        fields.append("".join(out))
    return fields


def _split_option(text: str) -> tuple[str, str | None]:
    """Name and value of one option: ``name value``, ``name = value`` or ``name``."""
    text = text.strip(_C_SPACE)
    cut = next((i for i, ch in enumerate(text) if ch in "= \t\r\n"), None)
    if cut is None:
        return text, None
    key, rest = text[:cut], text[cut:]
    if rest[0] != "=":
        rest = rest[1:].lstrip(" \t\r\n")
    if rest.startswith("="):
        rest = rest[1:].lstrip(" \t\r\n")
    return key, rest or None


def _check_value(key: str, value: str | None) -> str | None:
    """libwrap's own check of an option value; the error text, or None if fine."""
    if key == "umask":
        mask = _scanf_uint(value or "", base=8)
        if mask is None or mask & 0o777 != mask:
            return f'bad umask value: "{value}"'
    elif key == "linger":
        linger = _scanf_int(value or "")
        if linger is None or linger < 0:
            return f'bad linger value: "{value}"'
    elif key == "nice" and value is not None and _scanf_int(value) is None:
        return f'bad nice value: "{value}"'
    elif key == "rfc931" and value is not None:
        timeout = _scanf_int(value)
        if timeout is None or timeout <= 0:
            return f'bad rfc931 timeout: "{value}"'
    elif key == "severity" and value is not None:
        parts = split_at(value, ".")
        names = (
            [(_FACILITIES, parts[0]), (_PRIORITIES, parts[1])] if parts else [(_PRIORITIES, value)]
        )
        for table, name in names:
            if _fold(name) not in table:
                return f'bad syslog facility or severity: "{name}"'
    return None


def _process_options(options: str, where: str) -> tuple[str, ...]:
    """Run the options of a matched rule; raises ``_Verdict`` where libwrap jumps."""
    notes: list[str] = []
    fields = _option_fields(options)
    for index, raw in enumerate(fields):
        key, value = _split_option(raw)
        if not key:
            raise _Verdict(False, f"{where}: missing option name")
        name = _fold(key)
        flags = _OPTIONS.get(name)
        if flags is None:
            raise _Verdict(False, f'{where}: bad option name: "{key}"')
        if value is None and flags & _NEED_ARG:
            raise _Verdict(False, f'{where}: option "{key}" requires value')
        if value is not None and not flags & (_NEED_ARG | _OPT_ARG):
            raise _Verdict(False, f'{where}: option "{key}" requires no value')
        if index + 1 < len(fields) and flags & _USE_LAST:
            raise _Verdict(False, f'{where}: option "{key}" must be at end')
        problem = _check_value(name, value)
        if problem is not None:
            raise _Verdict(False, f"{where}: {problem}")
        if name == "allow":
            raise _Verdict(True, f"{where}: allow option")
        if name == "deny":
            raise _Verdict(False, f"{where}: deny option")
        if name in ("twist", "aclexec"):
            raise _Verdict(False, f"{where}: {name} option: commands are not run, access refused")
        if name in ("spawn", "banners"):
            notes.append(f"{where}: {name} option ignored (commands and banners are not supported)")
    return tuple(notes)


# --- the two tables ---------------------------------------------------------------


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def hosts_access(
    request: Request,
    allow: Table,
    deny: Table,
    read_hostfile: HostFileReader = _read_file,
) -> Decision:
    """Decide ``request`` against hosts.allow (``allow``) and hosts.deny (``deny``).

    ``read_hostfile`` returns the contents of a ``/file`` pattern's file (None
    when unreadable: no match); the default reads the file system.
    """
    matcher = _Matcher(request, read_hostfile)
    try:
        for table, allowed in ((allow, True), (deny, False)):
            for rule in table.rules:
                if matcher.rule(rule):
                    where = f"{table.path}, line {rule.line}"
                    notes = () if rule.options is None else _process_options(rule.options, where)
                    verb = "allowed" if allowed else "refused"
                    return Decision(allowed, f"{where}: {verb}", notes)
            if table.error is not None and allowed:
                continue  # an error in hosts.allow is not a match: go on to hosts.deny
            if table.error is not None:
                return Decision(False, f"{table.error}: refused")
        return Decision(True, "no rule matched: allowed")
    except _Verdict as verdict:
        return Decision(verdict.allowed, verdict.reason)
