"""A wrapper that keeps passwords and other secrets out of logs and reprs."""

from __future__ import annotations

from typing import Final

_MASK: Final = "<hidden>"


class Secret:
    """A secret string. ``str()`` and ``repr()`` never show the value; use ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret({_MASK})"

    def __str__(self) -> str:
        return _MASK
