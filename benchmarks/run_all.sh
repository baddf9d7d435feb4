#!/usr/bin/env bash
# All speed benchmarks, each printing its table with ratios against a baseline run in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
echo "== SAM-Med3D (benchmarks/bench_3d.py)"; $py benchmarks/bench_3d.py "$@"
echo "== SAM-Med2D (benchmarks/bench_2d.py)"; $py benchmarks/bench_2d.py
echo "== ONNX (benchmarks/bench_onnx.py)"; $py benchmarks/bench_onnx.py
