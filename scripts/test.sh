#!/usr/bin/env bash
# README command 2: set up the environment (if missing) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast part, or
# `-n 0` to run in this one process. The files run side by side on up to 4 cores (pytest-xdist,
# one file per worker: a file's module-scoped servers start once); SAGE_ADA_TEST_WORKERS overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-packages.sh   # chromium (browser tests) and postgresql (team servers)
source scripts/env.sh
cores=$(nproc 2>/dev/null || echo 1)
workers=${SAGE_ADA_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec python -m pytest -n "$workers" --dist loadfile "$@"
