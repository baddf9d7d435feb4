"""A 2D picture for a 2D model and, for a slice, where it lies in its volume.

Pixel coordinates are (x, y) = (column, row), as in SAM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sammed.io.image import Geometry
from sammed.io.writers import WRITE_SUFFIXES

MASK_2D_SUFFIX = ".png"


@dataclass(frozen=True)
class VolumeSlice:
    """Where a 2D picture lies in a volume: its grid, the fixed voxel axis and the index on it.

    ``axis`` is None when the source grid itself is 2D (e.g. a 2D NIfTI or MetaImage).
    """

    geometry: Geometry
    axis: int | None
    index: int

    @property
    def plane_axes(self) -> tuple[int, int]:
        """The voxel axes along the picture's columns (x) and rows (y)."""
        if self.axis is None:
            return (0, 1)
        first, second = (a for a in range(3) if a != self.axis)
        return first, second

    def grid_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) picture mask -> a uint8 mask on the whole source grid (only this slice set)."""
        plane = np.asarray(mask).T  # picture [y, x] -> voxels [x-axis, y-axis]
        full = np.zeros(self.geometry.size, dtype=np.uint8)
        if self.axis is None:
            full[...] = plane
        else:
            where: list = [slice(None)] * 3
            where[self.axis] = self.index
            full[tuple(where)] = plane
        return full


@dataclass(frozen=True)
class Image2D:
    """An RGB picture for a 2D model: ``pixels`` (H, W, 3) uint8 and its origin.

    ``volume_slice`` is None for pictures and 2D DICOM (masks go to PNG), else the slice's place
    in its volume (masks go to a volume file with the volume's geometry).
    """

    pixels: np.ndarray
    source: str
    volume_slice: VolumeSlice | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def mask_suffixes(self) -> tuple[str, ...]:
        """The output formats a mask of this image can be written in."""
        return (MASK_2D_SUFFIX,) if self.volume_slice is None else WRITE_SUFFIXES
