"""``login_log_format_elements``: the fields at the end of every login process log line.

Dovecot's ``client_get_log_str()``: each space-separated element is expanded
with the client's variables (``%u`` user, ``%m`` mechanism, ``%r`` client IP,
``%c`` TLS/secured, ``%{session}``, ...); an element whose variables are all
empty is left out, except those naming the user (``%u``, ``%n``), and the rest
are joined with ``", "``.  ``login_log_format`` then places the message
(``%$``) and these fields (``%s``): see :func:`proxyd.log.login_line`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from proxyd.auth.expand import ExpandError, Variables, expand, iter_variables
from proxyd.errors import ConfigError, Location

#: Dovecot's default login_log_format_elements
DEFAULT_ELEMENTS: Final = "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>"

#: the variables a login process has (login_var_expand_empty_tab), short name -> long name
SHORT_NAMES: Final = {
    "u": "user", "n": "username", "d": "domain", "s": "service", "h": "home", "l": "lip",
    "r": "rip", "p": "pid", "m": "mech", "a": "lport", "b": "rport", "c": "secured",
    "k": "ssl_security", "e": "mail_pid",
}  # fmt: skip
LONG_NAMES: Final = frozenset(
    {*SHORT_NAMES.values(), "session", "real_lip", "real_rip", "real_lport", "real_rport",
     "orig_user", "orig_username", "orig_domain", "auth_user", "auth_username", "auth_domain",
     "listener", "local_name", "local_ip", "remote_ip", "local_port", "remote_port",
     "real_local_ip", "real_remote_ip", "real_local_port", "real_remote_port", "mechanism",
     "original_user", "original_username", "original_domain"}
)  # fmt: skip
_EMPTY: Final = Variables(short=dict.fromkeys(SHORT_NAMES), long=dict.fromkeys(LONG_NAMES))


def variables(values: Mapping[str, str | None]) -> Variables:
    """The expansion table from long names (aliases and short names filled in)."""
    long = {name: values.get(name) for name in LONG_NAMES}
    for alias, name in (
        ("local_ip", "lip"), ("remote_ip", "rip"), ("local_port", "lport"),
        ("remote_port", "rport"), ("real_local_ip", "real_lip"), ("real_remote_ip", "real_rip"),
        ("real_local_port", "real_lport"), ("real_remote_port", "real_rport"),
        ("mechanism", "mech"), ("original_user", "orig_user"),
        ("original_username", "orig_username"), ("original_domain", "orig_domain"),
    ):  # fmt: skip
        long[alias] = long[name]
    return Variables(short={key: long[name] for key, name in SHORT_NAMES.items()}, long=long)


@dataclass(frozen=True, slots=True)
class _Element:
    template: str
    #: names the user: kept even when empty
    keeps: bool
    #: what it expands to when every variable is empty (such a result is left out)
    empty: str


class LogElements:
    """A compiled ``login_log_format_elements``."""

    def __init__(self, text: str) -> None:
        self.elements = tuple(
            _Element(
                element,
                any(ref.name in ("user", "username") for ref in iter_variables(element)),
                expand(element, _EMPTY),
            )
            for element in text.split()
        )

    def render(self, table: Variables) -> str:
        parts: list[str] = []
        for element in self.elements:
            value = expand(element.template, table)
            if element.keeps or value != element.empty:
                parts.append(value)
        return ", ".join(parts)


@functools.lru_cache(maxsize=8)
def compiled(text: str) -> LogElements:
    return LogElements(text)


def check_elements(text: str, where: Location | None) -> None:
    """Unknown variables in ``login_log_format_elements`` are a ``FILE:LINE`` error."""
    try:
        elements = compiled(text)
        full = Variables(short=dict.fromkeys(SHORT_NAMES, "x"), long=dict.fromkeys(LONG_NAMES, "x"))
        elements.render(full)
    except ExpandError as exc:
        raise ConfigError(where, f"login_log_format_elements: {exc}") from None
