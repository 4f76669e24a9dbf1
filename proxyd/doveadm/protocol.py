"""The doveadm HTTP API's JSON, sans-IO: a request body in, calls out; results in, JSON out.

A request is ``[[command, {parameters}, tag], ...]``.  As in Dovecot's
``client-connection-http.c``, a malformed *structure* fails the whole request
with HTTP 400 and a one-line text (``Command must be a JSON array``, ...),
while a problem with one *command* (an unknown name, an unknown or ill-typed
parameter) becomes that command's ``["error", {"type": ...}, tag]`` entry and
the others still run.  Command and parameter names match in any of Dovecot's
spellings: ``proxy list``, ``proxy-list`` or ``proxyList``.

proxyd checks the whole body before running anything (Dovecot runs the
commands before a later structural error; a half-run request helps nobody).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: sysexits.h codes doveadm reports as ``exitCode``
EX_USAGE = 64
EX_TEMPFAIL = 75


class ParamType(enum.Enum):
    """Dovecot's ``CMD_PARAM_*`` as ``GET /doveadm/v1`` names them."""

    STRING = "string"
    ARRAY = "array"
    BOOLEAN = "boolean"
    INTEGER = "integer"


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    type: ParamType


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command's name in doveadm's spelling (``proxy kick``) and its parameters."""

    name: str
    params: tuple[ParamSpec, ...] = ()


ParamValue = str | bool | int | list[str]


@dataclass(frozen=True, slots=True)
class Call:
    """One command of a request, checked."""

    tag: str
    #: None: no such command (``unknownMethod``)
    command: CommandSpec | None
    #: parameter name (doveadm spelling) -> value
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    #: an unknown or ill-typed parameter (``invalidRequest``)
    invalid: bool = False


class BadRequest(Exception):
    """The body is not a request at all: HTTP 400 with this text."""


class ErrorType(enum.Enum):
    UNKNOWN_METHOD = "unknownMethod"
    INVALID_REQUEST = "invalidRequest"
    UNAUTHORIZED = "unAuthorized"
    EXIT_CODE = "exitCode"
    INTERNAL = "internalError"


def camel_case(name: str) -> str:
    """Dovecot's ``doveadm_http_server_camelcase_value``: ``proxy kick`` -> ``proxyKick``."""
    return re.sub(r"[ -](.)", lambda m: m.group(1).upper(), name)


def _same_name(ours: str, theirs: str) -> bool:
    # i_strccdascmp(): a space or dash before a letter equals that letter in upper case
    return camel_case(ours) == camel_case(theirs)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs: duplicates stay visible."""


def parse_request(body: bytes, commands: Sequence[CommandSpec]) -> list[Call]:
    try:
        document = json.loads(body, object_pairs_hook=_Pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"JSON parse error: {_json_error(exc)}") from None
    if not isinstance(document, list) or isinstance(document, _Pairs):
        raise BadRequest("Request must be a JSON array")
    return [_parse_call(item, commands) for item in document]


def _no_constant(name: str) -> Any:
    raise ValueError(f"Invalid JSON value {name}")


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "Too deeply nested"
    return str(exc) or "Invalid input"


def _parse_call(item: Any, commands: Sequence[CommandSpec]) -> Call:
    if not isinstance(item, list) or isinstance(item, _Pairs):
        raise BadRequest("Command must be a JSON array")
    if not item or not isinstance(item[0], str):
        raise BadRequest("Command name must be a string")
    name = item[0]
    command = next((c for c in commands if _same_name(c.name, name)), None)
    params = item[1] if len(item) > 1 else None
    if command is not None and not isinstance(params, _Pairs):
        # (Dovecot skips an unknown command's parameters unseen)
        raise BadRequest("Parameters must be contained in a JSON object")
    if len(item) < 3 or not isinstance(item[2], str):
        raise BadRequest("Command ID must be a string")
    if len(item) > 3:
        raise BadRequest("Unexpected JSON element at end of command")
    tag = item[2]
    if command is None:
        return Call(tag=tag, command=None)
    assert isinstance(params, _Pairs)
    values: dict[str, ParamValue] = {}
    invalid = False
    for key, value in params:
        spec = next((p for p in command.params if _same_name(p.name, key)), None)
        if spec is None:
            invalid = True
            continue
        if spec.name in values:
            raise BadRequest(f"Parameter `{spec.name}' is duplicated")
        typed = _typed(spec, value)
        if typed is None:
            invalid = True
            continue
        values[spec.name] = typed
    return Call(tag=tag, command=command, params=values, invalid=invalid)


def _typed(spec: ParamSpec, value: Any) -> ParamValue | None:
    """The value as the parameter's type; None when it cannot be (``invalidRequest``)."""
    if spec.type is ParamType.ARRAY:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or isinstance(value, _Pairs):
            raise BadRequest(f"Parameter `{spec.name}' must be string or array")
        if not all(isinstance(element, str) for element in value):
            raise BadRequest("Command parameter array can only contain string values")
        return list(value)
    if isinstance(value, (list, dict)) or value is None:
        return None
    text = _scalar_text(value)
    if spec.type is ParamType.BOOLEAN:
        return text == "true"
    if spec.type is ParamType.INTEGER:
        try:
            return int(text)
        except ValueError:
            return None
    return text


def _scalar_text(value: Any) -> str:
    """A JSON scalar as Dovecot's parser hands it over: its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


# -- answers --------------------------------------------------------------------------------


def response_entry(payload: Any, tag: str) -> list[Any]:
    return ["doveadmResponse", payload, tag]


def error_entry(error: ErrorType, tag: str, exit_code: int = 0) -> list[Any]:
    return ["error", {"type": error.value, "exitCode": exit_code}, tag]


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def describe(commands: Sequence[CommandSpec]) -> list[dict[str, Any]]:
    """``GET /doveadm/v1``: every command with its parameters, in camel case."""
    return [
        {
            "command": camel_case(command.name),
            "parameters": [{"name": camel_case(p.name), "type": p.type.value} for p in command.params],
        }
        for command in commands
    ]
