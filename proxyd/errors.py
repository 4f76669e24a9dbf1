"""Exception roots shared by every layer of proxyd."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where a setting came from: the file and the 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ProxydError(Exception):
    """Root of proxyd's own exceptions."""


class ConfigError(ProxydError):
    """A configuration problem, reported as ``FILE:LINE: message``."""

    def __init__(self, location: Location | None, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"
