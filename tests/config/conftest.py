"""Helpers for the configuration tests: write files under tmp_path and load them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxyd.config.load import load_settings
from proxyd.config.settings import Settings

CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"

Write = Callable[[str, str], Path]
Load = Callable[[str], Settings]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """write(name, text) creates tmp_path/name (and its directories) and returns its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def load(write: Write) -> Load:
    """load(text) writes text as proxyd.conf and loads it."""

    def _load(text: str) -> Settings:
        return load_settings(str(write("proxyd.conf", text)))

    return _load


@pytest.fixture
def pems(write: Write) -> tuple[Path, Path]:
    """A certificate and a key file beside proxyd.conf."""
    return write("cert.pem", CERT_PEM), write("key.pem", KEY_PEM)
