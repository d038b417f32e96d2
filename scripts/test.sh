#!/usr/bin/env bash
# The whole test suite against the real stack: brings up what is missing (scripts/stack.sh),
# lints (a lint error stops the whole-suite run before any test), then runs jest in band (the tests share one
# Docker engine on a 2-core machine).
# Ends with one line `tests: N passed, N failed` from jest's own counts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/defaults.sh
bash scripts/stack.sh --test
# The whole suite lints first; a run of chosen files (arguments) skips it to stay quick.
if (($# == 0)); then
  npm run --silent lint || { echo "lint failed (npm run lint): no tests run" >&2; exit 1; }
fi
mkdir -p .data test-artifacts
results=.data/jest-results.json
rm -f "$results"
set +e
npx --no-install jest --runInBand --forceExit --json --outputFile="$results" "$@"
status=$?
set -e
if [[ -f "$results" ]]; then
  node -e '
    const r = require(process.argv[1]);
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  ' "$ROOT/$results"
else
  echo "tests: 0 passed, 0 failed"
  echo "jest wrote no results (exit $status)" >&2
  ((status != 0)) || status=1
fi
exit "$status"
