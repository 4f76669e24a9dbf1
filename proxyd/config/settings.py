"""The parsed configuration: frozen dataclasses, built once per (re)load.

Every value has Dovecot's default.  Records remember where they were defined so
later checks can still report ``FILE:LINE``.  A reload builds a new ``Settings``
and swaps it in whole; nothing here is ever mutated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from proxyd.errors import Location
from proxyd.secret import Secret

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class InetListener:
    """``inet_listener NAME { address port ssl haproxy }`` inside a service."""

    name: str
    port: int
    #: listen addresses; empty = inherit the top-level ``listen``
    addresses: tuple[str, ...] = ()
    ssl: bool = False
    haproxy: bool = False
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``service NAME { ... }``; only the listeners matter in single-process mode."""

    name: str
    listeners: tuple[InetListener, ...] = ()
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class PassdbSettings:
    """One ``passdb [NAME] { ... }`` block, tried in configuration order."""

    driver: str
    args: str = ""
    name: str = ""
    #: Dovecot's result_* actions: "return-ok", "return-fail", "return", "continue", "continue-ok", "continue-fail"
    result_success: str = "return-ok"
    result_failure: str = "continue"
    result_internalfail: str = "continue"
    #: "never", "authenticated", "unauthenticated"
    skip: str = "never"
    #: extra fields added to every reply, and fields that override the driver's ("k=v k2=v2" templates)
    default_fields: str = ""
    override_fields: str = ""
    location: Location | None = None
    #: the directory of the file that defined this passdb, for relative ``args`` paths
    config_dir: str = "."


def _default_services() -> dict[str, ServiceSettings]:
    return {
        "imap-login": ServiceSettings(
            name="imap-login",
            listeners=(
                InetListener(name="imap", port=143),
                InetListener(name="imaps", port=993, ssl=True),
            ),
        ),
    }


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole effective configuration."""

    config_path: str = "/etc/proxyd/proxyd.conf"
    protocols: tuple[str, ...] = ("imap",)
    listen: tuple[str, ...] = ("*", "::")
    base_dir: str = "/var/run/proxyd"
    log_path: str = ""  # "" = stderr
    auth_verbose: bool = False
    auth_debug: bool = False

    # TLS towards clients
    ssl: str = "yes"  # "no" | "yes" | "required"
    ssl_cert: str = ""  # PEM text (``<file`` read at load time)
    ssl_key: Secret = field(default_factory=lambda: Secret(""))
    ssl_ca: str = ""
    ssl_min_protocol: str = "TLSv1.2"
    #: absolute paths of the ``<FILE``s the three PEM values above were read from ("" = not from a file)
    ssl_cert_path: str = ""
    ssl_key_path: str = ""
    ssl_ca_path: str = ""

    # login
    disable_plaintext_auth: bool = True
    auth_mechanisms: tuple[str, ...] = ("plain",)
    auth_failure_delay: float = 2.0  # seconds
    login_greeting: str = "Dovecot ready."
    login_trusted_networks: tuple[IPNetwork, ...] = ()
    login_proxy_timeout: float = 30.0  # seconds
    login_proxy_max_reconnects: int = 3
    imap_capability: str = ""
    imap_id_retain: bool = False

    services: dict[str, ServiceSettings] = field(default_factory=_default_services)
    passdbs: tuple[PassdbSettings, ...] = ()

    #: settings given explicitly in the file: name -> where (for ``proxyd -n``)
    explicit: dict[str, Location] = field(default_factory=dict)

    def service(self, name: str) -> ServiceSettings:
        return self.services.get(name, ServiceSettings(name=name))
