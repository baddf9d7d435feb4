"""Which logit scale should an initial mask have as SAM-Med3D's mask prompt? (measured, not guessed)

Model ``sammed-demo-3d`` (bundled, offline) on ``sammed.data.SAMPLE_CT`` with TotalSegmentator's
labels of the same scan (``../shared/data/totalsegmentator_examples/example_seg.nii.gz``). For
each organ and each seed (the reference itself; the reference with its upper half cut away),
``Session.add_initial_mask(seed)`` then one positive click (at the reference voxel nearest the
centroid of what the seed misses, or of the organ for a complete seed); Dice of the result
against the reference, for mask prompts of +/-k logits (k = 0 is a zero prompt: the click alone).

    .venv/bin/python scripts/mask_prompt_scale_study.py [--out study.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import sammed.inference.session as session_module
from sammed.data import SAMPLE_CT
from sammed.inference import Session
from sammed.io import read_image
from sammed.models import build_model

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator_examples" / "example_seg.nii.gz"
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "stomach": 6}
SCALES = (0.0, 1.0, 5.0, 10.0, 20.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def nearest_to_centroid(mask: np.ndarray) -> tuple[int, int, int]:
    voxels = np.argwhere(mask)
    return tuple(int(v) for v in voxels[np.argmin(np.linalg.norm(voxels - voxels.mean(axis=0), axis=1))])


def run(scale: float, model, image, seed: np.ndarray, click) -> np.ndarray:
    original = session_module.logits_from_fraction
    session_module.logits_from_fraction = lambda fraction, _s=scale: original(fraction, _s)  # type: ignore[assignment]
    try:
        session = Session(model, image)
        session.add_initial_mask(seed)
        if scale == 0.0:  # the click alone: no mask prompt
            session._objects[1] = session.state(1).__class__(
                **{**session.state(1).__dict__, "low_res": torch.zeros_like(session.state(1).low_res), "seeded": False}
            )
        return session.add_point(click)
    finally:
        session_module.logits_from_fraction = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    image = read_image(SAMPLE_CT)
    labels = read_image(LABELS).array
    model = build_model("sammed-demo-3d", pretrained=True)
    rows = []
    for organ, value in ORGANS.items():
        reference = labels == value
        if reference.sum() < 200:
            continue
        k_values = np.nonzero(reference.any(axis=(0, 1)))[0]
        cut = reference.copy()
        cut[:, :, int(np.median(k_values)) :] = False  # the upper half missing
        seeds = {"complete": (reference, nearest_to_centroid(reference)), "half": (cut, nearest_to_centroid(reference & ~cut))}
        for seed_name, (seed, click) in seeds.items():
            row = {"organ": organ, "seed": seed_name, "seed_dice": dice(seed, reference)}
            for scale in SCALES:
                row[f"k={scale:g}"] = round(dice(run(scale, model, image, seed, click), reference), 3)
            rows.append(row)
            print(json.dumps(row))
    means = {f"k={s:g}": round(float(np.mean([r[f"k={s:g}"] for r in rows])), 3) for s in SCALES}
    print("mean Dice:", json.dumps(means))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "mean": means}, indent=1))


if __name__ == "__main__":
    main()
