"""LMTP is one line in the registry: its service and defaults come from its spec."""

from __future__ import annotations

from proxyd.config import schema
from proxyd.config.settings import Settings, UnixListener
from proxyd.master.listeners import enabled_services, handoff_services
from proxyd.protocols import registry
from proxyd.protocols.lmtp.plugin import LMTP


def test_lmtp_is_registered_and_not_a_login_service() -> None:
    assert registry.by_service("lmtp") is LMTP
    assert LMTP.login is None
    assert "lmtp" not in registry.NOT_YET
    assert {"lmtp"} == schema.FREE_UNIX_LISTENERS


def test_service_lmtp_has_dovecots_defaults() -> None:
    service = Settings().service("lmtp")
    assert service.listeners == ()
    assert service.unix_listeners == (UnixListener("lmtp", 0o666),)
    assert (service.client_limit, service.service_count, service.user, service.chroot) == (
        1, 0, "$default_internal_user", "")


def test_lmtp_is_never_handed_to_the_relay() -> None:
    settings = Settings(protocols=("imap", "lmtp"))
    assert list(enabled_services(settings)) == ["imap-login", "lmtp"]
    lmtp_hs = Settings(protocols=("lmtp",))
    lmtp_hs.services["lmtp"] = lmtp_hs.services["lmtp"].__class__(name="lmtp", service_count=1)
    assert handoff_services(lmtp_hs) == frozenset()
