"""Scribbles, lassos and initial masks as prompts a point-and-mask model understands.

SAM-Med3D takes points and a dense mask, nothing else, so every richer prompt is turned into
those by a fixed rule, stated here:

* a **scribble** (a polyline of voxel positions) becomes up to ``SCRIBBLE_POINTS`` clicks spaced
  evenly along its length, ends included (SAM-Med3D was trained with a handful of clicks per
  step; many more would be outside what it saw). It sends no box, even to a box model: those
  were trained on whole-object bounding boxes, and a scribble's extent is not one.
* a **lasso** (a closed polygon on one slice) is filled (voxel centres inside, even-odd rule);
  its cells go into the mask prompt (+ or - logits) and up to ``LASSO_POINTS`` voxels inside it
  become clicks of its sign; the filled region is then added to (or removed from) the object.
* an **initial mask** is checked against the image and becomes the object's mask and its mask
  prompt (see :mod:`sammed.inference.mask_prompt`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sammed.errors import PromptError, SammedError
from sammed.io.image import Image

SCRIBBLE_POINTS = 8
LASSO_POINTS = 5
AXES = {"i": 0, "j": 1, "k": 2}


@dataclass(frozen=True)
class LassoEdit:
    """A filled lasso on one slice: kept in the object's state and re-applied after each prediction."""

    axis: int
    index: int
    fill: np.ndarray  # bool, the slice's shape (the two remaining axes in order)
    positive: bool

    def voxels(self) -> np.ndarray:
        """(N, 3) voxel indices (i, j, k) of the filled region."""
        u, v = np.nonzero(self.fill)
        columns = [u, v]
        columns.insert(self.axis, np.full(u.shape, self.index))
        return np.stack(columns, axis=1)

    def apply(self, full: np.ndarray) -> None:
        """Add (positive) or remove (negative) the filled region in a full-image bool mask, in place."""
        index: list = [slice(None)] * 3
        index[self.axis] = self.index
        plane = full[tuple(index)]
        plane[self.fill] = self.positive


def scribble_voxels(voxels_ijk, shape: tuple[int, ...]) -> np.ndarray:
    """Checked (N, 3) float voxel positions of a polyline inside an image of ``shape``."""
    points = np.asarray(voxels_ijk, dtype=np.float64)
    if points.ndim == 1 and points.shape == (3,):
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise PromptError(f"a scribble is a list of voxel positions (i, j, k), got shape {np.shape(voxels_ijk)}")
    if not np.all(np.isfinite(points)):
        raise PromptError("a scribble's voxel positions must be finite numbers")
    size = np.asarray(shape, dtype=np.float64)
    outside = np.any((points < -0.5) | (points > size - 0.5), axis=1)
    if outside.any():
        first = points[np.argmax(outside)]
        raise PromptError(
            f"the scribble leaves the image at voxel {tuple(round(float(x), 1) for x in first)} "
            f"(the image has {tuple(int(s) for s in shape)} voxels)"
        )
    return points


def sample_polyline(points: np.ndarray, count: int = SCRIBBLE_POINTS) -> np.ndarray:
    """``count`` points evenly spaced by arc length along a polyline (its ends included).

    Works in whatever frame ``points`` are in; pass world mm so anisotropic voxels count right.
    """
    if len(points) == 1:
        return points.copy()
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] == 0:
        return points[:1].copy()
    targets = np.linspace(0.0, arc[-1], count)
    return np.stack([np.interp(targets, arc, points[:, d]) for d in range(points.shape[1])], axis=1)


def lasso_fill(polygon, axis: str, index: int, shape: tuple[int, ...]) -> LassoEdit:
    """Fill a closed polygon on slice ``index`` along ``axis`` (vertices: the two other voxel indices)."""
    if axis not in AXES:
        raise PromptError(f"axis must be one of i, j, k, got {axis!r}")
    a = AXES[axis]
    if isinstance(index, bool) or int(index) != index or not 0 <= int(index) < shape[a]:
        raise PromptError(f"slice {index} is outside the image along {axis} (0..{shape[a] - 1})")
    vertices = np.asarray(polygon, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise PromptError(f"a lasso needs at least 3 vertices (u, v), got shape {np.shape(polygon)}")
    if not np.all(np.isfinite(vertices)):
        raise PromptError("a lasso's vertices must be finite numbers")
    u_size, v_size = (int(s) for i, s in enumerate(shape) if i != a)
    plane = (u_size, v_size)
    size = np.asarray(plane, dtype=np.float64)
    if np.any((vertices < -0.5) | (vertices > size - 0.5)):
        raise PromptError(f"the lasso leaves slice {int(index)} ({plane[0]} x {plane[1]} voxels)")
    fill = _inside_polygon(vertices, plane)
    if not fill.any():
        raise PromptError("the lasso encloses no voxel centre")
    return LassoEdit(a, int(index), fill, True)


def _inside_polygon(vertices: np.ndarray, plane: tuple[int, int]) -> np.ndarray:
    """Even-odd rule at voxel centres, only over the polygon's bounding box."""
    low = np.maximum(np.floor(vertices.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(vertices.max(axis=0)).astype(int) + 1, plane)
    u, v = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]), indexing="ij")
    inside = np.zeros(u.shape, dtype=bool)
    for (u0, v0), (u1, v1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (v0 > v) != (v1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = u0 + (v - v0) * (u1 - u0) / (v1 - v0)
        inside ^= crosses & (u < at)
    fill = np.zeros(plane, dtype=bool)
    fill[low[0] : high[0], low[1] : high[1]] = inside
    return fill


def interior_points(voxels: np.ndarray, count: int = LASSO_POINTS) -> np.ndarray:
    """Up to ``count`` voxels of a region: the one nearest its centroid, then evenly spread ones."""
    centre = voxels.mean(axis=0)
    first = voxels[np.argmin(np.linalg.norm(voxels - centre, axis=1))]
    rest = voxels[np.linspace(0, len(voxels) - 1, count + 1).round().astype(int)[1:-1]] if count > 1 else voxels[:0]
    chosen = [first] + [p for p in rest if not np.array_equal(p, first)]
    return np.asarray(chosen[:count], dtype=np.float64)


def initial_mask_region(mask, image: Image, label: int | None = None) -> tuple[tuple[slice, ...], np.ndarray]:
    """A bool array of the image's shape, or a label file (any ``sammed.io.masks.read_mask`` format),
    as the tight (region, mask) of its voxels (of ``label`` when given, else every non-zero)."""
    if isinstance(mask, (str, os.PathLike)):
        from sammed.io.masks import read_mask

        try:
            array = read_mask(Path(mask), image)
        except SammedError as exc:  # one class for callers: the initial mask is unusable
            raise PromptError(f"initial mask: {exc}") from None
    else:
        array = np.asarray(mask)
    if array.shape != tuple(image.shape):
        raise PromptError(f"the initial mask has shape {array.shape}, the image {tuple(image.shape)}")
    if label is not None:
        if not np.any(array == label):
            found = [int(v) for v in np.unique(array) if v != 0][:10]
            raise PromptError(f"the initial mask has no voxel of label {label} (labels present: {found})")
        selected = array == label
    else:
        if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
            raise PromptError(f"the initial mask must be bool or integer labels, got {array.dtype}")
        selected = array != 0
    from sammed.inference.roi import bounding_box

    box = bounding_box(selected)
    if box is None:
        raise PromptError("the initial mask is empty")
    region = tuple(slice(int(a), int(b)) for a, b in zip(*box))
    return region, np.array(selected[region], dtype=bool)
