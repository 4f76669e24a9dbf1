"""Turning a Dovecot query template into SQL with bound parameters.

Dovecot pastes %-variables into the query text after escaping them for the
database; the query author writes the quotes (``WHERE user = '%u'``).  proxyd
never pastes a value into SQL.  :func:`compile_query` reads the template once,
at configuration time, with a small SQL scanner that knows string literals,
quoted identifiers and comments of the dialect:

* A string literal that contains variables becomes *one* parameter: ``'%u'``
  becomes ``$1`` (pgsql), ``%s`` (mysql) or ``?`` (sqlite), and the parameter's
  value is the literal's text, SQL-unescaped, then %-expanded per request
  (``'%n@%d'`` is one parameter ``user@domain``; ``'%u%%'`` keeps its ``%`` for
  a ``LIKE``).  So a user name like ``x' OR '1'='1`` is only ever a value.
* A variable outside quotes becomes a parameter of its own, provided it stands
  alone as a value (``LIMIT %{passdb:n}``); next to a name character or a
  quote (``users_%d``) it is a configuration error: a parameter cannot be part
  of a name.  A variable inside a quoted identifier is an error for the same
  reason.
* Literals without variables, comments and everything else are kept, with
  ``%%`` turned into ``%`` as Dovecot's expansion would (and ``%`` doubled
  again for the mysql driver, whose placeholders are ``%s``).  Variables inside
  comments are dropped.

The parameters are strings; the pgsql driver converts them to the types the
server infers for the placeholders (a variable compared with an integer
column gets an int), as the server would convert a literal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxyd.auth.expand import Variables, expand, iter_variables, variable_at

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_EMPTY = Variables()


class QueryError(ValueError):
    """The query template cannot be turned into parameterised SQL."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the scanner must know about one database's SQL."""

    name: str
    #: the placeholder for the parameter with this 1-based number
    placeholder: Callable[[int], str]
    #: a backslash escapes the next character inside string literals (MySQL)
    backslash_escapes: bool = False
    #: ``"..."`` is a string literal, not an identifier (MySQL's default sql_mode)
    double_quoted_strings: bool = False
    #: characters that open a quoted identifier, with the closing character
    identifier_quotes: tuple[tuple[str, str], ...] = (('"', '"'),)
    #: literal ``%`` must be written ``%%`` (DB-API "format" paramstyle)
    percent_doubled: bool = False


PGSQL = Dialect(name="pgsql", placeholder=lambda n: f"${n}")
MYSQL = Dialect(
    name="mysql",
    placeholder=lambda _n: "%s",
    backslash_escapes=True,
    double_quoted_strings=True,
    identifier_quotes=(("`", "`"),),
    percent_doubled=True,
)
SQLITE = Dialect(
    name="sqlite",
    placeholder=lambda _n: "?",
    identifier_quotes=(('"', '"'), ("`", "`"), ("[", "]")),
)


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """SQL with placeholders, and one %-template per placeholder."""

    sql: str
    templates: tuple[str, ...]

    def bind(self, variables: Variables) -> tuple[str, ...]:
        """The parameter values for one request; raises ``ExpandError``."""
        return tuple(expand(template, variables) for template in self.templates)


_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def _unescape_literal(body: str, quote: str, dialect: Dialect) -> str:
    """The value of a string literal's body (what the database would see)."""
    out: list[str] = []
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char == quote and body.startswith(quote * 2, pos):
            out.append(quote)
            pos += 2
            continue
        if char == "\\" and dialect.backslash_escapes and pos + 1 < len(body):
            nxt = body[pos + 1]
            if nxt in "%_":
                out.append("\\" + nxt)  # MySQL keeps these for LIKE
            else:
                out.append(_MYSQL_ESCAPES.get(nxt, nxt))
            pos += 2
            continue
        out.append(char)
        pos += 1
    return "".join(out)


