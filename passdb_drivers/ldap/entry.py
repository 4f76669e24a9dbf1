"""One search result and the passdb fields ``pass_attrs`` make of it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from passdb_drivers.ldap.config import LDAP_VAR, AttrField
from proxyd.auth.expand import Variables, expand, iter_variables

log = logging.getLogger("proxyd.auth.ldap")


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result: its DN and attribute values (names lowercased)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(repr=False)


def entry_fields(
    entry: Entry, fields: Sequence[AttrField], variables: Variables
) -> list[tuple[str, str | None]]:
    """The passdb fields of ``entry`` (Dovecot's ``db_ldap_result_iterate``); raises ExpandError."""
    out: list[tuple[str, str | None]] = []
    for item in fields:
        if item.ldap_attr:
            values = entry.attributes.get(item.ldap_attr.lower(), ())
            if not values:
                continue  # a missing or empty attribute sets nothing
            if len(values) > 1:
                log.warning(
                    "ldap: Multiple values found for '%s', using value '%s'",
                    item.name or item.ldap_attr,
                    "<hidden>" if item.name.startswith("password") else values[0],
                )
            value = values[0]
        else:
            value = ""
        if not item.name:
            continue
        if item.template is not None:
            long_names = dict(variables.long)
            for ref in iter_variables(item.template):
                match = LDAP_VAR.match(ref.name)
                if match:
                    # attribute names are case-insensitive; %{ldap:attr:default}
                    found = entry.attributes.get(match.group(1).lower(), ())
                    default = ref.name.split(":", 2)[2] if ref.name.count(":") >= 2 else ""
                    long_names[ref.name] = found[0] if found else default
            value = expand(
                item.template,
                Variables(
                    short={**variables.short, "$": value},
                    long=long_names,
                    passdb_fields=variables.passdb_fields,
                ),
            )
        out.append((item.name, value))
    return out
