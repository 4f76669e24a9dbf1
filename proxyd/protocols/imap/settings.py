"""IMAP's own settings (Dovecot's ``imap-login-settings.c`` and ``imap-settings.c``)."""

from __future__ import annotations

from dataclasses import dataclass

from proxyd.protocols.spec import ProtocolSettings
from proxyd.setting.spec import bool_setting, str_setting


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """What ``imap-login`` reads."""

    #: "" = Dovecot's banner capabilities, "+X" = the banner's plus X, else these
    imap_capability: str = ""
    #: keep the client's ID for the backend
    imap_id_retain: bool = False
    #: the ID pairs answered to a pre-login ID; a value ``*`` is the built-in one
    imap_id_send: str = "name *"
    #: which of the client's ID fields are logged ("" none, "*" all)
    imap_id_log: str = ""
    #: advertise LITERAL- (RFC 7888) instead of LITERAL+
    imap_literal_minus: bool = False


_SPECS = (
    str_setting("imap_capability"),
    bool_setting("imap_id_retain"),
    str_setting("imap_id_send", default="name *"),
    str_setting("imap_id_log"),
    bool_setting("imap_literal_minus"),
)

SETTINGS = ProtocolSettings(
    specs=_SPECS,
    record=ImapSettings,
    per_connection=frozenset(spec.name for spec in _SPECS),
    not_yet=frozenset(),
    # the imap mail process's
    unused=frozenset(
        {"imap_client_workarounds", "imap_fetch_failure", "imap_hibernate_timeout",
         "imap_idle_notify_interval", "imap_logout_format", "imap_max_line_length", "imap_metadata"}
    ),
)
