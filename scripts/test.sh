#!/usr/bin/env bash
# README command 2: set up the environment (if missing) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-packages.sh   # chromium (browser tests) and postgresql (team servers)
source scripts/env.sh
exec python -m pytest "$@"
