"""Grids in the world: canonical model windows, resampling onto a grid, and the [i, j, k] rule.

The one place outside ``sammed.io`` where SimpleITK's [k, j, i] arrays meet ours: every
resampling goes through :func:`resample_onto`, which returns an array indexed [i, j, k] like
``Image.array``. Grids are :class:`~sammed.io.image.Geometry` (world LPS, ITK conventions).

Canonical RAS orientation: tensor axes A0, A1, A2 increase towards Right, Anterior and
Superior; this is how the official SAM-Med3D pipeline presents volumes after ``ToCanonical``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from sammed.io.image import Geometry

# Direction (LPS world) of tensor axes A0, A1, A2 in canonical RAS orientation.
CANONICAL_RAS_DIRECTION = np.diag([-1.0, -1.0, 1.0])

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def resample_onto(
    source: sitk.Image,
    grid: Geometry,
    interpolation: str = "linear",
    outside: float = 0.0,
    pixel_id: int | None = None,
) -> np.ndarray:
    """``source`` sampled at the voxel centres of ``grid`` -> array indexed [i, j, k] of ``grid``.

    ``interpolation`` is ``"linear"`` or ``"nearest"``; ``outside`` fills points outside the
    source; ``pixel_id`` (a SimpleITK pixel type) defaults to the source's own, which is what the
    official pipeline does (an int16 CT is truncated towards zero after interpolation).
    """
    resampled = sitk.Resample(
        source,
        [int(s) for s in grid.size],
        sitk.Transform(),
        _INTERPOLATORS[interpolation],
        [float(o) for o in grid.origin],
        [float(s) for s in grid.spacing],
        np.asarray(grid.direction, dtype=np.float64).flatten().tolist(),
        float(outside),
        source.GetPixelID() if pixel_id is None else pixel_id,
    )
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


def canonical_grid(geometry: Geometry, spacing_mm: float) -> Geometry:
    """Canonical RAS grid at ``spacing_mm`` covering the whole field of view of ``geometry``."""
    size = np.asarray(geometry.size)
    corners = np.array(
        [[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5) for c in (-0.5, size[2] - 0.5)]
    )
    # In canonical coordinates r = D @ lps, index = (r - r_origin) / spacing with D = diag(-1,-1,1).
    canonical = geometry.index_to_world(corners, "LPS") @ CANONICAL_RAS_DIRECTION.T
    low, high = canonical.min(axis=0), canonical.max(axis=0)
    new_size = np.maximum(np.ceil((high - low) / spacing_mm - 1e-6).astype(int), 1)
    origin = CANONICAL_RAS_DIRECTION @ (low + spacing_mm / 2)
    return Geometry(tuple(int(n) for n in new_size), (spacing_mm,) * 3, tuple(origin), CANONICAL_RAS_DIRECTION)


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


def ijk_from_zyx(array: np.ndarray) -> np.ndarray:
    """SimpleITK / official-code order [k, j, i] (``zyx``) -> ours [i, j, k]; a view, no copy."""
    return array.transpose(2, 1, 0)


def zyx_from_ijk(array: np.ndarray) -> np.ndarray:
    """Ours [i, j, k] -> SimpleITK / official-code order [k, j, i]; a view, no copy."""
    return array.transpose(2, 1, 0)
