"""The compiled build (setup.py compiles ``[tool.proxyd.mypyc] modules`` with mypyc).

* No extension module ever sits beside the sources: Python imports a ``.so`` before the
  ``.py`` of the same name, so a stale one would silently shadow every later edit.
* The listed modules go through mypyc up to C on every run (mypy's analysis and mypyc's
  code generation, no C compiler: a few seconds): a construct mypyc refuses fails here,
  not in a deployment's ``pip install .``, which would fall back to pure Python.
* With ``PROXYD_TEST_MYPYC=1`` the wheel is built for real (a C compile, about a minute
  on two cores) in a scratch directory, and the tests of the compiled modules run against
  it: compiled code must behave as the pure Python does.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("proxyd", "passdb_drivers")
#: the tests of the compiled modules (the engines, the login modules, the log, the auth chain
#: with the static passdb, the relay's hub; the other drivers' tests need databases and stay out
#: of this run)
COMPILED_TESTS = (
    "tests/protocols",
    "tests/login",
    "tests/auth",
    "tests/test_log_lean.py",
    "tests/test_log_timestamp.py",
    "tests/passdb_drivers/test_static.py",
    "tests/proxied",
)

in_a_checkout = pytest.mark.skipif(
    not (REPO / "setup.py").exists() or not (REPO / "proxyd").is_dir(),
    reason="runs from a checkout (these tests were copied beside an installed build)",
)


def compiled_modules() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["proxyd"]["mypyc"]["modules"]
    return sorted({path for pattern in patterns for path in glob.glob(pattern, root_dir=REPO)})


def test_no_extension_module_beside_the_sources() -> None:
    stray = sorted(
        str(path.relative_to(REPO))
        for package in PACKAGES
        if (REPO / package).is_dir()
        for path in (REPO / package).rglob("*")
        if path.suffix in (".so", ".pyd")
    )
    assert stray == [], (
        f"compiled modules in the source tree shadow their .py files: {stray} "
        "(build out of tree: pip install . into a venv, never pip install -e with PROXYD_MYPYC)"
    )


@in_a_checkout
def test_the_listed_modules_go_through_mypyc(tmp_path: Path) -> None:
    modules = compiled_modules()
    assert "proxyd/protocols/imap/server.py" in modules
    script = (
        "import sys; from mypyc.build import mypycify; "
        "mypycify(sys.argv[2:], target_dir=sys.argv[1], multi_file=True, group_name='proxyd')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *modules],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"mypyc refuses a listed module:\n{result.stdout}{result.stderr}"
    # a C file per module (__native_<package>___<module>.c; __native_proxyd.c is the group's)
    generated = {path.name for path in tmp_path.glob("__native_*___*.c")}
    assert "__native_proxyd___protocols___imap___server.c" in generated
    assert len(generated) == len(modules)


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))


@in_a_checkout
@pytest.mark.skipif(
    os.environ.get("PROXYD_TEST_MYPYC") != "1",
    reason="compiles the C extensions (about a minute): set PROXYD_TEST_MYPYC=1",
)
@pytest.mark.timeout(900)
def test_the_compiled_build_passes_the_tests_of_its_modules(tmp_path: Path) -> None:
    src, wheels, site, tests = (tmp_path / name for name in ("src", "wheels", "site", "tests"))
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES:
        _copy(REPO / package, src / package)
    env = dict(os.environ, PROXYD_MYPYC="1")  # a failure to compile fails, no fallback
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # no build isolation: the venv's setuptools and mypy, nothing fetched
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        cwd=tmp_path, env=env, check=True, timeout=840,
    )  # fmt: skip
    (wheel,) = wheels.glob("proxyd-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], env=env, check=True)
    # the tests, without the sources beside them: every import of proxyd is the build's
    tests.mkdir()
    for data in ("tests", "sql"):  # test_move_plan reads the demo's SQL
        _copy(REPO / data, tests / data)
    shutil.copy(REPO / "pyproject.toml", tests / "pyproject.toml")
    env["PYTHONPATH"] = str(site)
    where = subprocess.run(
        [sys.executable, "-c", "import proxyd.protocols.imap.server as m; print(m.__file__)"],
        cwd=tests, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().endswith(".so"), where.stdout
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *COMPILED_TESTS],
        cwd=tests, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
