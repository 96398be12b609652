#!/usr/bin/env bash
# Runs the suite and refuses to call a run with zero tests a success.
# Two pytest-xdist workers (PYTEST_WORKERS=0 for one process): every end-to-end test runs in one worker, in file
# order, sharing the session devnet (tests/conftest.py groups them), while the other runs the unit and contract
# tests, so the devnets never compete with each other.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
workers=${PYTEST_WORKERS:-2}
parallel=()
if [ "$workers" -gt 0 ]; then
  parallel=(-n "$workers" --dist loadgroup)
fi
.venv/bin/pytest "${parallel[@]}" --durations=25 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 5 ] || grep -qE "^(=+ )?no tests ran" "$log"; then
  echo "run-tests: no test ran — failing on purpose" >&2
  rc=1
fi
rm -f "$log"
exit "$rc"
