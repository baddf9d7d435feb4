"""Dice / IoU / NSD / HD95 against DeepMind's ``surface-distance`` package on real masks.

Pairs of real masks: TotalSegmentator's ``example_seg`` and the 30 matching slices of
``example_seg_fast_force_split`` (two model runs on the same CT, so they disagree like a
prediction and a reference do), and SA-Med2D demo masks against shifted copies of themselves.
Spacings: the files' own (3 mm iso), and anisotropic ones in every axis order.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from sammed.evaluation import dice, hd95, iou, nsd
from sammed.evaluation.metrics import mask_metrics

surface_distance = pytest.importorskip("surface_distance")

SPACINGS_3D = [(3.0, 3.0, 3.0), (0.7, 1.3, 4.5), (5.0, 0.8, 0.8)]
CLASSES = [1, 2, 5, 7, 52]  # spleen, right kidney, liver, pancreas, aorta


def _ijk(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


@pytest.fixture(scope="module")
def seg_pair(data_dir):
    folder = data_dir / "totalsegmentator_examples"
    reference = _ijk(folder / "example_seg.nii.gz")
    other = _ijk(folder / "example_seg_fast_force_split.nii.gz")[:, :, 82:112]
    assert reference.shape == other.shape
    return reference, other


def _reference(gt: np.ndarray, pred: np.ndarray, spacing, tolerance: float) -> tuple[float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = surface_distance.compute_surface_distances(gt, pred, spacing)
        return (
            float(surface_distance.compute_dice_coefficient(gt, pred)),
            float(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance)),
            float(surface_distance.compute_robust_hausdorff(distances, 95)),
        )


@pytest.mark.parametrize("spacing", SPACINGS_3D)
@pytest.mark.parametrize("label", CLASSES)
def test_3d_metrics_match_deepmind(seg_pair, label, spacing):
    reference, other = seg_pair
    gt, pred = reference == label, other == label
    assert gt.any() and pred.any() and (gt != pred).any()
    for tolerance in (1.0, 2.0):
        ref_dice, ref_nsd, ref_hd = _reference(gt, pred, spacing, tolerance)
        assert dice(pred, gt) == pytest.approx(ref_dice, abs=1e-6)
        assert nsd(pred, gt, spacing, tolerance) == pytest.approx(ref_nsd, abs=1e-4)
    assert hd95(pred, gt, spacing) == pytest.approx(ref_hd, abs=1e-3)
    overlap = np.logical_and(gt, pred).sum()
    assert iou(pred, gt) == pytest.approx(overlap / np.logical_or(gt, pred).sum(), abs=1e-12)


def test_anisotropy_matters(seg_pair):
    """The spacing is really used, in the arrays' axis order."""
    reference, other = seg_pair
    gt, pred = reference == 7, other == 7
    values = {sp: (nsd(pred, gt, sp, 1.0), hd95(pred, gt, sp)) for sp in [(0.7, 1.3, 4.5), (4.5, 1.3, 0.7)]}
    first, second = values.values()
    assert first[0] != second[0] and first[1] != second[1]
    for sp, (value_nsd, value_hd) in values.items():
        _, ref_nsd, ref_hd = _reference(gt, pred, sp, 1.0)
        assert value_nsd == pytest.approx(ref_nsd, abs=1e-4) and value_hd == pytest.approx(ref_hd, abs=1e-3)


def _demo_masks(data_dir) -> list[np.ndarray]:
    folder = data_dir / "sammed2d_demo_2d" / "masks"
    paths = [folder / name for name in ("amos_0004_75_liver_000.png", "s0114_111_heart_myocardium_000.png",
                                        "s0619_32_colon_000.png")]
    return [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0 for p in paths]


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.6, 2.2)])
def test_2d_metrics_match_deepmind(data_dir, spacing):
    for gt in _demo_masks(data_dir):
        pred = np.roll(gt, 3, axis=0) | np.roll(gt, -2, axis=1)
        ref_dice, ref_nsd, ref_hd = _reference(gt, pred, spacing, 1.5)
        assert dice(pred, gt) == pytest.approx(ref_dice, abs=1e-6)
        assert nsd(pred, gt, spacing, 1.5) == pytest.approx(ref_nsd, abs=1e-4)
        assert hd95(pred, gt, spacing) == pytest.approx(ref_hd, abs=1e-3)


def test_identical_masks(seg_pair):
    gt = seg_pair[0] == 2
    assert dice(gt, gt) == 1.0 and iou(gt, gt) == 1.0
    assert nsd(gt, gt, (1.0, 2.0, 3.0), 0.0) == pytest.approx(1.0)
    assert hd95(gt, gt, (1.0, 2.0, 3.0)) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((6, 7, 8), dtype=bool)
    full = empty.copy()
    full[2:4, 2:5, 3:6] = True
    spacing = (1.0, 1.0, 2.0)
    for f in (dice, iou):
        assert math.isnan(f(empty, empty))
        assert f(full, empty) == 0.0 and f(empty, full) == 0.0
    assert math.isnan(nsd(empty, empty, spacing, 1.0)) and math.isnan(hd95(empty, empty, spacing))
    assert nsd(full, empty, spacing, 1.0) == 0.0 and nsd(empty, full, spacing, 1.0) == 0.0
    assert hd95(full, empty, spacing) == math.inf and hd95(empty, full, spacing) == math.inf
    row = mask_metrics(empty, full, spacing, 1.0)
    assert row == {"dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": math.inf, "gt_voxels": 18, "pred_voxels": 0}


def test_mask_metrics_equals_single_metrics(seg_pair):
    reference, other = seg_pair
    gt, pred = reference == 7, other == 7
    spacing = (0.7, 1.3, 4.5)
    row = mask_metrics(pred, gt, spacing, 2.0)
    assert row["dice"] == dice(pred, gt) and row["iou"] == iou(pred, gt)
    assert row["nsd"] == nsd(pred, gt, spacing, 2.0) and row["hd95"] == hd95(pred, gt, spacing)
    assert row["gt_voxels"] == int(gt.sum()) and row["pred_voxels"] == int(pred.sum())


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1)), "differ in shape"),
        ((np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1)), "spacing"),
        ((np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 0, 1)), "spacing"),
        ((np.zeros(3), np.zeros(3), (1,)), "2D or 3D"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        hd95(*args)


def test_mask_metrics_on_masks_touching_the_border(seg_pair):
    """Cropping to the union must not change anything when the masks reach the volume edge."""
    reference, other = seg_pair
    gt, pred = reference == 5, other == 5
    gt_edge, pred_edge = gt.copy(), pred.copy()
    gt_edge[0, 40:60, :] = True  # a slab on the i = 0 face and through every k slice
    pred_edge[0, 45:65, :] = True
    row = mask_metrics(pred_edge, gt_edge, (0.7, 1.3, 4.5), 1.0)
    _, ref_nsd, ref_hd = _reference(gt_edge, pred_edge, (0.7, 1.3, 4.5), 1.0)
    assert row["nsd"] == pytest.approx(ref_nsd, abs=1e-4) and row["hd95"] == pytest.approx(ref_hd, abs=1e-3)
    assert row["dice"] == dice(pred_edge, gt_edge)
