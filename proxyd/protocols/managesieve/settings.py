"""ManageSieve's own settings (Pigeonhole's ``managesieve-login-settings.c`` and ``managesieve-settings.c``)."""

from __future__ import annotations

from dataclasses import dataclass

from proxyd.protocols.managesieve.replies import (
    DEFAULT_IMPLEMENTATION,
    DEFAULT_NOTIFY_CAPABILITY,
    DEFAULT_SIEVE_CAPABILITY,
)
from proxyd.protocols.spec import ProtocolSettings
from proxyd.setting.spec import str_setting


@dataclass(frozen=True, slots=True)
class ManageSieveSettings:
    """What ``managesieve-login`` reads: the capability lines of its greeting."""

    managesieve_implementation_string: str = DEFAULT_IMPLEMENTATION
    managesieve_sieve_capability: str = DEFAULT_SIEVE_CAPABILITY
    managesieve_notify_capability: str = DEFAULT_NOTIFY_CAPABILITY


_SPECS = (
    str_setting("managesieve_implementation_string", default=DEFAULT_IMPLEMENTATION),
    str_setting("managesieve_sieve_capability", default=DEFAULT_SIEVE_CAPABILITY),
    str_setting("managesieve_notify_capability", default=DEFAULT_NOTIFY_CAPABILITY),
)

SETTINGS = ProtocolSettings(
    specs=_SPECS,
    record=ManageSieveSettings,
    # Debian's 20-managesieve.conf sets them in "protocol sieve { }"
    per_connection=frozenset(spec.name for spec in _SPECS),
    # the managesieve mail process's
    unused=frozenset(
        {"managesieve_max_line_length", "managesieve_client_workarounds", "managesieve_logout_format",
         "managesieve_max_compile_errors"}
    ),
)
