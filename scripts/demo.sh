#!/usr/bin/env bash
# The main job: segment the bundled CT (a click in the liver) and write the mask.
# Usage: scripts/demo.sh --checkpoint PATH/TO/sam_med3d_turbo.pth [--out liver_mask.nii.gz]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
sample=$(.venv/bin/python -c "from sammed.data import SAMPLE_CT; print(SAMPLE_CT)")
point=$(.venv/bin/python -c "from sammed.data import SAMPLE_CT_LIVER_VOXEL as p; print(','.join(map(str, p)))")
out="liver_mask.nii.gz"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
exec .venv/bin/sammed segment "$sample" --point "$point" --out "$out" "${args[@]}"
