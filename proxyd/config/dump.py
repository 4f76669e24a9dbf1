"""``proxyd -n``: the settings that differ from the defaults, like ``doveconf -n``.

The output is Dovecot syntax and loads again to the same settings: keys in
alphabetical order with sections at their key's place, section contents
sorted too, times and sizes in ``doveconf`` form (``30 secs``).  Secrets are
never printed: ``ssl_key`` reads ``ssl_key = # hidden, use -P to show it``
(doveconf's text), and password-like fields inside passdb ``args`` /
``default_fields`` / ``override_fields`` (``password=``, ``pass=``,
``dnpass=``) are replaced by ``<hidden>`` unless they are ``%`` templates
such as ``pass=%w``.  PEM values read with ``<FILE`` are printed as
``<FILE``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

from proxyd import __version__
from proxyd.config import schema
from proxyd.config.settings import FilterBlock, InetListener, PassdbSettings, Settings
from proxyd.secret import Secret

HIDDEN: Final = "# hidden, use -P to show it"
_SECRET_FIELD = re.compile(r"(?:^|(?<=[ \t]))((?:password|pass|dnpass)=)(?!%)\S*")
_NEEDS_QUOTES = re.compile(r"[#$\"'\\]|^[ \t<]|[ \t]$")
_PASSDB_FIELDS: Final = (
    "args", "default_fields", "driver", "name", "override_fields",
    "result_failure", "result_internalfail", "result_success", "skip",
)  # fmt: skip
_MASKED_PASSDB_FIELDS: Final = frozenset({"args", "default_fields", "override_fields"})


def quote(value: str) -> str:
    """``value`` as it must be written so that the parser gives it back unchanged."""
    if not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mask_secret_fields(text: str) -> str:
    """Hide ``password=X`` / ``pass=X`` / ``dnpass=X`` values in a ``k=v k2=v2`` string."""
    return _SECRET_FIELD.sub(r"\1<hidden>", text)


def _top_value(settings: Settings, spec: schema.SettingSpec, value: Any, show_secrets: bool) -> str:
    if spec.secret and not show_secrets:
        return HIDDEN
    if spec.secret and not spec.pem:
        return quote(value.reveal() if isinstance(value, Secret) else str(value))
    if spec.pem:
        path: str = getattr(settings, f"{spec.name}_path")
        return f"<{path}" if path else "# inline PEM, not shown"
    return quote(spec.format(value))


def _block(header: str, lines: list[str]) -> list[str]:
    return [f"{header} {{", *(f"  {line}" for line in lines), "}"]


def _listener_lines(listener: InetListener, default: InetListener) -> list[str]:
    lines: list[str] = []
    for name, spec in sorted(schema.INET_LISTENER.items()):
        if spec.attribute not in InetListener.__dataclass_fields__:
            continue
        value = getattr(listener, spec.attribute)
        if value != getattr(default, spec.attribute):
            lines.append(f"{name} = {quote(spec.format(value))}")
    return lines


def _passdb_lines(passdb: PassdbSettings, show_secrets: bool = False) -> list[str]:
    default = PassdbSettings(driver="")
    lines: list[str] = []
    for name in _PASSDB_FIELDS:
        value: str = getattr(passdb, name)
        if value == getattr(default, name) and name != "driver":
            continue
        if name in _MASKED_PASSDB_FIELDS and not show_secrets:
            value = mask_secret_fields(value)
        lines.append(f"{name} = {quote(value)}")
    if passdb.master:
        lines.append("master = yes")
    if passdb.pass_:
        lines.append("pass = yes")
    return lines


def dump_non_default(settings: Settings, show_secrets: bool = False) -> str:
    """The non-default settings as Dovecot configuration text (ends with a newline);
    passwords and keys only with ``show_secrets`` (``proxyd -n -P``, as ``doveconf -P``)."""
    defaults = Settings()
    entries: list[tuple[str, list[str]]] = []
    for name, spec in schema.TOP.items():
        value = settings.value(spec.attribute)
        if value != defaults.value(spec.attribute):
            entries.append((name, [f"{name} = {_top_value(settings, spec, value, show_secrets)}"]))

    for service_name in sorted(settings.services):
        service = settings.services[service_name]
        default_service = defaults.services.get(service_name)
        known = (
            {listener.name: listener for listener in default_service.listeners}
            if default_service
            else {}
        )
        body: list[str] = []
        for key in sorted(service.explicit):
            spec = schema.SERVICE[key]
            body.append(f"{key} = {spec.format(getattr(service, spec.attribute))}")
        default_sockets = (
            {listener.name: listener for listener in default_service.unix_listeners}
            if default_service
            else {}
        )
        for socket in service.unix_listeners:
            default_socket = default_sockets.get(socket.name)
            lines = [
                f"{key} = {quote(spec.format(getattr(socket, key)))}"
                for key, spec in sorted(schema.UNIX_LISTENER.items())
                if key != "path"
                and (default_socket is None or getattr(socket, key) != getattr(default_socket, key))
            ]
            if lines:
                body.extend(_block(f"unix_listener {socket.name}", lines))
        for listener in sorted(service.listeners, key=lambda item: item.name):
            base = known.get(listener.name) or InetListener(name=listener.name, port=0)
            lines = _listener_lines(listener, dataclasses.replace(base, location=listener.location))
            if lines:
                body.extend(_block(f"inet_listener {listener.name}", lines))
        if body:
            entries.append(("service", _block(f"service {service_name}", body)))

    entries.extend(
        ("passdb", _block("passdb", _passdb_lines(passdb, show_secrets))) for passdb in settings.passdbs
    )

    entries.sort(key=lambda entry: entry[0])  # stable: passdbs keep their order
    out = [f"# proxyd {__version__}: {settings.config_path}"]
    for _, lines in entries:
        out.extend(lines)
    for block in settings.filters:
        out.extend(_filter_lines(block, show_secrets))
    out.extend(_unused_lines(settings))
    return "\n".join(out) + "\n"


def _filter_lines(block: FilterBlock, show_secrets: bool) -> list[str]:
    """One ``local``/``remote``/``protocol`` block, nested as it was written, in file order."""
    values = dict(block.values)
    lines: list[str] = []
    for name, _where in block.keys:
        spec = schema.TOP[name]
        value = values[spec.attribute]
        if spec.secret and not show_secrets:
            text = HIDDEN
        elif spec.pem:
            path = values.get(f"{name}_path", "")
            text = f"<{path}" if path else "# inline PEM, not shown"
        elif spec.secret:
            text = quote(value.reveal() if isinstance(value, Secret) else str(value))
        else:
            text = quote(spec.format(value))
        lines.append(f"{name} = {text}")
    headers = []
    if block.local is not None:
        headers.append(f"local {block.local_text}")
    if block.remote is not None:
        headers.append(f"remote {block.remote_text}")
    if block.protocol:
        headers.append(f"protocol {block.protocol}")
    for header in reversed(headers):
        lines = _block(header, lines)
    return lines


def _unused_lines(settings: Settings) -> list[str]:
    """Settings and sections of services a proxy does not run, as comments (the output still loads)."""
    if not settings.unused:
        return []
    lines = ["# Not used by a proxy (services proxyd does not run; accepted, never applied):"]
    lines += [f"#   {item.location}: {item.what}" for item in settings.unused]
    return lines
