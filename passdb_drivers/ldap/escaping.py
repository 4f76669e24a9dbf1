"""Values put into LDAP filters (RFC 4515) and DNs (RFC 4514), so a user name cannot change either."""

from __future__ import annotations

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn


def filter_escape(value: str) -> str:
    """A value for an LDAP filter (RFC 4515)."""
    escaped: str = escape_filter_chars(value)
    return escaped


def dn_escape(value: str) -> str:
    """A value for a DN (RFC 4514)."""
    if not value:
        return value
    escaped: str = escape_rdn(value)
    return escaped
