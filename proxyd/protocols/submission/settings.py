"""Submission's own settings (Dovecot's ``submission-login-settings.c`` and ``submission-settings.c``).

``submission-login`` reads ``hostname`` (shared with LMTP: a top-level setting),
``submission_backend_capabilities``, ``submission_max_mail_size`` and
``submission_client_workarounds``: they change what its EHLO reply promises
(``cmd_helo_reply()``).  The rest belongs to the submission mail process, which
relays mail itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from proxyd.protocols.spec import ProtocolSettings
from proxyd.setting import values as v
from proxyd.setting.spec import Scope, setting

_log = logging.getLogger("proxyd.config")

#: lib-smtp's ``smtp_capability_names``: what ``submission_backend_capabilities`` may name
SMTP_CAPABILITIES: Final = (
    "AUTH", "STARTTLS", "PIPELINING", "SIZE", "ENHANCEDSTATUSCODES", "8BITMIME", "CHUNKING",
    "BINARYMIME", "BURL", "DSN", "VRFY", "ETRN", "XCLIENT",
)  # fmt: skip


def parse_backend_capabilities(value: str) -> tuple[str, ...]:
    """``submission_backend_capabilities`` (``client_parse_backend_capabilities()``).

    Dovecot leaves the setting unset by default and then assumes 8BITMIME only,
    so the default here is ``8BITMIME``: the same capabilities.  An unknown
    name is skipped with Dovecot's warning; BINARYMIME brings CHUNKING along.
    """
    names: list[str] = []
    for name in v.split_list(value):
        upper = name.upper()
        if upper not in SMTP_CAPABILITIES:
            _log.warning("Unknown SMTP capability in submission_backend_capabilities: %s", name)
        elif upper not in names:
            names.append(upper)
    if "BINARYMIME" in names and "CHUNKING" not in names:
        names.append("CHUNKING")
    return tuple(names)


WORKAROUNDS: Final = (
    "whitespace-before-path", "mailbox-for-path", "implicit-auth-external", "exotic-backend",
)  # fmt: skip


def parse_workarounds(value: str) -> tuple[str, ...]:
    """``submission_client_workarounds``: Dovecot's names, any case, space or comma separated.

    The first two concern the submission service after login (submission-login
    accepts and ignores them, as Dovecot's does); ``implicit-auth-external``
    (MAIL before AUTH as an EXTERNAL login) is not implemented yet.
    """
    names: list[str] = []
    for name in v.split_list(value):
        lowered = name.lower()
        if lowered not in WORKAROUNDS:
            raise v.InvalidValue(f"submission_client_workarounds: Unknown workaround: {name}")
        if lowered == "implicit-auth-external":
            raise v.InvalidValue(
                "submission_client_workarounds: workaround 'implicit-auth-external' is not supported yet"
            )
        if lowered not in names:
            names.append(lowered)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    """What ``submission-login`` reads for its EHLO reply."""

    #: the backends' capabilities it may promise (Dovecot's "unset" means 8BITMIME only)
    submission_backend_capabilities: tuple[str, ...] = ("8BITMIME",)
    #: SIZE's value (0: SIZE without one)
    submission_max_mail_size: int = 0
    submission_client_workarounds: tuple[str, ...] = ()


_SPECS = (
    # what submission-login's EHLO reply promises of the backends (their own EHLO comes later)
    setting("submission_backend_capabilities", Scope.TOP, parse_backend_capabilities, " ".join, "8BITMIME"),
    setting("submission_max_mail_size", Scope.TOP, v.parse_size, v.format_size, "0"),
    setting("submission_client_workarounds", Scope.TOP, parse_workarounds, " ".join, ""),
)

SETTINGS = ProtocolSettings(
    specs=_SPECS,
    record=SubmissionSettings,
    per_connection=frozenset(spec.name for spec in _SPECS),
    shared_per_connection=frozenset({"hostname"}),
    # the submission mail process's
    unused=frozenset(
        {"submission_host", "submission_logout_format", "submission_max_recipients",
         "submission_relay_command_timeout", "submission_relay_connect_timeout", "submission_relay_host",
         "submission_relay_master_user", "submission_relay_max_idle_time", "submission_relay_password",
         "submission_relay_port", "submission_relay_rawlog_dir", "submission_relay_ssl",
         "submission_relay_ssl_verify", "submission_relay_trusted", "submission_relay_user",
         "submission_ssl", "submission_timeout"}
    ),
)
