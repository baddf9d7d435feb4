"""The model's input window: placing it in the world, sampling it, and mapping results back.

SAM-Med3D sees a 128^3 cube at 1.5 mm in canonical RAS orientation (tensor axes A0, A1, A2
increase towards Right, Anterior, Superior), exactly as the official pipeline prepares it after
``Resample`` + ``ToCanonical``. Here the cube is placed around the prompts and only that cube
is resampled from the original image, never the whole volume; the prediction is resampled onto
just the part of the original grid that the cube covers.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from sammed.errors import InvalidImageError
from sammed.geometry import CANONICAL_RAS_DIRECTION, RoiGrid, resample_onto  # noqa: F401  (re-exported)
from sammed.io.image import Geometry, Image
from sammed.io.readers import to_sitk

OUTSIDE_LOGIT = -1000.0


def sample_window(source: sitk.Image, roi: RoiGrid) -> np.ndarray:
    """Linear resampling of the window only, zero outside the image, in the source pixel type.

    Keeping the source pixel type reproduces the official pipeline, where an int16 CT is
    truncated towards zero after interpolation.
    """
    return resample_onto(source, roi.geometry, "linear", outside=0.0)


def zscore_foreground(window: np.ndarray) -> torch.Tensor:
    """Official intensity normalisation: z-score with mean/std over voxels > 0, applied to all.

    Computed in float32 torch with the unbiased std, as TorchIO's ZNormalization does.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(window)).float()
    foreground = tensor[tensor > 0]
    if foreground.numel() < 2:
        raise InvalidImageError(
            "the region around the prompt has no intensities above 0, which the model's "
            "normalisation needs (is the prompt in air or outside the body?)"
        )
    mean, std = foreground.mean(), foreground.std()
    if not torch.isfinite(std) or std == 0:
        raise InvalidImageError("the region around the prompt has constant intensity: nothing to segment")
    return (tensor - mean) / std


def covered_region(
    roi: RoiGrid, target: Geometry, low=None, high=None
) -> tuple[slice, ...] | None:
    """Index box of ``target`` covering the window box [low, high] (continuous window indices).

    Defaults to the whole window (its voxels' outer faces). None when nothing overlaps.
    """
    n = roi.size
    low = np.full(3, -0.5) if low is None else np.asarray(low, dtype=np.float64)
    high = np.full(3, n - 0.5) if high is None else np.asarray(high, dtype=np.float64)
    corners = np.array([[a[0], b[1], c[2]] for a in (low, high) for b in (low, high) for c in (low, high)])
    index = target.world_to_index(roi.geometry.index_to_world(corners, "LPS"), "LPS")
    lo = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, np.asarray(target.size))
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def window_logits_to_region(
    logits: np.ndarray, roi: RoiGrid, target: Geometry, region: tuple[slice, ...], offset=(0, 0, 0)
) -> np.ndarray:
    """Linearly resample window logits onto ``region`` of the target grid (very negative outside).

    ``logits`` may be a crop of the window starting at window index ``offset``. Interpolating
    logits, then thresholding at 0, gives smooth boundaries on a finer original grid; the
    official protocol instead thresholds first and uses nearest neighbour
    (see :mod:`sammed.evaluation.official_pipeline`).
    """
    crop_origin = roi.geometry.index_to_world(np.asarray(offset, dtype=np.float64), "LPS")
    crop_geometry = Geometry(logits.shape, roi.geometry.spacing, tuple(crop_origin), roi.geometry.direction)
    window = to_sitk(Image(np.ascontiguousarray(logits, dtype=np.float32), crop_geometry))
    start = np.array([s.start for s in region], dtype=np.float64)
    size = tuple(s.stop - s.start for s in region)
    grid = Geometry(size, target.spacing, tuple(target.index_to_world(start, "LPS")), target.direction)
    return resample_onto(window, grid, "linear", outside=OUTSIDE_LOGIT, pixel_id=sitk.sitkFloat32)


def paste_window_mask(
    logits: np.ndarray, roi: RoiGrid, target: Geometry
) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
    """Mask (logit > 0 after linear resampling) on the target grid, as a tight (region, mask).

    Only the part of the target grid near positive window voxels is resampled. This is exact:
    a linearly interpolated value can be positive only if one of its 8 stencil voxels is, and
    every target point more than one window voxel away from all positive voxels has a stencil
    of non-positive voxels. The cost therefore scales with the object, not with the window.
    """
    box = bounding_box(logits > 0)
    if box is None:
        return None, None
    low, high = box[0], box[1] - 1
    region = covered_region(roi, target, low - 1.0, high + 1.0)
    if region is None:
        return None, None
    crop_low = np.maximum(low - 2, 0)
    crop_high = np.minimum(high + 3, np.asarray(logits.shape))
    crop = logits[tuple(slice(a, b) for a, b in zip(crop_low, crop_high))]
    mask = window_logits_to_region(crop, roi, target, region, offset=crop_low) > 0
    box = bounding_box(mask)
    if box is None:
        return None, None
    tight_low, tight_high = box
    tight = tuple(slice(r.start + a, r.start + b) for r, a, b in zip(region, tight_low, tight_high))
    return tight, mask[tuple(slice(a, b) for a, b in zip(tight_low, tight_high))]


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) index box, high exclusive, of the True voxels of a 3D mask; None if empty.

    Per-axis projections instead of ``np.argwhere``, which would list every voxel of a large mask.
    """
    bounds = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        bounds.append((hits[0], hits[-1] + 1))
    low, high = zip(*bounds)
    return np.array(low), np.array(high)
