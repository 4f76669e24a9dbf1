"""Passdb field templates: ``key=value key2 ...`` strings with %-variables in the values.

Used by the static driver's ``args`` and by ``default_fields`` /
``override_fields`` (Dovecot's ``passdb-template.c``): the text is split at
spaces (runs of spaces count as one), each item is ``key=value`` or a bare
``key`` (a value-less field), and values are %-expanded at lookup time without
escaping.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyd.auth.expand import Variables, expand


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed field template; ``value`` None marks a bare key."""

    items: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Template:
        """Split ``text``; raises ValueError for an item with an empty key (``=x``)."""
        items: list[tuple[str, str | None]] = []
        for word in text.split():
            key, sep, value = word.partition("=")
            if not key:
                raise ValueError(f"Invalid passdb template {text} - key must not be empty")
            items.append((key, value if sep else None))
        return cls(tuple(items))

    def __bool__(self) -> bool:
        return bool(self.items)

    def without(self, key: str) -> tuple[Template, str | None, bool]:
        """This template minus the first ``key`` item: ``(rest, its value, found)``."""
        for index, (name, value) in enumerate(self.items):
            if name == key:
                rest = self.items[:index] + self.items[index + 1 :]
                return Template(rest), value, True
        return self, None, False

    def export(self, variables: Variables) -> list[tuple[str, str]]:
        """The fields with their values expanded; raises ``ExpandError``."""
        return [
            (key, "" if value is None else expand(value, variables)) for key, value in self.items
        ]
