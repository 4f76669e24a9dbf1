#!/usr/bin/env bash
# The one command that runs proxyd's whole test suite on a fresh Debian 12
# machine, as root, from a clone:
#
#     scripts/test.sh [PYTEST ARGS...]
#
# Installs the Debian packages the tests use (real Dovecot backends, curl,
# openssl), creates .venv with proxyd and its test tools, then runs
# `ruff check`, `mypy`, `lint-imports` (the layer contracts in pyproject.toml)
# and `pytest`.  Idempotent and quick when everything is
# already installed.  Exits non-zero when any step fails; all four checks
# run even if an earlier one failed, so one run shows every problem.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
install_apt_packages
ensure_venv
cd "$REPO_ROOT" || exit 1

failed=()
# a compiled module beside its source is imported instead of it (setup.py builds them
# out of tree; tests/test_mypyc_build.py checks the same)
log "no compiled modules in the source tree"
stray=$(find proxyd passdb_drivers -name '*.so' -print)
if [ -n "$stray" ]; then
    printf 'stray extension modules shadow their .py files:\n%s\n' "$stray" >&2
    failed+=("stray .so")
fi
log "ruff check"
"$VENV/bin/ruff" check . || failed+=("ruff check")
log "mypy"
"$VENV/bin/mypy" || failed+=(mypy)
log "lint-imports"
"$VENV/bin/lint-imports" || failed+=(lint-imports)
# the rig and deployments run the compiled build (pip install .): its modules' tests run
# against it too (tests/test_mypyc_build.py; about a minute of C compile on two cores)
export PROXYD_TEST_MYPYC="${PROXYD_TEST_MYPYC:-1}"
log "pytest $*"
"$VENV/bin/python" -m pytest "$@" || failed+=(pytest)

if [ "${#failed[@]}" -ne 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all checks passed"
