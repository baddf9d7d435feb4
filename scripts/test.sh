#!/usr/bin/env bash
# The test suite: creates .venv with the test extras, then runs pytest (slow parity tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh test
exec .venv/bin/python -m pytest "$@"
