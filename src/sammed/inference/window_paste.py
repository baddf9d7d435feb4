"""Window logits -> mask on the original grid without a SimpleITK resample per click.

:func:`sammed.inference.roi.paste_window_mask` upsamples the decoder's low-res logits (torch,
trilinear) to the window, resamples them with SimpleITK (ITK's linear interpolator) onto the
original grid and thresholds at 0: about 0.15 s per click on a full-size CT, most of a
refinement click. When the original grid's axes are parallel to the window's (any flip,
permutation or spacing), each window index depends on one original index, so both
interpolations are separable and their composite along each axis is a small weight matrix
(original index x low-res index, at most 3 non-zeros a row). A :class:`WindowPastePlan` holds
these per-axis tables, built once per window and reused at every click, and per click:

1. computes the composite logits on the original grid as three banded float32 matmuls of the
   low-res logits (restricted to the box that can be positive);
2. decides every voxel whose composite is farther than ``ERROR_MARGIN * max|low_res|`` from 0
   by its sign (the composite's rounding error is about 1e-6 of that scale);
3. interpolates the few voxels within that margin as ITK does, in float64 from the upsampled
   window logits (axis 0, then 1, then 2; ``a + (b - a) * d``; clamped at the faces; cast to
   float32), so they get SimpleITK's sign.

An oblique grid (any non-zero off-axis direction term), non-finite logits, or a model whose
``upscale`` is not trilinear (spot-checked) keep the SimpleITK path.

Exactness: the mask equals SimpleITK's wherever ITK's interpolated logit is not within
rounding error of 0. Bit-identical interpolated values are not guaranteed, because ITK computes
each continuous index through its own matrix products (and the SimpleITK path itself shifts with
its crop's origin), so an index can differ in the last bits (about 1e-13 voxels); a voxel can
then differ only where ``|logit|`` is below about 1e-12 of the largest nearby logit. The tests
(``tests/test_window_paste.py``) find the masks equal on white-noise logits over random grids
and on real-CT sessions, and bound the interpolated values against SimpleITK's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sammed.geometry import RoiGrid, ijk_from_zyx
from sammed.inference.roi import paste_window_mask
from sammed.io.image import Geometry


@dataclass(frozen=True)
class _Axis:
    """Tables for one original-grid axis ``t`` that maps onto window axis ``a``.

    Original indices ``first + n`` for ``n < len(base)`` lie inside the window's buffer
    (ITK's ``[-0.5, size - 0.5)``); ``base`` / ``upper`` are their stencil voxels and
    ``distance`` their interpolation weight, with ITK's clamping already applied.
    """

    window_axis: int
    first: int
    base: np.ndarray  # (n,) intp, floor(index) clamped at 0
    upper: np.ndarray  # (n,) intp, base + 1 clamped at size - 1
    distance: np.ndarray  # (n,) float64, index - base, 0 where ITK uses the base voxel alone


class WindowPastePlan:
    """Precomputed window -> original-grid tables for one window and one grid (axis-aligned)."""

    def __init__(self, roi: RoiGrid, target: Geometry, axes: tuple[_Axis, ...], low_res_size: int) -> None:
        self.roi = roi
        self.target = target
        self.axes = axes  # indexed by original-grid axis t
        # Composite weights (original index -> low-res index) of the two interpolations, per axis.
        upscale = _upscale_matrix(roi.size, low_res_size)
        self._upscale = upscale
        self.weights = tuple(
            (1.0 - ax.distance)[:, None] * upscale[ax.base] + ax.distance[:, None] * upscale[ax.upper] for ax in axes
        )

    def _upscale_agrees(self, low_res: np.ndarray, logits: np.ndarray, scale: float) -> bool:
        """Spot-check that ``logits`` are the trilinear upscale the composite weights assume
        (a model with another ``upscale`` then keeps the SimpleITK path)."""
        n = self.roi.size
        if low_res.shape != (self._upscale.shape[1],) * 3 or logits.shape != (n, n, n):
            return False
        probe = np.random.default_rng(0).integers(0, n, size=(64, 3))
        u = self._upscale
        s = u.shape[1]
        partial = (u[probe[:, 0]] @ low_res.reshape(s, s * s)).reshape(-1, s, s)  # (p, b, c)
        partial = np.einsum("pb,pbc->pc", u[probe[:, 1]], partial)
        expected = np.einsum("pc,pc->p", u[probe[:, 2]], partial)
        found = logits[probe[:, 0], probe[:, 1], probe[:, 2]]
        return bool(np.all(np.abs(expected - found) <= ERROR_MARGIN * scale / 10))

    def composite(self, low_res: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
        """Both interpolations at once, in float32, on the original voxels that can be positive.

        Returns (values laid out [k, j, i], per original axis t the (begin, end) positions into
        its tables), or None when no low-res logit is positive.
        """
        # Low-res box that holds every positive value; an original voxel can be positive only if
        # its composite weights touch it.
        box = []
        for a in range(3):
            others = tuple(x for x in range(3) if x != a)
            hits = np.flatnonzero((low_res > 0).any(axis=others))
            if hits.size == 0:
                return None
            box.append((int(hits[0]), int(hits[-1]) + 1))
        ranges, factors = [], []
        for t, axis in enumerate(self.axes):
            lo, hi = box[axis.window_axis]
            touches = np.flatnonzero(self.weights[t][:, lo:hi].any(axis=1))
            if touches.size == 0:
                return None
            begin, end = int(touches[0]), int(touches[-1]) + 1
            ranges.append((begin, end))
            factors.append(self.weights[t][begin:end].astype(np.float32))
        # Separable composite in float32: [ak, aj, ai] low-res -> [k, j, i] original.
        order = [self.axes[t].window_axis for t in (2, 1, 0)]
        values = np.ascontiguousarray(low_res.transpose(order))
        n = values.shape
        values = values @ factors[0].T  # (ak, aj, i)
        values = _banded(factors[1], values)  # (ak, j, i)
        values = _banded(factors[2], values.reshape(n[0], -1)[None])[0]  # (k, j*i)
        values = values.reshape(len(factors[2]), len(factors[1]), len(factors[0]))
        return values, ranges

    # ------------------------------------------------------------------ per click
    def paste(
        self, low_res: np.ndarray, logits: np.ndarray
    ) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
        """Same result as ``paste_window_mask(logits, roi, target)``: a tight (region, mask).

        ``low_res`` are the decoder's (s, s, s) logits and ``logits`` their trilinear upscale
        (``model.upscale``), both in window order. The mask is a view of an array laid out
        [k, j, i] in memory (Fortran order for [i, j, k]), which ``Session.mask`` copies without
        a transpose.
        """
        low_res = np.asarray(low_res, dtype=np.float32)
        scale = float(np.abs(low_res).max()) if low_res.size else 0.0
        # NaN/inf would spread through the matmuls' zero weights: SimpleITK keeps them local.
        if not np.isfinite(scale) or not self._upscale_agrees(low_res, logits, scale):
            return paste_window_mask(logits, self.roi, self.target)
        composite = self.composite(low_res)
        if composite is None:
            return None, None
        values, ranges = composite
        margin = ERROR_MARGIN * scale
        out = values > margin
        # Where the composite is within its rounding bound of 0, decide as ITK does.
        near = np.flatnonzero((values >= -margin) ^ out)
        if near.size:
            k, j, i = np.unravel_index(near, values.shape)
            by_window: list = [None, None, None]
            for t, index in enumerate((i, j, k)):
                axis = self.axes[t]
                position = index + ranges[t][0]
                by_window[axis.window_axis] = (axis.base[position], axis.upper[position], axis.distance[position])
            exact = _itk_trilinear(np.ascontiguousarray(logits), by_window).astype(np.float32) > 0
            out.reshape(-1)[near] = exact
        return _tight(out, self.axes, ranges)


# The float32 composite differs from ITK's float64 interpolation of torch's float32 upscale by a
# few float32 roundings of values no larger than max|low_res| (about 1e-6 of it); voxels closer
# to 0 than this margin (100x that) are interpolated exactly.
ERROR_MARGIN = 1e-4


def _banded(weights: np.ndarray, values: np.ndarray, rows: int = 8) -> np.ndarray:
    """``weights @ values`` (batched over the first axis of ``values``) for interpolation weights
    with a few non-zeros per row in a band: each block of rows is multiplied with only the
    columns its band touches."""
    out = np.empty((values.shape[0], weights.shape[0], values.shape[2]), dtype=np.float32)
    for start in range(0, weights.shape[0], rows):
        block = weights[start : start + rows]
        used = np.flatnonzero(block.any(axis=0))
        lo, hi = int(used[0]), int(used[-1]) + 1
        out[:, start : start + rows] = block[:, lo:hi] @ values[:, lo:hi]
    return out


def _upscale_matrix(size: int, low_res_size: int) -> np.ndarray:
    """(size, low_res_size) weights of torch's trilinear upscale along one axis (align_corners=False)."""
    scale = low_res_size / size
    source = np.maximum((np.arange(size) + 0.5) * scale - 0.5, 0.0)
    lower = np.floor(source).astype(np.intp)
    upper = np.minimum(lower + 1, low_res_size - 1)
    fraction = source - lower
    matrix = np.zeros((size, low_res_size))
    np.add.at(matrix, (np.arange(size), lower), 1.0 - fraction)
    np.add.at(matrix, (np.arange(size), upper), fraction)
    return matrix


def _itk_trilinear(logits: np.ndarray, by_window) -> np.ndarray:
    """ITK's LinearInterpolateImageFunction (3D) in float64: along axis 0, then 1, then 2."""
    (b0, u0, d0), (b1, u1, d1), (b2, u2, d2) = by_window
    n1, n2 = logits.shape[1], logits.shape[2]
    flat = logits.reshape(-1)

    def at(i, j, k):
        return flat[(i * n1 + j) * n2 + k].astype(np.float64)

    def lerp(a, b, d):
        return a + (b - a) * d

    x00 = lerp(at(b0, b1, b2), at(u0, b1, b2), d0)
    x10 = lerp(at(b0, u1, b2), at(u0, u1, b2), d0)
    x01 = lerp(at(b0, b1, u2), at(u0, b1, u2), d0)
    x11 = lerp(at(b0, u1, u2), at(u0, u1, u2), d0)
    return lerp(lerp(x00, x10, d1), lerp(x01, x11, d1), d2)


def _tight(out: np.ndarray, axes, ranges) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
    """Crop the [k, j, i] result to its True voxels; return ([i, j, k] region, [i, j, k] view)."""
    bounds = []
    for q in range(3):
        others = tuple(a for a in range(3) if a != q)
        hits = np.flatnonzero(out.any(axis=others))
        if hits.size == 0:
            return None, None
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    crop = out[tuple(slice(a, b) for a, b in bounds)]
    region = tuple(
        slice(axes[t].first + ranges[t][0] + bounds[2 - t][0], axes[t].first + ranges[t][0] + bounds[2 - t][1])
        for t in range(3)
    )
    return region, ijk_from_zyx(crop)


def plan_for(roi: RoiGrid, target: Geometry, low_res_size: int) -> WindowPastePlan | None:
    """The plan for pasting ``roi``'s logits onto ``target``; None for an oblique grid.

    Axis-aligned means each column of the grid's direction has exactly one non-zero entry (in
    float64, so a direction with 1e-9 off-diagonal terms counts as oblique): the window index
    along each window axis then depends on a single original index, with no other term to round.
    """
    direction = np.asarray(target.direction, dtype=np.float64)
    if direction.shape != (3, 3) or len(target.size) != 3:
        return None
    nonzero = direction != 0
    if not (np.all(nonzero.sum(axis=0) == 1) and np.all(nonzero.sum(axis=1) == 1)):
        return None
    window = roi.geometry
    wdir = np.asarray(window.direction, dtype=np.float64)
    if np.count_nonzero(wdir - np.diag(np.diag(wdir))):
        return None
    n = roi.size
    axes: list[_Axis | None] = [None, None, None]
    for t in range(3):
        a = int(np.flatnonzero(nonzero[:, t])[0])  # world axis a == window axis a (window is diagonal)
        index = np.arange(int(target.size[t]), dtype=np.float64)
        world = target.origin[a] + (direction[a, t] * target.spacing[t]) * index
        continuous = (world - window.origin[a]) / (wdir[a, a] * window.spacing[a])
        inside = (continuous >= -0.5) & (continuous < n - 0.5)
        where = np.flatnonzero(inside)
        if where.size == 0:
            return None
        first, last = int(where[0]), int(where[-1]) + 1
        continuous = continuous[first:last]
        base = np.maximum(np.floor(continuous), 0).astype(np.intp)
        distance = np.maximum(continuous - base, 0.0)
        upper = np.minimum(base + 1, n - 1)
        axes[t] = _Axis(a, first, base, upper, distance)
    if sorted(ax.window_axis for ax in axes if ax is not None) != [0, 1, 2]:
        return None
    return WindowPastePlan(roi, target, tuple(ax for ax in axes if ax is not None), low_res_size)
