"""Automatic mode for the 2D models: filtering and NMS on hand-built masks, every family on the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sammed.errors import PromptError
from sammed.inference import AutomaticMaskGenerator2D
from sammed.inference.automatic2d import box_nms, crop_boxes, label_image, stability_score
from sammed.models import REGISTRY, build_model
from test_cli2d import SHRUNKEN, checkpoint, run_cli, shrunken_vit  # noqa: F401  (fixtures)

DEMO = "s0114_111"  # 258 x 181


class _Pipeline:
    mask_threshold = 0.0

    def coords_to_input(self, coords, prepared):
        return coords


class HandBuiltPredictor:
    """Per point prompt three hand-built outputs on a 64 x 64 image:
    0: the image half the point lies in, logits +-8 (stable), IoU 0.95 (left) / 0.93 (right);
    1: the same half at logit 0.5 (unstable: gone when the threshold moves by 1), IoU 0.99;
    2: a 4 x 4 square at the point, stable, IoU 0.5 (below the IoU threshold)."""

    pipeline = _Pipeline()
    prepared = None
    device = torch.device("cpu")

    def set_image(self, image, image_format="RGB"):
        self.size = image.shape[:2]

    def predict_torch(self, coords, labels, boxes=None, mask_input=None, multimask_output=True, return_logits=False):
        out = torch.full((coords.shape[0], 3, 64, 64), -8.0)
        iou = torch.zeros(coords.shape[0], 3)
        for b, (x, y) in enumerate(coords[:, 0].tolist()):
            half = slice(0, 32) if x < 32 else slice(32, 64)
            out[b, 0, :, half] = 8.0
            out[b, 1, :, half] = 0.5
            out[b, 2, int(y) - 2 : int(y) + 2, int(x) - 2 : int(x) + 2] = 8.0
            iou[b] = torch.tensor([0.95 if x < 32 else 0.93, 0.99, 0.5])
        return out, iou, out


def test_filtering_and_nms_on_hand_built_masks() -> None:
    generator = AutomaticMaskGenerator2D(HandBuiltPredictor(), points_per_side=2)
    records = generator.generate(np.zeros((64, 64, 3), np.uint8))
    # 4 points x 3 outputs: the unstable and the low-IoU ones are filtered, the two points of
    # each half give the same box and NMS keeps one: the two halves, best IoU first.
    assert [r.bbox for r in records] == [(0, 0, 31, 63), (32, 0, 31, 63)]
    assert [r.predicted_iou for r in records] == pytest.approx([0.95, 0.93])
    assert all(r.stability_score == 1.0 and r.area == 32 * 64 for r in records)
    labels = label_image(records, (64, 64))
    assert set(np.unique(labels)) == {1, 2} and (labels[:, :32] == 1).all()
    loose = AutomaticMaskGenerator2D(HandBuiltPredictor(), points_per_side=2, pred_iou_thresh=0.0)
    assert len(loose.generate(np.zeros((64, 64, 3), np.uint8))) == 2 + 4  # + the four small squares


def test_nms_stability_and_crops_by_hand() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float32)
    assert box_nms(boxes, torch.tensor([0.5, 0.9, 0.1, 0.2]), 0.7) == [1, 2]
    assert box_nms(boxes, torch.tensor([0.5, 0.9, 0.1, 0.2]), 0.95) == [1, 0, 3, 2]
    logits = torch.zeros(1, 1, 10, 10)
    logits[..., :5, :] = 3.0  # 50 pixels above +1
    logits[..., 5:6, :] = 0.5  # 10 more above -1 only
    assert float(stability_score(logits, 0.0, 1.0)) == pytest.approx(50 / 100)
    boxes_, layers = crop_boxes((100, 200), 1, 512 / 1500)
    assert boxes_[0] == (0, 0, 200, 100) and layers == [0, 1, 1, 1, 1]
    assert all(b[2] <= 200 and b[3] <= 100 for b in boxes_)
    with pytest.raises(PromptError):
        AutomaticMaskGenerator2D(HandBuiltPredictor(), pred_iou_thresh=1.5)


# One fast run per family (SAM-Med2D with a shrunken encoder and random weights, like ViT-L/H in
# test_cli2d); the full-size fixture weights of every other 2D model run in the slow set.
FAMILIES = [
    pytest.param("sam-med2d", True, id="sam-med2d-shrunken"),
    pytest.param("sam-unet-r34", False, id="sam-unet-r34"),
    pytest.param("sam-vit-l", True, id="sam-vit-l-shrunken"),
    *[
        pytest.param(name, False, id=name, marks=pytest.mark.slow)
        for name in ("sam-med2d", "sam-med2d-no-adapter", "sam-unet-r50", "sam-vit-b", "sam-vit-h")
    ],
]


@pytest.mark.parametrize("name, shrunken", FAMILIES)
def test_auto_cli_with_every_2d_family(
    name, shrunken, capsys, tmp_path, data_dir, checkpoint, shrunken_vit, monkeypatch  # noqa: F811
) -> None:
    if shrunken and name == "sam-med2d":
        spec = REGISTRY[name]
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(spec, config=spec.config.with_overrides(**SHRUNKEN)))
        torch.manual_seed(0)
        weights = tmp_path / "small.pth"
        torch.save({"model": build_model(name).state_dict()}, weights)
    else:
        weights = checkpoint(name)
    source = data_dir / "sammed2d_demo_2d" / "images" / f"{DEMO}.png"
    out = tmp_path / "labels.png"
    # Fixture/random weights: thresholds at 0 so that masks come out and their bookkeeping shows.
    code, err = run_cli(capsys, "segment", source, "--model", name, "--auto", "--points-per-side", "4",
                        "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--out", out,
                        "--checkpoint", weights)
    assert code == 0, err
    labels = np.asarray(PILImage.open(out))
    report = json.loads((tmp_path / "labels.json").read_text())
    masks = report["masks"]
    assert labels.shape == (181, 258) and len(masks) >= 1
    assert set(np.unique(labels)) - {0} <= {m["label"] for m in masks}
    for entry in masks:
        x, y, w, h = entry["bbox"]
        rows, cols = np.nonzero(labels == entry["label"])
        if rows.size:  # (a larger mask may be painted over entirely)
            assert x <= cols.min() and cols.max() <= x + w and y <= rows.min() and rows.max() <= y + h
        if name.startswith("sam-unet"):  # no IoU head: ranked by stability, IoU reported as null
            assert entry["predicted_iou"] is None
        else:
            assert isinstance(entry["predicted_iou"], float)
        assert 0.0 <= entry["stability_score"] <= 1.0 and not math.isnan(entry["stability_score"])
    assert f"({len(masks)} masks)" in err


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--point", "10,10"], "give no --point"), (["--pred-iou-thresh", "2"], "between 0 and 1")],
)
def test_auto_cli_bad_input(extra, fragment, capsys, tmp_path, data_dir) -> None:
    source = data_dir / "sammed2d_demo_2d" / "images" / f"{DEMO}.png"
    out = tmp_path / "labels.png"
    code, err = run_cli(capsys, "segment", source, "-m", "sam-med2d", "--auto", *extra, "-o", out,
                        "-c", tmp_path / "never-read.pth")
    lines = [line for line in err.splitlines() if line.startswith("sammed: error:")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert not out.exists()
