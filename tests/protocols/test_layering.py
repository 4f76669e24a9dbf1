"""proxyd.protocols stays sans-IO: no trio, no asyncio, no login/auth layers."""

from __future__ import annotations

import ast
from pathlib import Path

import proxyd.protocols

FORBIDDEN = ("trio", "asyncio", "proxyd.login", "proxyd.auth", "proxyd.master")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_protocols_import_no_io_frameworks_or_outer_layers():
    root = Path(proxyd.protocols.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 8
    offenders = {
        f"{path.relative_to(root)}: {name}"
        for path in files
        for name in imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert offenders == set()
