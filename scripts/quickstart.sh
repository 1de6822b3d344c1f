#!/usr/bin/env bash
# README command 1: set up, build and version the shipped digits benchmark, then run the
# default active-domain-adaptation flow (Sage, TSF, Ω_S+T, simulated annotators).
# Extra arguments go to `sage-ada run` (e.g. --strategy badge --rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

echo "== data: the digits benchmark (mnist → optdigits), tracked by data.dvc"
sage-ada data digits          # also checks the bytes against data.dvc and caches them
echo "== split: dvc repro split (validated with Great Expectations; the run reuses that proof)"
dvc repro --quiet split

echo "== run: the active-domain-adaptation flow"
sage-ada run "$@"
