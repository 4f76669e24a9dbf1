"""``local_validation_key_dict`` of the ``oauth2`` passdb: Dovecot's ``fs:posix:prefix=DIR`` dict.

Dovecot looks a key up as ``shared/<azp>/<alg>/<kid>``; its ``fs`` dict drops
``shared/`` and reads the file ``<prefix><azp>/<alg>/<kid>`` (the prefix is
prepended as it is, so it normally ends in ``/``).  A path segment made of
dots only gets two more (``..`` is read as ``....``), as ``dict-fs.c`` escapes
keys, so a token's ``kid`` or ``azp`` never leaves the directory.  A missing
file is "no key"; another read error is Dovecot's ``read(PATH) failed: ...``.
Other dict drivers are not supported yet.
"""

from __future__ import annotations

import trio

from passdb_drivers.oauth2_jwt import JwtError


def _escape_segment(segment: str) -> str:
    return f"..{segment}" if segment and set(segment) == {"."} else segment


class FsKeyDict:
    """Key files under a directory, read off the event loop."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @classmethod
    def from_uri(cls, uri: str) -> FsKeyDict:
        """``fs:posix:prefix=DIR``; raises ``ValueError`` with the text for the configuration error."""
        driver, _, rest = uri.partition(":")
        if driver != "fs":
            raise ValueError(f"dict driver '{driver}' is not supported yet (only fs:posix:prefix=DIR)")
        backend, _, args = rest.partition(":")
        if backend != "posix":
            raise ValueError(f"fs driver '{backend}' is not supported yet (only fs:posix:prefix=DIR)")
        prefix = ""
        for arg in filter(None, args.split(":")):
            name, eq, value = arg.partition("=")
            if name != "prefix" or not eq:
                raise ValueError(f"fs-posix: argument '{arg}' is not supported yet (only prefix=DIR)")
            prefix = value
        return cls(prefix)

    def path(self, azp: str, alg: str, kid: str) -> str:
        return self.prefix + "/".join(_escape_segment(part) for part in (azp, alg, kid))

    async def lookup(self, azp: str, alg: str, kid: str) -> str | None:
        path = self.path(azp, alg, kid)

        def read() -> str | None:
            try:
                with open(path, encoding="utf-8", errors="replace") as file:
                    return file.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise JwtError(f"read({path}) failed: {reason}") from None

        return await trio.to_thread.run_sync(read)
