"""Helpers for the driver tests: args files, passdb settings, an authenticator over them."""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from proxyd.auth.authenticator import Authenticator
from proxyd.auth.opening import open_authenticator
from proxyd.config.settings import PassdbSettings, Settings
from proxyd.errors import Location

#: a loopback address where nothing listens (connection refused at once)
DEAD_ADDRESS = "127.0.0.9"
#: the sample configurations and schemas
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_counter = itertools.count()


def write_args(directory: Path, text: str, stem: str = "dovecot-sql") -> Path:
    """Write a driver args file with a name of its own; returns its path."""
    path = directory / f"{stem}-{next(_counter)}.conf.ext"
    path.write_text(text)
    return path


def sample_args(directory: Path, name: str, connect: str) -> Path:
    """A copy of ``sql/NAME`` with only its ``connect`` line replaced."""
    text = (SQL_DIR / name).read_text()
    text, count = re.subn(r"(?m)^connect = .*$", lambda _m: f"connect = {connect}", text)
    assert count == 1, name
    return write_args(directory, text)


def passdb(driver: str, args: Path | str, **chain: str) -> PassdbSettings:
    """``passdb { driver = DRIVER  args = ARGS  ... }`` as the loader would build it."""
    return PassdbSettings(
        driver=driver,
        args=str(args),
        location=Location("/etc/proxyd/proxyd.conf", 20),
        config_dir=str(Path(str(args)).parent),
        **chain,
    )


@asynccontextmanager
async def authenticator(
    passdbs: Sequence[PassdbSettings], **settings: Any
) -> AsyncIterator[Authenticator]:
    """``open_authenticator`` over ``passdbs`` without failure delay."""
    config = Settings(passdbs=tuple(passdbs), auth_failure_delay=0, **settings)
    options: dict[str, Any] = {}
    if "penalty" in inspect.signature(open_authenticator).parameters:
        # these tests fail logins on purpose from one address; the per-IP
        # penalty (tested with the authenticator) would only slow them down
        options["penalty"] = False
    async with open_authenticator(config, **options) as auth:
        yield auth
