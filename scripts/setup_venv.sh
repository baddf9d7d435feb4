#!/usr/bin/env bash
# Create (or update) the project's virtual environment .venv in the repository root.
# Usage: scripts/setup_venv.sh [EXTRAS]   e.g. "test" -> pip install -e ".[test]"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch may pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
# The MONAI Label client (monailabel.client, as Slicer's extension ships it) for the client test:
# --no-deps, because the package's own requirements pull a full training stack; it needs only requests.
if [[ "$extras" == *test* ]]; then
  .venv/bin/python -m pip install --quiet --no-deps "monailabel==0.8.5"
fi