def _literal_end(template: str, start: int, quote: str, *, backslashes: bool) -> int:
    """Index of the quote closing the literal opened at ``start``."""
    pos = start + 1
    while pos < len(template):
        char = template[pos]
        if backslashes and char == "\\":
            pos += 2
            continue
        if char == quote:
            if template.startswith(quote, pos + 1):
                pos += 2
                continue
            return pos
        pos += 1
    raise QueryError(f"unterminated quoted text starting at offset {start}")


class _Compiler:
    def __init__(self, template: str, dialect: Dialect) -> None:
        self.template = template
        self.dialect = dialect
        self.out: list[str] = []
        self.templates: list[str] = []

    def text(self, text: str) -> None:
        """Verbatim SQL text; ``%%`` already resolved."""
        self.out.append(text.replace("%", "%%") if self.dialect.percent_doubled else text)

    def param(self, template: str) -> None:
        self.templates.append(template)
        self.out.append(self.dialect.placeholder(len(self.templates)))

    def plain(self, text: str) -> None:
        """Text that may hold ``%%`` but no variable (comments lose theirs)."""
        kept: list[str] = []
        pos = 0
        while True:
            pct = text.find("%", pos)
            if pct == -1:
                kept.append(text[pos:])
                break
            kept.append(text[pos:pct])
            ref = variable_at(text, pct)
            if ref.name == "%":
                kept.append(expand(text[ref.start : ref.end], _EMPTY))
            pos = ref.end
        self.text("".join(kept))

    def run(self) -> CompiledQuery:
        template = self.template
        pos = 0
        start = 0  # start of pending plain text
        quotes = {"'"} | ({'"'} if self.dialect.double_quoted_strings else set())
        identifiers = dict(self.dialect.identifier_quotes)
        while pos < len(template):
            char = template[pos]
            if char in quotes:
                self.plain(template[start:pos])
                end = _literal_end(template, pos, char, backslashes=self.dialect.backslash_escapes)
                self.literal(template[pos + 1 : end], char)
                pos = start = end + 1
            elif char in identifiers:
                end = template.find(identifiers[char], pos + 1)
                if end == -1:
                    raise QueryError(f"unterminated quoted name starting at offset {pos}")
                if iter_variables(template[pos + 1 : end]):
                    raise QueryError(
                        f"a %-variable inside the quoted name {template[pos : end + 1]} "
                        "cannot be a query parameter"
                    )
                pos = end + 1
            elif template.startswith("--", pos) or template.startswith("/*", pos):
                closer = "\n" if char == "-" else "*/"
                end = template.find(closer, pos + 2)
                end = len(template) if end == -1 else end + len(closer)
                self.plain(template[start:pos])
                self.plain_comment(template[pos:end])
                pos = start = end
            elif char == "%":
                ref = variable_at(template, pos)
                if ref.name in ("%", ""):
                    pos = ref.end  # literal text, handled by plain()
                    continue
                self.plain(template[start:pos])
                before = template[pos - 1] if pos > 0 else " "
                after = template[ref.end] if ref.end < len(template) else " "
                if (
                    before in _NAME_CHARS
                    or after in _NAME_CHARS
                    or before in "'\"`"
                    or after in "'\"`"
                ):
                    raise QueryError(
                        f"%-variable {template[ref.start : ref.end]} must stand alone as an "
                        f"SQL value to be bound as a parameter; put it in quotes: "
                        f"'{template[ref.start : ref.end]}'"
                    )
                self.param(template[ref.start : ref.end])
                pos = start = ref.end
            else:
                pos += 1
        self.plain(template[start:])
        return CompiledQuery("".join(self.out), tuple(self.templates))

    def plain_comment(self, comment: str) -> None:
        self.plain(comment)

    def literal(self, body: str, quote: str) -> None:
        if iter_variables(body):
            self.param(_unescape_literal(body, quote, self.dialect))
            return
        self.out.append(quote)
        self.plain(body)
        self.out.append(quote)


def compile_query(template: str, dialect: Dialect) -> CompiledQuery:
    """Compile a Dovecot query template for ``dialect``; raises :class:`QueryError`."""
    return _Compiler(template, dialect).run()
