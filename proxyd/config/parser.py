"""Dovecot-syntax files to a raw tree: sections, includes, ``<FILE`` values, ``$variables``.

The result, a :class:`RawTree`, keeps every key and section in file order with
its :class:`~proxyd.errors.Location`; it knows no setting names.  Checking
names and types is :mod:`proxyd.config.load`'s job, so this module also reads
the flat ``key = value`` files of the SQL and LDAP drivers
(``parse_file(path, ARGS_FILE)``).

How Dovecot 2.3 does it (``src/config/config-parser.c``), and so do we:

* ``!include`` / ``!include_try`` patterns are globs (with ``{a,b}``
  braces), relative to the directory of the including file; matches are read
  in sorted order, right where the directive stands, so an included file's
  settings land in the section that is open at that point.  A missing
  ``!include`` is an error, a missing ``!include_try`` is not; a file that
  includes itself, directly or not, is an error.
* ``key = <FILE`` replaces the value with the file's content (relative paths
  as for includes).  Deliberate difference: one trailing newline is dropped,
  so ``login_greeting = <motd`` does not put a line break into the greeting.
* In an unquoted value that contains ``$``, every blank-separated word that
  starts with ``$`` is replaced: ``$ENV:NAME`` by the environment variable
  (empty when unset), ``$name`` by the value of setting ``name`` as set
  earlier in the current section or at the top level, else by its default
  (from :attr:`ParseOptions.variable_defaults`); any other name is an error
  (``Unknown variable: $name``).  Words are re-joined with single spaces.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from proxyd.config.lexer import (
    Include,
    KeyValue,
    SectionEnd,
    SectionStart,
    Token,
    ValueKind,
    tokenize,
)
from proxyd.errors import ConfigError, Location


@dataclass(frozen=True, slots=True)
class RawSetting:
    """One ``key = value`` after includes, ``<FILE`` and variables were resolved."""

    key: str
    #: kept out of ``repr()``: values may be passwords or private keys
    value: str = field(repr=False)
    location: Location
    #: for ``key = <FILE``: the file that was read, resolved against the including file
    source_file: str | None = None


@dataclass(frozen=True, slots=True)
class RawSection:
    """``name [label] { ... }`` with its items in file order."""

    name: str
    label: str
    location: Location
    items: tuple[RawItem, ...]


RawItem = RawSetting | RawSection


@dataclass(frozen=True, slots=True)
class RawTree:
    """A parsed configuration file with everything it included."""

    path: str
    items: tuple[RawItem, ...]
    #: every configuration file read, main file first, includes in reading order
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """What the parser does beyond plain ``key = value`` syntax."""

    #: ``key = <FILE`` reads FILE (else the value is the literal text ``<FILE``)
    file_values: bool = True
    #: ``$name`` expands settings; when false only ``$ENV:NAME`` is expanded and
    #: the rest of the value is kept verbatim (Dovecot's driver args files)
    setting_variables: bool = True
    #: values of ``$name`` for settings not set earlier in the file
    variable_defaults: Mapping[str, str] = field(default_factory=dict)
    #: names that are sections, not settings: ``$name`` gives ``Invalid variable``
    section_names: frozenset[str] = frozenset()


#: the main configuration file: everything on
CONFIG_FILE = ParseOptions()
#: ``args = FILE`` of the sql / ldap passdb drivers (``settings_read_nosection``)
ARGS_FILE = ParseOptions(file_values=False, setting_variables=False)

_GLOB_MAGIC = re.compile(r"[*?[]")
_ENV_WORD = re.compile(r"(?:^|(?<=[ \t]))\$ENV:([^ ]*)")


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` groups the way ``glob(3)`` with ``GLOB_BRACE`` does."""
    depth = 0
    start = -1
    commas: list[int] = []
    for i, char in enumerate(pattern):
        if char == "{":
            if depth == 0:
                start = i
                commas = []
            depth += 1
        elif char == "," and depth == 1:
            commas.append(i)
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                if not commas:
                    # "{}" or "{x}" is not a group: keep it, look further on
                    return [pattern[: i + 1] + rest for rest in expand_braces(pattern[i + 1 :])]
                head, tail = pattern[:start], pattern[i + 1 :]
                bounds = [start, *commas, i]
                results: list[str] = []
                for left, right in itertools.pairwise(bounds):
                    results.extend(expand_braces(head + pattern[left + 1 : right] + tail))
                return results
    return [pattern]


def _relative_to(path: str, including_file: str) -> str:
    """Dovecot's ``fix_relative_path``: relative paths start in the including file's directory."""
    if path.startswith("/"):
        return path
    return os.path.join(os.path.dirname(including_file), path)


def _read_text(path: str) -> str:
    """Read a file as UTF-8 text; ``OSError`` and ``UnicodeDecodeError`` pass through."""
    with open(path, "rb") as handle:
        data = handle.read()
    return data.decode("utf-8")


def _decode_error_line(error: UnicodeDecodeError) -> int:
    data = error.object
    return bytes(data[: error.start]).count(b"\n") + 1


@dataclass
class _OpenSection:
    name: str
    label: str
    location: Location
    items: list[RawItem] = field(default_factory=list)
    #: values set so far directly in this section, for ``$name``
    values: dict[str, str] = field(default_factory=dict)


