"""LMTP's own settings (Dovecot's ``lmtp-settings.c``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Final

from proxyd.protocols.spec import ProtocolSettings
from proxyd.setting import values as v
from proxyd.setting.spec import Scope, bool_setting, setting

WORKAROUNDS: Final = ("whitespace-before-path", "mailbox-for-path")


def parse_workarounds(value: str) -> tuple[str, ...]:
    """``lmtp_client_workarounds``: Dovecot's names, space or comma separated."""
    names = tuple(v.split_list(value))
    for name in names:
        if name not in WORKAROUNDS:
            raise v.InvalidValue(f"lmtp_client_workarounds: Unknown workaround: {name}")
    return names


def parse_rawlog_dir(name: str, value: str) -> str:
    """A rawlog directory ("" = none); Dovecot's ``tcp:HOST:PORT`` rawlog target is not
    implemented."""
    if value.startswith("tcp:") and "/" not in value:
        raise v.InvalidValue(f"{name}: rawlogs to tcp: targets are not supported: {value}")
    return v.parse_plain_path(name, value) if value else ""


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    """What the ``lmtp`` service reads (once per process: at the top level or in ``protocol lmtp { }``)."""

    #: proxyd has no mail storage: ``protocols = lmtp`` needs it
    lmtp_proxy: bool = False
    lmtp_add_received_header: bool = True
    #: lmtp_verbose_replies (Dovecot 2.3.18+): lib-smtp's detailed error in "451 4.4.0 Proxy failed: ..."
    lmtp_verbose_replies: bool = False
    #: rawlog directories of the lmtp process ("" = none; used only when they exist)
    lmtp_rawlog_dir: str = ""
    lmtp_proxy_rawlog_dir: str = ""
    #: the Received: header's "for": none, final (the RCPT address) or original (its ORCPT)
    lmtp_hdr_delivery_address: str = "final"
    lmtp_client_workarounds: tuple[str, ...] = ()


def _check(own: LmtpSettings) -> tuple[str, str] | None:
    if not own.lmtp_proxy:
        # Dovecot would deliver to its own mail storage; proxyd has none
        return "lmtp_proxy", "protocols = lmtp needs lmtp_proxy = yes: proxyd delivers no mail itself"
    return None


SETTINGS = ProtocolSettings(
    specs=(
        bool_setting("lmtp_proxy"),
        bool_setting("lmtp_add_received_header", default="yes"),
        bool_setting("lmtp_verbose_replies"),
        # the lmtp process's rawlogs: of the MTA connections, of the backend connections
        setting("lmtp_rawlog_dir", Scope.TOP, partial(parse_rawlog_dir, "lmtp_rawlog_dir"), str, ""),
        setting("lmtp_proxy_rawlog_dir", Scope.TOP, partial(parse_rawlog_dir, "lmtp_proxy_rawlog_dir"), str, ""),
        setting(
            "lmtp_hdr_delivery_address", Scope.TOP,
            partial(v.parse_enum, allowed=("none", "final", "original")), str, "final",
        ),
        setting("lmtp_client_workarounds", Scope.TOP, parse_workarounds, " ".join, ""),
    ),
    record=LmtpSettings,
    # read when the lmtp process starts; Dovecot configurations often keep them in
    # protocol lmtp { }, which every LMTP connection matches
    per_process=frozenset({
        "lmtp_add_received_header", "lmtp_verbose_replies", "lmtp_rawlog_dir", "lmtp_proxy_rawlog_dir",
        "lmtp_hdr_delivery_address", "lmtp_client_workarounds", "mail_temp_dir",
    }),
    # the delivering lmtp's (a proxy stores no mail)
    unused=frozenset({"lmtp_rcpt_check_quota", "lmtp_save_to_detail_mailbox", "lmtp_user_concurrency_limit"}),
    check=_check,
)
