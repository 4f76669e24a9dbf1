#!/usr/bin/env bash
# The soak and fault suite in one command (tests/soak; docs/failures.md says what it checks):
#
#     scripts/soak.sh [long] [PYTEST ARGS...]
#
# Short form (also part of scripts/test.sh): about a minute and a half.  "long": the
# benchmark's form, one pytest run (20 s disturbances, 200 connections/s floods, the
# PostgreSQL, MariaDB and slapd passdbs stopped and started, the zygote killed, 10,000
# proxied idle sessions): ten to fifteen minutes on two cores.  The
# table of figures is printed at the end and written to PROXYD_SOAK_REPORT (default
# bench/results/soak-FORM-STAMP.md).  Loopback only; as root, like scripts/test.sh.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
install_apt_packages
ensure_venv
cd "$REPO_ROOT" || exit 1

form=short
if [ "${1:-}" = long ]; then form=long; shift; fi
export PROXYD_SOAK=$form
mkdir -p bench/results
export PROXYD_SOAK_REPORT=${PROXYD_SOAK_REPORT:-$REPO_ROOT/bench/results/soak-$form-$(date -u +%Y%m%dT%H%M%SZ).md}
log "soak suite, $form form; report: $PROXYD_SOAK_REPORT"
"$VENV/bin/python" -m pytest tests/soak -q "$@"
