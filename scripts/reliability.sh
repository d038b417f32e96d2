#!/usr/bin/env bash
# The fault-injection suite (test/reliability/): brings up what it needs as the tests do (Docker,
# base image, build, the Temporal CLI), then runs against its OWN private Temporal dev server and
# Redis, which it kills and restarts; the shared stack is only read from (the Docker engine).
# `npm run reliability -- --only container-kill,docker,manager-kill,temporal,redis` runs a subset.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/defaults.sh
bash scripts/stack.sh
node dist/test/reliability/run.js "$@"
