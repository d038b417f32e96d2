#!/usr/bin/env bash
# Benchmarks against the real stack (brought up as for the tests); results go to bench/results.json
# and bench/results.md. `npm run bench -- --quick` for a short run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/defaults.sh
bash scripts/stack.sh
node dist/bench/index.js "$@"
