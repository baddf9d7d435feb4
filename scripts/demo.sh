#!/usr/bin/env bash
# The main job: segment the bundled CT (a click in the liver) and write the mask.
#
# Usage: scripts/demo.sh [--out liver_mask.nii.gz]
#            offline, with sammed's own bundled model sammed-demo-3d (no download)
#        scripts/demo.sh --checkpoint PATH/TO/sam_med3d_turbo.pth [--out ...]
#            with the published SAM-Med3D-turbo weights (a file; or --checkpoint sam-med3d-turbo
#            to fetch and cache them by name)
# Other options are passed on to 'sammed segment' (e.g. --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
py=.venv/bin/python
sample=$($py -c "from sammed.data import SAMPLE_CT; print(SAMPLE_CT)")
point=$($py -c "from sammed.data import SAMPLE_CT_LIVER_VOXEL as p; print(','.join(map(str, p)))")
out="liver_mask.nii.gz"
checkpoint=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --checkpoint) checkpoint="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$checkpoint" ]; then
  model=(--model sam-med3d-turbo --checkpoint "$checkpoint")
else
  # Named, not given by path: the bundled weights resolve by name (no download, works offline).
  model=(--model sammed-demo-3d)
  echo "note: sammed-demo-3d is a tiny demo model trained on a CPU (held-out Dice about 0.2 after one click;" \
       "see sammed/data/MODEL_CARD_sammed-demo-3d.md). For real segmentation pass --checkpoint sam-med3d-turbo" \
       "(downloaded once into the cache) or a path to sam_med3d_turbo.pth." >&2
fi
.venv/bin/sammed segment "$sample" --point "$point" --out "$out" "${model[@]}" "${args[@]}"
echo "mask: $(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
