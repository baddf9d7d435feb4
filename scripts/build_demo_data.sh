#!/usr/bin/env bash
# Build the sammed-demo-3d train / validation / held-out folders from redistributable data only:
# Debian's mricron-data, insighttoolkit5-examples and invesalius-examples, the data files inside the
# nilearn, TotalSegmentator and dipy wheels (unzipped, not installed), and ../shared/data.
# Usage: bash scripts/build_demo_data.sh OUT   (needs root for apt-get, and the project venv)
set -euo pipefail
out=${1:?usage: build_demo_data.sh OUT}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq mricron-data insighttoolkit5-examples invesalius-examples >/dev/null
fi
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$python" -m pip download --no-deps -q -d "$wheels" nilearn==0.14.1 totalsegmentator==2.18.0 dipy==1.12.1
extra="$out/external"
mkdir -p "$extra/nilearn" "$extra/totalseg" "$extra/dipy"
unzip -o -q -j "$wheels"/nilearn-*.whl 'nilearn/datasets/data/mni_icbm152_*' -d "$extra/nilearn"
unzip -o -q -j "$wheels"/totalsegmentator-*.whl 'totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz' -d "$extra/totalseg"
unzip -o -q -j "$wheels"/dipy-*.whl 'dipy/data/files/aniso_vox.nii.gz' -d "$extra/dipy"
"$python" -m sammed.training.demo_data "$out" --shared-data "$here/../shared/data" \
    --nilearn-data "$extra/nilearn" --totalseg-data "$extra/totalseg" --dipy-data "$extra/dipy"
