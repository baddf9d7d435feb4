"""The per-window paste plan (sammed.inference.window_paste) gives the SimpleITK path's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sammed.inference import RoiGrid, Session
from sammed.inference.roi import covered_region, paste_window_mask, window_logits_to_region
from sammed.inference.window_paste import ERROR_MARGIN, _itk_trilinear, plan_for
from sammed.io import Geometry, Image, read_image
from sammed.models import build_model


def _upscale(low: np.ndarray) -> np.ndarray:
    return F.interpolate(torch.from_numpy(low)[None, None], size=(128,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy()


def _full(region, mask, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    if region is not None:
        out[region] = mask
    return out


def _random_axis_aligned(rng: np.random.Generator) -> Geometry:
    """A grid with a random flip/permutation of axes, anisotropic spacing and origin."""
    direction = np.zeros((3, 3))
    direction[rng.permutation(3), np.arange(3)] = rng.choice([-1.0, 1.0], 3)
    spacing = tuple(float(s) for s in rng.choice([0.6, 0.75, 1.0, 1.5, 2.0, 3.1], 3))
    size = tuple(int(n) for n in rng.integers(40, 200, 3))
    return Geometry(size, spacing, tuple(rng.normal(0, 20, 3)), direction)


@pytest.mark.parametrize("seed", range(6))
def test_plan_equals_simpleitk_paste_on_random_grids(seed: int) -> None:
    """White-noise low-res logits (the random-weights worst case: the boundary is everywhere)."""
    rng = np.random.default_rng(seed)
    target = _random_axis_aligned(rng)
    roi = RoiGrid.centered_at(target.index_to_world(np.array(target.size) / 2 + rng.normal(0, 15, 3), "LPS"))
    low = rng.normal(size=(32, 32, 32)).astype(np.float32) + np.float32(rng.normal(0, 0.5))
    logits = _upscale(low)
    plan = plan_for(roi, target, 32)
    assert plan is not None
    expected = _full(*paste_window_mask(logits, roi, target), target.size)
    np.testing.assert_array_equal(_full(*plan.paste(low, logits), target.size), expected)


def test_plan_mask_is_fortran_ordered_view() -> None:
    """Session.mask copies it into a Fortran-ordered array without a transpose."""
    rng = np.random.default_rng(7)
    target = Geometry((160, 150, 60), (0.75, 0.75, 1.5), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    roi = RoiGrid.centered_at(target.index_to_world((80, 75, 30), "LPS"))
    low = rng.normal(size=(32, 32, 32)).astype(np.float32)
    region, mask = plan_for(roi, target, 32).paste(low, _upscale(low))
    assert mask.strides[0] < mask.strides[1] < mask.strides[2]  # i fastest in memory
    assert mask.shape == tuple(s.stop - s.start for s in region)


def test_oblique_grid_has_no_plan() -> None:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    target = Geometry((100, 100, 50), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), rotation)
    assert plan_for(RoiGrid.centered_at(target.index_to_world((50, 50, 25), "LPS")), target, 32) is None
    nearly = np.eye(3)
    nearly[0, 1] = 1e-9  # float32 sform noise: counted as oblique, not silently rounded
    assert plan_for(RoiGrid.centered_at((0.0, 0.0, 0.0)), Geometry((50, 50, 50), (1, 1, 1), (0, 0, 0), nearly), 32) is None


def test_itk_order_interpolation_bound() -> None:
    """Where the plan interpolates itself (values within the composite's margin of 0), its float64
    values match SimpleITK's float32 output to float32 rounding: a mask voxel can differ only
    where |logit| is below that bound (here: never, on 20k voxels with a ragged boundary)."""
    rng = np.random.default_rng(3)
    target = Geometry((120, 110, 60), (0.7, 0.8, 1.9), (3.0, -2.0, 5.0), np.diag([1.0, -1.0, 1.0]))
    roi = RoiGrid.centered_at(target.index_to_world((60, 55, 30), "LPS"))
    logits = _upscale(rng.normal(size=(32, 32, 32)).astype(np.float32))
    plan = plan_for(roi, target, 32)
    region = covered_region(roi, target)
    itk = window_logits_to_region(logits, roi, target, region)  # SimpleITK, float32
    picks = [rng.integers(0, s.stop - s.start, 20000) for s in region]
    by_window: list = [None, None, None]
    inside = np.ones(20000, dtype=bool)
    for t, axis in enumerate(plan.axes):
        position = picks[t] + region[t].start - axis.first
        inside &= (position >= 0) & (position < len(axis.base))
        position = np.clip(position, 0, len(axis.base) - 1)
        by_window[axis.window_axis] = (axis.base[position], axis.upper[position], axis.distance[position])
    ours = _itk_trilinear(logits, by_window)[inside]
    theirs = itk[picks[0], picks[1], picks[2]][inside].astype(np.float64)
    scale = np.abs(logits).max()
    assert np.max(np.abs(ours - theirs)) <= 1e-6 * scale
    assert np.array_equal(ours.astype(np.float32) > 0, theirs > 0)
    assert 1e-6 < ERROR_MARGIN / 10


def _old_path_mask(session: Session, object_id: int = 1) -> np.ndarray:
    """The object's mask recomputed with SimpleITK from its stored low-res logits."""
    state = session.state(object_id)
    with torch.inference_mode():
        logits = session.model.upscale(state.low_res)[0, 0].float().numpy()
    return _full(*paste_window_mask(logits, state.roi, session.image.geometry), session.image.shape)


def _reoriented(image: Image, permutation, flips) -> Image:
    """The same voxels on a grid whose axes are permuted/flipped in the world (still axis-aligned)."""
    direction = np.zeros((3, 3))
    for new_axis, old_axis in enumerate(permutation):
        direction[old_axis, new_axis] = -1.0 if flips[new_axis] else 1.0
    array = np.ascontiguousarray(np.transpose(image.array, permutation))
    spacing = tuple(image.geometry.spacing[a] * (1.0 + 0.3 * n) for n, a in enumerate(permutation))
    return Image(array, Geometry(array.shape, spacing, image.geometry.origin, direction))


@pytest.fixture(scope="module")
def demo_model():
    return build_model("sammed-demo-3d")


@pytest.mark.parametrize("variant", ["file", "reoriented-anisotropic", "oblique"])
def test_session_clicks_equal_simpleitk_paste_on_real_ct(demo_model, data_dir, variant: str) -> None:
    image = read_image(data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz")
    if variant == "reoriented-anisotropic":
        image = _reoriented(image, (1, 0, 2), (True, False, True))
    elif variant == "oblique":
        angle = np.deg2rad(25)
        rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        image = Image(image.array, Geometry(image.shape, image.geometry.spacing, image.geometry.origin, rotation))
    session = Session(demo_model, image)
    centre = np.array(image.shape) // 2
    clicks = [(centre, True), (centre + (4, -3, 2), False), (centre + (-6, 5, -1), True)]
    for position, positive in clicks:
        mask = session.add_point(tuple(int(v) for v in position), positive=positive)
        np.testing.assert_array_equal(mask, _old_path_mask(session))
    plan = session._paste_plans[session.state().roi.key()]
    assert (plan is None) == (variant == "oblique")


def test_non_finite_logits_keep_the_simpleitk_path() -> None:
    rng = np.random.default_rng(5)
    target = Geometry((120, 110, 60), (0.75, 0.75, 1.5), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    roi = RoiGrid.centered_at(target.index_to_world((60, 55, 30), "LPS"))
    low = rng.normal(size=(32, 32, 32)).astype(np.float32)
    low[10, 12, 14] = np.nan
    logits = _upscale(low)
    expected = _full(*paste_window_mask(logits, roi, target), target.size)
    np.testing.assert_array_equal(_full(*plan_for(roi, target, 32).paste(low, logits), target.size), expected)


def test_upscale_other_than_trilinear_keeps_the_simpleitk_path() -> None:
    """A model whose ``upscale`` is not torch's trilinear (align_corners=False) is detected."""
    rng = np.random.default_rng(6)
    target = Geometry((120, 110, 60), (0.75, 0.75, 1.5), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    roi = RoiGrid.centered_at(target.index_to_world((60, 55, 30), "LPS"))
    low = rng.normal(size=(32, 32, 32)).astype(np.float32)
    nearest = np.repeat(np.repeat(np.repeat(low, 4, 0), 4, 1), 4, 2)
    expected = _full(*paste_window_mask(nearest, roi, target), target.size)
    np.testing.assert_array_equal(_full(*plan_for(roi, target, 32).paste(low, nearest), target.size), expected)


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 1e3])
def test_composite_error_is_far_inside_the_margin(magnitude: float) -> None:
    """The float32 composite differs from ITK's float64 interpolation of torch's upscale by far
    less than ERROR_MARGIN * max|low_res|, so deciding by its sign outside the margin is exact."""
    rng = np.random.default_rng(11)
    target = Geometry((90, 80, 40), (0.7, 0.9, 1.7), (1.0, 2.0, -3.0), np.array([[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 1.0]]))
    roi = RoiGrid.centered_at(target.index_to_world((45, 40, 20), "LPS"))
    low = (rng.normal(size=(32, 32, 32)) * magnitude).astype(np.float32)
    plan = plan_for(roi, target, 32)
    values, ranges = plan.composite(low)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in ranges], indexing="ij")  # i, j, k positions
    by_window: list = [None, None, None]
    for t, axis in enumerate(plan.axes):
        p = grids[t].ravel()
        by_window[axis.window_axis] = (axis.base[p], axis.upper[p], axis.distance[p])
    exact = _itk_trilinear(_upscale(low), by_window).reshape(grids[0].shape).transpose(2, 1, 0)
    error = np.max(np.abs(values - exact)) / np.abs(low).max()
    assert error < ERROR_MARGIN / 20, error
