"""The model's input window: placing it in the world, sampling it, and mapping results back.

SAM-Med3D sees a 128^3 cube at 1.5 mm in canonical RAS orientation (tensor axes A0, A1, A2
increase towards Right, Anterior, Superior), exactly as the official pipeline prepares it after
``Resample`` + ``ToCanonical``. Here the cube is placed around the prompts and only that cube
is resampled from the original image, never the whole volume; the prediction is resampled onto
just the part of the original grid that the cube covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from sammed.errors import InvalidImageError
from sammed.io.image import Geometry, Image
from sammed.io.readers import to_sitk

# Direction (LPS world) of tensor axes A0, A1, A2 in canonical RAS orientation.
CANONICAL_RAS_DIRECTION = np.diag([-1.0, -1.0, 1.0])
OUTSIDE_LOGIT = -1000.0


@dataclass(frozen=True)
class RoiGrid:
    """A cubic model window: ``size`` voxels of ``spacing`` mm, in canonical RAS orientation."""

    geometry: Geometry

    @classmethod
    def centered_at(cls, center_lps, size: int = 128, spacing: float = 1.5) -> "RoiGrid":
        """Window whose voxel (size/2, size/2, size/2) sits at ``center_lps`` (as the official crop)."""
        center = np.asarray(center_lps, dtype=np.float64)
        half = np.full(3, size // 2, dtype=np.float64)
        origin = center - CANONICAL_RAS_DIRECTION @ (half * spacing)
        return cls(Geometry((size,) * 3, (spacing,) * 3, tuple(origin), CANONICAL_RAS_DIRECTION))

    @property
    def size(self) -> int:
        return self.geometry.size[0]

    @property
    def extent_mm(self) -> float:
        return self.geometry.size[0] * self.geometry.spacing[0]

    def to_index(self, world_lps) -> np.ndarray:
        """World LPS (..., 3) -> continuous window index (A0, A1, A2)."""
        return self.geometry.world_to_index(world_lps, "LPS")

    def contains(self, world_lps, margin_voxels: float = 0.0) -> bool:
        index = np.atleast_2d(self.to_index(world_lps))
        low, high = margin_voxels - 0.5, self.size - 0.5 - margin_voxels
        return bool(np.all(index >= low) and np.all(index <= high))

    def key(self) -> tuple:
        """Hashable identity for caching embeddings."""
        g = self.geometry
        return (g.size, g.spacing, tuple(np.round(g.origin, 6)))


def sample_window(source: sitk.Image, roi: RoiGrid) -> np.ndarray:
    """Linear resampling of the window only, zero outside the image, in the source pixel type.

    Keeping the source pixel type reproduces the official pipeline, where an int16 CT is
    truncated towards zero after interpolation.
    """
    g = roi.geometry
    resampled = sitk.Resample(
        source,
        list(g.size),
        sitk.Transform(),
        sitk.sitkLinear,
        list(g.origin),
        list(g.spacing),
        g.direction.flatten().tolist(),
        0,
        source.GetPixelID(),
    )
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


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


def covered_region(roi: RoiGrid, target: Geometry) -> tuple[slice, ...] | None:
    """Index box of ``target`` that the window covers (None when they do not overlap)."""
    n = roi.size
    corners = np.array([[a, b, c] for a in (-0.5, n - 0.5) for b in (-0.5, n - 0.5) for c in (-0.5, n - 0.5)])
    world = roi.geometry.index_to_world(corners, "LPS")
    index = target.world_to_index(world, "LPS")
    low = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, np.asarray(target.size))
    if np.any(high <= low):
        return None
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


def window_logits_to_region(logits: np.ndarray, roi: RoiGrid, target: Geometry, region: tuple[slice, ...]) -> np.ndarray:
    """Linearly resample window logits onto ``region`` of the target grid (very negative outside).

    Interpolating logits, then thresholding at 0, gives smooth boundaries on a finer original
    grid; the official protocol instead thresholds first and uses nearest neighbour
    (see :mod:`sammed.inference.official`).
    """
    window = to_sitk(Image(np.ascontiguousarray(logits, dtype=np.float32), roi.geometry))
    start = np.array([s.start for s in region], dtype=np.float64)
    size = [s.stop - s.start for s in region]
    origin = target.index_to_world(start, "LPS")
    resampled = sitk.Resample(
        window,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        list(target.spacing),
        target.direction.flatten().tolist(),
        OUTSIDE_LOGIT,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
