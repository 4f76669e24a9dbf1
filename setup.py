"""Build hook: compiles the per-login modules with mypyc where it can.

Everything about the package is in pyproject.toml; this file only adds the C
extensions.  The modules come from ``[tool.proxyd.mypyc] modules`` there (paths
or globs relative to the repository root).  ``pip install .`` builds them when
mypyc (a build requirement) and a C compiler with Python's headers are present;
otherwise the wheel is the same code as pure Python, with a warning.

``PROXYD_MYPYC=0`` never compiles; ``PROXYD_MYPYC=1`` makes a failure to compile
an error instead of the fallback (bench/instr/run.sh and the compiled-build test
use it, so a figure is never taken from a silent fallback).

Editable installs (``pip install -e``, scripts/test.sh) are never compiled: a
``.so`` beside its ``.py`` in the source tree is imported first and would shadow
every later edit of that module.
"""

from __future__ import annotations

import glob
import os
import sys
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
MODE = os.environ.get("PROXYD_MYPYC", "auto")
if MODE not in ("0", "1", "auto"):
    raise SystemExit(f"PROXYD_MYPYC must be 0, 1 or auto, not {MODE!r}")
# only a build of the package compiles: not the metadata steps of pip (egg_info, dist_info),
# and never an editable install (editable_wheel, develop: its build_ext runs in place)
BUILDS = bool({"bdist_wheel", "build", "build_ext", "install"} & set(sys.argv))
EDITABLE = bool({"editable_wheel", "develop"} & set(sys.argv))


def _warn(message: str) -> None:
    print(f"proxyd setup.py: {message}", file=sys.stderr)


def _modules() -> list[str]:
    with open(HERE / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["proxyd"]["mypyc"]["modules"]
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern, root_dir=HERE, recursive=True))
        if not found:
            raise SystemExit(f"[tool.proxyd.mypyc] modules: {pattern!r} matches no file")
        paths.extend(p for p in found if p not in paths)
    return paths


def _ext_modules() -> list[object]:
    if MODE == "0" or EDITABLE or not BUILDS:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if MODE == "1":
            raise
        _warn("mypyc is not installed: building pure Python")
        return []
    os.chdir(HERE)  # mypycify takes paths relative to the current directory
    try:
        # opt_level 3 is mypyc's default; no debug info (smaller .so, the same speed); a C
        # file per module, so that build_ext compiles them in parallel; the shared runtime
        # module is proxyd__mypyc (not a hash of the module list)
        return list(
            mypycify(_modules(), opt_level="3", debug_level="0", multi_file=True, group_name="proxyd")
        )
    except (Exception, SystemExit) as exc:
        if MODE == "1":
            raise
        _warn(f"mypyc cannot compile the modules ({exc}): building pure Python")
        return []


class BuildExt(build_ext):
    """Falls back to the pure-Python wheel when the C build fails (no compiler, no headers)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if MODE == "1":
                raise
            _warn(f"C build failed ({exc}): building pure Python")
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.extensions = []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": BuildExt})
