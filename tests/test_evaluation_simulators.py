"""Click and box simulators: the rules of each published protocol, seeded and deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sammed.evaluation import simulators as S
from sammed.evaluation.official_clicks import random_sample_next_click


def _blob(shape=(20, 22, 24)) -> np.ndarray:
    gt = np.zeros(shape, dtype=bool)
    gt[4:14, 6:16, 5:19] = True
    return gt


# --------------------------------------------------------------------------- official


def test_official_click_is_the_official_sampler():
    gt = _blob()
    pred = np.zeros_like(gt)
    pred[8:18, 6:16, 5:19] = True  # misses rows 4-7, overshoots rows 14-17
    for seed in range(5):
        ours = S.official_click(pred, gt, np.random.RandomState(seed))
        point, label = random_sample_next_click(torch.from_numpy(pred), torch.from_numpy(gt),
                                                rng=np.random.RandomState(seed))
        assert ours.point == tuple(point.reshape(-1).tolist()) and ours.label == int(label)
        assert ours.positive == bool(gt[ours.point]) and pred[ours.point] != gt[ours.point]


def test_official_first_click_is_a_gt_voxel():
    gt = _blob()
    clicks = {S.official_click(np.zeros_like(gt), gt, np.random.RandomState(s)).point for s in range(20)}
    assert len(clicks) > 15 and all(gt[p] for p in clicks)


# --------------------------------------------------------------------------- paper era


def test_paper_rounds_1_2_click_the_core_then_random_errors():
    gt = torch.from_numpy(_blob())[None, None]
    empty = torch.zeros(gt.shape)
    depth = ndimage.distance_transform_edt(np.pad(_blob(), 1))[1:-1, 1:-1, 1:-1]
    for seed in range(10):
        for round_number in (1, 2):
            click = S.paper_click(empty, gt, round_number, np.random.RandomState(seed))
            assert click.positive and depth[click.point] > depth.max() / 2  # the eroded core
    later = {S.paper_click(empty, gt, 3, np.random.RandomState(s)).point for s in range(40)}
    assert any(depth[p] <= depth.max() / 2 for p in later)  # anywhere in the error region


def test_paper_click_thresholds_logits_and_stops_when_perfect():
    gt = torch.from_numpy(_blob())[None, None]
    logits = torch.where(gt, 0.7, 0.3)  # > 0.5 exactly on the GT: no error left
    assert S.paper_click(logits, gt, 1, np.random.RandomState(0)) is None
    assert S.paper_click(logits, gt, 5, np.random.RandomState(0)) is None
    low = torch.where(gt, 0.4, 0.3)  # positive logits, but under the 0.5 threshold: all missed
    assert S.paper_click(low, gt, 3, np.random.RandomState(0)).positive


# --------------------------------------------------------------------------- SAM-Med2D


def test_med2d_box_is_the_largest_component_with_exclusive_max():
    mask = np.zeros((30, 40), dtype=bool)
    mask[2:5, 3:6] = True  # small component
    mask[10:20, 12:31] = True  # large component
    mask[20, 31] = True  # diagonal neighbour: 8-connected to the large one
    assert S.med2d_box(mask) == (12, 10, 32, 21)
    with pytest.raises(ValueError):
        S.med2d_box(np.zeros((4, 4)))


def test_med2d_points():
    gt = np.zeros((30, 40), dtype=bool)
    gt[10:20, 12:30] = True
    first = S.med2d_first_point(gt, np.random.RandomState(1))
    x, y = first.point
    assert first.positive and gt[y, x]
    assert first == S.med2d_first_point(gt, np.random.RandomState(1))
    empty = S.med2d_first_point(np.zeros_like(gt), np.random.RandomState(1))
    assert not empty.positive
    pred = np.zeros_like(gt)
    pred[10:20, 20:35] = True
    for seed in range(20):
        click = S.med2d_next_point(pred, gt, np.random.RandomState(seed))
        x, y = click.point
        assert pred[y, x] != gt[y, x] and click.positive == gt[y, x]
    assert S.med2d_next_point(gt, gt, np.random.RandomState(0)) is None


# --------------------------------------------------------------------------- CVPR 2025


def test_cvpr25_box_middle_slice_and_jitter():
    gt = np.zeros((12, 300, 512), dtype=bool)  # (z, y, x)
    gt[3:9, 100:150, 200:260] = True
    gt[9, 120:130, 210:220] = True
    z = np.nonzero(gt)[0]
    shifts = set()
    for seed in range(30):
        box = S.cvpr25_box(gt, np.random.RandomState(seed))
        assert (box.z_min, box.z_max, box.z_mid) == (3, 9, int(z[len(z) // 2]))
        shift = np.random.RandomState(seed).randint(0, 6)
        assert (box.x_min, box.x_max) == (200 - int(shift * 2), 259 + int(shift * 2))
        assert (box.y_min, box.y_max) == (100 - int(shift * 300 / 256), 149 + int(shift * 300 / 256))
        shifts.add(shift)
    assert shifts == set(range(6))
    edge = np.zeros((3, 20, 20), dtype=bool)
    edge[1, 0:5, 15:20] = True
    box = S.cvpr25_box(edge, np.random.RandomState(3))
    assert box.y_min == 0 and box.x_max == 19  # clipped to the image


def test_cvpr25_click_at_centre_of_largest_error():
    gt = np.zeros((20, 30, 30), dtype=bool)
    gt[2:18, 2:28, 2:28] = True
    pred = gt.copy()
    pred[5:12, 6:13, 6:13] = False  # a 7^3 miss: the largest error
    pred[15:17, 20:22, 20:22] = False  # a small miss
    click = S.cvpr25_click(pred, gt)
    assert click.positive and click.point == (8, 9, 9)  # the unique deepest voxel
    over = np.zeros_like(gt)
    over[0:2, 0:3, 0:3] = True
    click = S.cvpr25_click(gt | over, gt)
    assert not click.positive and over[click.point]
    assert S.cvpr25_click(gt, gt) is None


def test_cvpr25_click_ties_are_fixed_seed_picks():
    gt = np.zeros((10, 10, 40), dtype=bool)
    gt[2:7, 2:7, 5:35] = True  # a rod: the voxels of its axis share the maximal depth
    click = S.cvpr25_click(np.zeros_like(gt), gt)
    assert click == S.cvpr25_click(np.zeros_like(gt), gt)
    depth = S._component_depth(gt)
    ties = np.argwhere(depth == depth.max())
    assert len(ties) > 1 and {tuple(t[:2]) for t in ties} == {(4, 4)}
    assert click.point == tuple(ties[np.random.RandomState(42).choice(len(ties))])


def test_cvpr25_thin_side_has_no_margin():
    """A component less than 4 voxels thick gets no background margin on that axis (upstream)."""
    gt = np.zeros((5, 30, 30), dtype=bool)
    gt[2, 5:25, 5:25] = True  # one slice thick
    depth = S._component_depth(gt)
    assert depth.max() == 10.0  # in-plane distance, the slice edge is not background
