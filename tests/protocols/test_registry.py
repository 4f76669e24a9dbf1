"""The protocol registry is the one list of protocols: everything else derives from it."""

from __future__ import annotations

import pytest

from proxyd.config import schema
from proxyd.config.settings import Settings
from proxyd.master.listeners import enabled_services
from proxyd.protocols import registry
from proxyd.protocols.events import LoginPolicy
from proxyd.setting.values import InvalidValue


def test_names_and_services_are_unique() -> None:
    names = [p.name for p in registry.PROTOCOLS]
    services = [p.service for p in registry.PROTOCOLS]
    assert len(set(names)) == len(names)
    assert len(set(services)) == len(services)
    assert registry.NOT_YET.isdisjoint(names)


@pytest.mark.parametrize("spec", registry.PROTOCOLS, ids=lambda p: p.name)
def test_default_services_come_from_the_registry(spec) -> None:
    service = Settings().service(spec.service)
    assert [(li.name, li.port, li.ssl) for li in service.listeners] == [
        (d.name, d.port, d.ssl) for d in spec.listeners
    ]
    assert spec.service in schema.IMPLEMENTED_SERVICES


@pytest.mark.parametrize("spec", registry.PROTOCOLS, ids=lambda p: p.name)
def test_every_protocol_is_accepted_in_protocols(spec) -> None:
    assert schema.parse_protocols(spec.name) == (spec.name,)
    schema.check_protocols((spec.name,))
    settings = Settings(protocols=(spec.name,))
    assert list(enabled_services(settings)) == [spec.service]


@pytest.mark.parametrize("spec", [p for p in registry.PROTOCOLS if p.login], ids=lambda p: p.name)
def test_login_services_build_their_engine_from_settings(spec) -> None:
    engine = spec.login.new_server(LoginPolicy(), Settings())
    assert engine.state == "NOT_AUTHENTICATED"
    assert engine.data_to_send()  # every login protocol greets first
    assert spec.login.goodbye("Bye.").endswith(b"\r\n")


def test_not_yet_protocols_are_refused_as_such() -> None:
    for name in registry.NOT_YET:
        # accepted while a Debian-style "$protocols NAME" chain is built, refused at the end
        protocols = schema.parse_protocols(f"imap {name}")
        with pytest.raises(InvalidValue, match=f"protocol '{name}' is not supported yet"):
            schema.check_protocols(protocols)
    with pytest.raises(InvalidValue, match="Unknown protocol: smtp"):
        schema.parse_protocols("smtp")
