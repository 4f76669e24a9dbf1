"""Shared pytest configuration for the whole suite.

The server fixtures live in ``tests/fixtures/`` and are registered here as
plugins, so every test directory can ask for them by name:

* ``tls_ca``, ``proxyd_tls`` (tests/fixtures/tls.py): trustme CA and proxyd's certificate;
* ``dovecot_factory``, ``backend_a``, ``backend_b`` (tests/fixtures/dovecot.py):
  real Dovecot 2.3 backends on 127.0.0.2 / 127.0.0.3;
* ``proxyd`` (tests/fixtures/proxyd.py): runs the real proxyd process.

Nothing here starts a server unless a test asks for the fixture.

Set ``PROXYD_E2E_REFERENCE=dovecot`` to run the end-to-end tests against
Dovecot's own proxy instead of proxyd (see tests/fixtures/proxyd.py); tests
marked ``proxyd_only`` are skipped then.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.tls",
    "tests.fixtures.dovecot",
    "tests.fixtures.proxyd",
    "tests.fixtures.postgres",
    "tests.fixtures.mariadb",
    "tests.fixtures.slapd",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "proxyd_only: needs proxyd itself (proxyctl, -n, proxyd's error format); "
        "skipped when PROXYD_E2E_REFERENCE=dovecot",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # imported here, not at the top: the plugin modules must be imported by
    # pytest itself first, or their asserts are not rewritten
    from tests.fixtures.proxyd import REFERENCE

    if REFERENCE != "dovecot":
        return
    skip = pytest.mark.skip(reason="proxyd-only behaviour; PROXYD_E2E_REFERENCE=dovecot")
    for item in items:
        if item.get_closest_marker("proxyd_only"):
            item.add_marker(skip)
