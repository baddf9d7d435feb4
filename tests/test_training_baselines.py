"""Classical baselines (random walker, region growing) and their run through the clicks-N harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sammed.evaluation import EvalSettings, load_dataset, run_evaluation
from sammed.evaluation.baselines import BaselineClicksProtocol, RandomWalker, RegionGrowing
from sammed.evaluation.metrics import dice
from sammed.io.image import Geometry, Image
from sammed.io.writers import write_image


def _phantom() -> tuple[Image, np.ndarray, np.ndarray]:
    """A bright ball and a darker box on a noisy background, 1 x 1 x 2 mm voxels."""
    rng = np.random.default_rng(0)
    i, j, k = np.indices((48, 48, 24))
    ball = (i - 16) ** 2 + (j - 24) ** 2 + (2 * (k - 12)) ** 2 <= 9**2
    box = (i >= 30) & (i < 42) & (j >= 10) & (j < 40) & (k >= 6) & (k < 18)
    array = 100 + rng.normal(0, 10, ball.shape)
    array[ball] += 200
    array[box] += 100
    geometry = Geometry(ball.shape, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    return Image(array.astype(np.float32), geometry), ball, box


@pytest.mark.parametrize("method", [RandomWalker(margin_mm=20), RegionGrowing()])
def test_one_click_segments_a_contrasted_object(method):
    image, ball, box = _phantom()
    session = method.open(image)
    mask = session.add_point((16, 24, 12), positive=True, object_id=1)
    assert dice(mask, ball) > 0.85
    mask2 = session.add_point((36, 25, 12), positive=True, object_id=2)
    assert dice(mask2, box) > 0.8
    labels = session.label_map()
    assert labels[16, 24, 12] == 1 and labels[36, 25, 12] == 2


def test_negative_click_removes_a_leak_in_region_growing():
    # A noisy box touching a smooth brighter ball: growing from the box leaks into the ball; the
    # ball's own narrow interval excludes the box, so a negative click there removes the leak.
    rng = np.random.default_rng(1)
    i, j, k = np.indices((48, 48, 24))
    box = (i >= 10) & (i < 30) & (j >= 10) & (j < 40) & (k >= 4) & (k < 20)
    ball = (i - 36) ** 2 + (j - 25) ** 2 + (k - 12) ** 2 <= 7**2
    array = 100 + rng.normal(0, 2, box.shape)
    array[box] = 200 + rng.normal(0, 15, int(box.sum()))
    array[ball] = 250 + rng.normal(0, 2, int(ball.sum()))
    image = Image(array.astype(np.float32), Geometry(box.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
    session = RegionGrowing(multiplier=5.0, iterations=0, initial_radius=2).open(image)
    leaked = session.add_point((20, 25, 12), positive=True)
    assert leaked[36, 25, 12] and not leaked[2, 2, 2]
    fixed = session.add_point((36, 25, 12), positive=False)
    assert not fixed[36, 25, 12] and fixed[20, 25, 12]
    assert dice(fixed, box & ~ball) > 0.9


def test_baselines_run_in_the_clicks_protocol(tmp_path: Path):
    image, ball, box = _phantom()
    labels = (ball * 1 + box * 2).astype(np.uint8)
    root = tmp_path / "ds"
    write_image(image, root / "imagesTr" / "p_0000.nii.gz")
    write_image(image.with_array(labels), root / "labelsTr" / "p.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "ball": 1, "box": 2},
                                                   "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz"}))
    settings = EvalSettings(interactions=3, seed=233, nsd_tolerance_mm=1.0)
    report = run_evaluation(RegionGrowing(), load_dataset(root), BaselineClicksProtocol(), settings,
                            tmp_path / "out", run_info={"model": "region-growing"}, progress=False)
    rows = report.rows
    assert [(r["class"], r["interaction"]) for r in rows] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert all(r["prompt"] in ("click+", "click-") for r in rows)
    # The rows are the method's own result for the recorded clicks.
    replay = RegionGrowing().open(image)
    for row in rows[:3]:
        point = tuple(int(v) for v in row["coords"].split())
        mask = replay.add_point(point, positive=row["prompt"] == "click+", object_id=1)
        assert dice(mask, ball) == pytest.approx(row["dice"])
