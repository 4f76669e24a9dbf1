"""POP3's own settings: ``pop3-login`` reads none; the pop3 mail process's are accepted."""

from __future__ import annotations

from proxyd.protocols.spec import ProtocolSettings

SETTINGS = ProtocolSettings(
    unused=frozenset(
        {"pop3_client_workarounds", "pop3_delete_type", "pop3_deleted_flag", "pop3_enable_last",
         "pop3_fast_size_lookups", "pop3_lock_session", "pop3_logout_format", "pop3_no_flag_updates",
         "pop3_reuse_xuidl", "pop3_save_uidl", "pop3_uidl_duplicates", "pop3_uidl_format"}
    ),
)
