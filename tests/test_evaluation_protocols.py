"""The 3D protocols with the tiny SAM-Med3D fixture weights on real volumes.

* ``sam-med3d-official`` equals the official pipeline (``validate_paired_img_gt`` + its metric)
  after 1 and after 3 clicks, and reproduces the recorded official first clicks;
* ``clicks-N`` and ``cvpr25`` rows are what a fresh :class:`Session` gives when the recorded
  prompts are replayed, and the prompts follow their protocol's rules;
* ``sam-med3d-paper`` builds its ROI at 1.5 mm and scores the best round as the paper did.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sammed.evaluation import EvalSettings, dice, get_protocol, load_dataset, resolve_protocol
from sammed.evaluation.datasets import EvalCase
from sammed.evaluation.simulators import cvpr25_click
from sammed.inference import Session
from sammed.io import read_image
from sammed.models import build_model

pytest.importorskip("torchio")
surface_distance = pytest.importorskip("surface_distance")

PREPROC = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "sam_med3d" / "preproc"


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return build_model("sam-med3d-tiny", checkpoint=tiny_checkpoint)


@pytest.fixture(scope="module")
def mr_case(data_dir, tmp_path_factory) -> EvalCase:
    """The small MR example with two neighbouring classes kept (right kidney, liver)."""
    folder = data_dir / "totalsegmentator_examples"
    label = sitk.ReadImage(str(folder / "example_seg_mr.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[~np.isin(array, (2, 5))] = 0
    kept = sitk.GetImageFromArray(array)
    kept.CopyInformation(label)
    path = tmp_path_factory.mktemp("mr") / "mr_three.nii.gz"
    sitk.WriteImage(kept, str(path))
    return EvalCase("mr01", folder / "example_mr_sm.nii.gz", label=path, label_names={2: "kidney_right", 5: "liver"})


def _settings(protocol, clicks: int, classes=None) -> EvalSettings:
    return EvalSettings(interactions=clicks, seed=233, nsd_tolerance_mm=protocol.default_tolerance_mm,
                        classes=classes)


def _rows(result, interaction: int, track: str | None = None) -> dict:
    return {r["class"]: r for r in result.rows if r["interaction"] == interaction and track in (None, r["track"])}


# --------------------------------------------------------------------------- official


def test_official_equals_official_pipeline_after_1_and_3_clicks(tiny, mr_case, tmp_path):
    from sammed.evaluation.official_pipeline import validate_paired_img_gt

    protocol = get_protocol("sam-med3d-official")
    result = protocol.run_case(tiny, mr_case, _settings(protocol, 3))
    gt_image = sitk.ReadImage(str(mr_case.label))
    gt = sitk.GetArrayFromImage(gt_image)
    spacing_zyx = gt_image.GetSpacing()[::-1]
    for clicks in (1, 3):
        out = tmp_path / f"official_{clicks}.nii.gz"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate_paired_img_gt(tiny, mr_case.image, mr_case.label, out, num_clicks=clicks)
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        rows = _rows(result, clicks)
        assert sorted(rows) == [2, 5]
        for value, row in rows.items():
            p, g = pred == value, gt == value
            assert row["dice"] == 2 * np.logical_and(p, g).sum() / (p.sum() + g.sum())  # compute_metrics' DSC
            distances = surface_distance.compute_surface_distances(g, p, spacing_zyx)
            reference_nsd = surface_distance.compute_surface_dice_at_tolerance(distances, 1.0)
            assert row["nsd"] == pytest.approx(reference_nsd, abs=1e-4)
            assert row["pred_voxels"] == p.sum() and row["gt_voxels"] == g.sum()
    first = _rows(result, 1)
    assert all(r["prompt"] == "click+" for r in first.values())  # the first click is a GT voxel
    assert [r["interaction"] for r in result.rows] == [1, 1, 2, 2, 3, 3]
    assert set(result.previews) == {"2", "5"}


@pytest.mark.slow
def test_official_reproduces_recorded_first_clicks(tiny):
    """15 classes of the preprocessing fixture: every first click as the official code drew it."""
    expected = json.loads((PREPROC / "preproc_expected.json").read_text())
    case = EvalCase("amos_0013", PREPROC / "synthetic_ct_amos_0013_grid.nii.gz",
                    label=PREPROC / "amos_0013_label.nii.gz")
    protocol = get_protocol("sam-med3d-official")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = protocol.run_case(tiny, case, _settings(protocol, 1))
    rows = _rows(result, 1)
    assert sorted(rows) == expected["categories"]
    for value, row in rows.items():
        click = expected["per_class"][str(value)]["click"]
        assert row["coords"] == " ".join(map(str, click["point_A0A1A2"]))
        assert row["prompt"] == ("click+" if click["label"] == 1 else "click-")


def test_official_class_selection_by_name(tiny, mr_case):
    protocol = get_protocol("sam-med3d-official")
    result = protocol.run_case(tiny, mr_case, _settings(protocol, 1, classes=("LIVER",)))
    assert [(r["class"], r["class_name"]) for r in result.rows] == [(5, "liver")]


# --------------------------------------------------------------------------- prompt-centred


def _replayed_session(tiny, case: EvalCase, rows: list[dict], classes: list[int]) -> tuple[Session, dict]:
    """A fresh session fed the prompts the rows recorded; per interaction the merged label map."""
    session = Session(tiny, read_image(case.image))
    maps = {}
    for interaction in sorted({r["interaction"] for r in rows}):
        for r in (r for r in rows if r["interaction"] == interaction):
            oid = classes.index(r["class"]) + 1
            coords = [int(v) for v in r["coords"].split()] if r["coords"] else []
            if r["prompt"] == "box":
                session.add_box(coords[:3], coords[3:], object_id=oid)
            elif r["prompt"]:
                session.add_point(coords, positive=r["prompt"] == "click+", object_id=oid)
        maps[interaction] = {v: session.mask(classes.index(v) + 1) for v in classes}, session.label_map()
    return session, maps


def test_clicks_n_rows_are_the_user_path(tiny, mr_case):
    protocol, clicks = resolve_protocol("clicks-2", None)
    result = protocol.run_case(tiny, mr_case, _settings(protocol, clicks))
    assert len(result.rows) == 4
    gt = read_image(mr_case.label).array
    _, maps = _replayed_session(tiny, mr_case, result.rows, [2, 5])
    for r in result.rows:
        masks, _ = maps[r["interaction"]]
        assert r["dice"] == dice(masks[r["class"]], gt == r["class"])  # each class on its own mask
    for r in result.rows:
        if r["interaction"] == 1:
            assert r["prompt"] == "click+" and gt[tuple(int(v) for v in r["coords"].split())] == r["class"]


def test_cvpr25_box_then_error_centre_clicks(tiny, mr_case):
    protocol = get_protocol("cvpr25")
    assert protocol.default_tolerance_mm == 2.0
    result = protocol.run_case(tiny, mr_case, _settings(protocol, 2))
    assert sorted({r["interaction"] for r in result.rows}) == [1, 2, 3]  # box + 2 clicks
    gt = read_image(mr_case.label).array
    _, maps = _replayed_session(tiny, mr_case, result.rows, [2, 5])
    for r in result.rows:
        _, merged = maps[r["interaction"]]
        lookup = np.array([0, 2, 5])
        assert r["dice"] == dice(lookup[merged] == r["class"], gt == r["class"])  # on the merged map
        if r["interaction"] == 1:
            assert r["prompt"] == "box"
            corners = [int(v) for v in r["coords"].split()]
            ks = np.nonzero(gt == r["class"])[2]
            assert (corners[2], corners[5]) == (ks.min(), ks.max())  # the GT's z range
        else:
            _, previous = maps[r["interaction"] - 1]
            expected = cvpr25_click((lookup[previous] == r["class"]).transpose(2, 1, 0),
                                    (gt == r["class"]).transpose(2, 1, 0))
            assert r["coords"] == " ".join(str(v) for v in reversed(expected.point))
            assert r["prompt"] == ("click+" if expected.positive else "click-")


# --------------------------------------------------------------------------- paper


def test_paper_protocol_roi_and_best_round(tiny, mr_case):
    protocol = get_protocol("sam-med3d-paper")
    result = protocol.run_case(tiny, mr_case, _settings(protocol, 3))
    assert [(r["class"], r["interaction"]) for r in result.rows] == [(2, 1), (2, 2), (2, 3), (5, 1), (5, 2), (5, 3)]
    original = read_image(mr_case.label).array
    for r in result.rows:
        # 3 mm -> 1.5 mm: every GT voxel becomes about 8 ROI voxels, nothing is cropped here.
        assert r["gt_voxels"] == pytest.approx(8 * (original == r["class"]).sum(), rel=0.1)
        assert r["pred_voxels"] <= 128**3
    for value in (2, 5):
        rows = [r for r in result.rows if r["class"] == value]
        assert [r["dice_best"] for r in rows] == list(np.maximum.accumulate([r["dice"] for r in rows]))
        assert rows[0]["prompt"] == "click+"  # round 1 clicks the core of the missed object


def test_protocol_names():
    assert resolve_protocol("clicks-N", 4)[1] == 4 and resolve_protocol("clicks-7", None)[1] == 7
    assert resolve_protocol("cvpr25", None)[1] == 5
    from sammed.errors import SammedError

    with pytest.raises(SammedError, match="asks for 7 clicks"):
        resolve_protocol("clicks-7", 3)
    with pytest.raises(SammedError, match="unknown protocol"):
        resolve_protocol("nnunet", None)


def test_dataset_feeds_protocol(tiny, data_dir, tmp_path):
    """A single pair from the shared data goes through ``load_dataset`` into a protocol."""
    folder = data_dir / "totalsegmentator_examples"
    ds = load_dataset(folder / "example_ct_sm.nii.gz", label=folder / "example_seg.nii.gz")
    protocol = get_protocol("clicks-N")
    result = protocol.run_case(tiny, ds.cases[0], _settings(protocol, 1, classes=("2",)))
    assert [(r["case"], r["class"], r["class_name"]) for r in result.rows] == [("example_ct_sm", 2, "2")]
