#!/usr/bin/env bash
# Lint and type checks, run by scripts/test.sh before pytest (and by hand: bash scripts/lint.sh).
# ruff covers the whole tree; mypy checks the public modules whose signatures others build on.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy src/sammed/io src/sammed/prompts.py src/sammed/geometry.py src/sammed/models/registry.py \
    src/sammed/models/promptable.py src/sammed/inference
