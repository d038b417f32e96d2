#!/usr/bin/env bash
# Brings the whole stack up (scripts/stack.sh) and runs the manager in the foreground:
# the Temporal workers and the Redis command adapter. Ctrl-C stops it gracefully.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/defaults.sh
bash scripts/stack.sh
echo "Temporal UI: ${TEMPORAL_UI_URL:-http://localhost:8233}  (send commands with XADD worker:commands, see README)"
exec node dist/src/manager.js