class _Builder:
    """Feeds tokens of the main file and its includes into one section stack."""

    def __init__(self, options: ParseOptions) -> None:
        self.options = options
        self.root = _OpenSection(name="", label="", location=Location("", 0))
        self.stack: list[_OpenSection] = [self.root]
        self.reading: list[str] = []  # real paths of files being read (include loop check)
        self.files: list[str] = []

    def feed_text(self, text: str, filename: str) -> None:
        self.reading.append(os.path.realpath(filename))
        self.files.append(filename)
        try:
            for token in tokenize(text, filename):
                self._token(token, filename)
        finally:
            self.reading.pop()

    def finish(self, path: str) -> RawTree:
        if len(self.stack) > 1:
            section = self.stack[-1]
            raise ConfigError(
                section.location, f"Missing '}}' (section '{section.name}' started here)"
            )
        return RawTree(path=path, items=tuple(self.root.items), files=tuple(self.files))

    def _token(self, token: Token, filename: str) -> None:
        if isinstance(token, KeyValue):
            self._key_value(token, filename)
        elif isinstance(token, SectionStart):
            self.stack.append(_OpenSection(token.name, token.label, token.location))
        elif isinstance(token, SectionEnd):
            if len(self.stack) == 1:
                raise ConfigError(token.location, "Unexpected '}'")
            done = self.stack.pop()
            self.stack[-1].items.append(
                RawSection(done.name, done.label, done.location, tuple(done.items))
            )
        else:
            self._include(token, filename)

    def _key_value(self, token: KeyValue, filename: str) -> None:
        value = token.value
        source: str | None = None
        if token.kind is ValueKind.FILE:
            if self.options.file_values:
                source = _relative_to(token.value, filename)
                value = self._file_value(token.key, source, token.location)
            else:
                value = "<" + token.value
        elif token.kind is ValueKind.VARIABLE:
            value = self._expand(token.key, token.value, token.location)
        current = self.stack[-1]
        current.items.append(RawSetting(token.key, value, token.location, source))
        current.values[token.key] = value

    @staticmethod
    def _file_value(key: str, path: str, location: Location) -> str:
        try:
            text = _read_text(path)
        except OSError as error:
            raise ConfigError(
                location, f"{key}: Can't open file {path}: {error.strerror}"
            ) from None
        except UnicodeDecodeError as error:
            line = _decode_error_line(error)
            raise ConfigError(location, f"{key}: {path} line {line} is not valid UTF-8") from None
        if text.endswith("\r\n"):
            return text[:-2]
        if text.endswith("\n"):
            return text[:-1]
        return text

    def _expand(self, key: str, value: str, location: Location) -> str:
        if not self.options.setting_variables:
            return _ENV_WORD.sub(lambda match: os.environ.get(match.group(1), ""), value)
        words: list[str] = []
        # Dovecot cuts words at a space and skips any blanks after it.
        for word in re.split(r" [ \t]*", value):
            if not word.startswith("$"):
                words.append(word)
            elif word.startswith("$ENV:"):
                words.append(os.environ.get(word[5:], ""))
            else:
                words.append(self._variable(word[1:], location))
        return " ".join(words)

    def _variable(self, name: str, location: Location) -> str:
        if name in self.options.section_names:
            raise ConfigError(location, f"Invalid variable: ${name}")
        # the current section first, then the top level (not the sections in between)
        for section in (self.stack[-1], self.root):
            if name in section.values:
                return section.values[name]
        if name in self.options.variable_defaults:
            return self.options.variable_defaults[name]
        raise ConfigError(location, f"Unknown variable: ${name}")

    def _include(self, token: Include, filename: str) -> None:
        if token.pattern == "":
            raise ConfigError(token.location, "!include needs a file name")
        pattern = _relative_to(token.pattern, filename)
        matches = self._glob(pattern)
        if not matches and not token.optional:
            if _GLOB_MAGIC.search(pattern) or len(expand_braces(pattern)) > 1:
                raise ConfigError(token.location, f"No matches for include pattern {pattern}")
            matches = [pattern]  # let open() say why
        for path in matches:
            if os.path.realpath(path) in self.reading:
                raise ConfigError(token.location, f"Recursive include file: {path}")
            try:
                text = _read_text(path)
            except OSError as error:
                if token.optional:
                    continue
                raise ConfigError(
                    token.location, f"Couldn't open include file {path}: {error.strerror}"
                ) from None
            except UnicodeDecodeError as error:
                line = _decode_error_line(error)
                raise ConfigError(Location(path, line), "Line is not valid UTF-8") from None
            self.feed_text(text, path)

    @staticmethod
    def _glob(pattern: str) -> list[str]:
        found: list[str] = []
        for expanded in expand_braces(pattern):
            if _GLOB_MAGIC.search(expanded):
                found.extend(sorted(glob.glob(expanded)))
            elif os.path.lexists(expanded):
                found.append(expanded)
        return found


def parse_text(text: str, filename: str, options: ParseOptions = CONFIG_FILE) -> RawTree:
    """Parse configuration ``text`` as if it were the file ``filename``.

    ``filename`` need not exist: it names the text in locations, and relative
    ``!include`` / ``<FILE`` paths start in its directory.
    """
    builder = _Builder(options)
    builder.feed_text(text, filename)
    return builder.finish(filename)


def parse_file(path: str, options: ParseOptions = CONFIG_FILE) -> RawTree:
    """Read and parse the configuration file ``path``; errors are :class:`ConfigError`."""
    try:
        text = _read_text(path)
    except OSError as error:
        raise ConfigError(None, f"open({path}) failed: {error.strerror}") from None
    except UnicodeDecodeError as error:
        line = _decode_error_line(error)
        raise ConfigError(Location(path, line), "Line is not valid UTF-8") from None
    return parse_text(text, path, options)


def iter_settings(items: Iterable[RawItem]) -> Iterable[RawSetting]:
    """The settings (not sections) among ``items``, in order."""
    return (item for item in items if isinstance(item, RawSetting))
