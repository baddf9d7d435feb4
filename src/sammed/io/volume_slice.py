"""One slice of a volume as a picture for a 2D model.

Intensities are windowed to the 0.5-99.5 percentiles of the *whole volume* (so every slice of a
volume gets the same mapping). The picture is not flipped: its columns (x) run along the first
remaining voxel axis and its rows (y) along the second, e.g. for ``axis="k"`` pixel (x, y) is
voxel (i=x, j=y, k).
"""

from __future__ import annotations

import numpy as np

from sammed.errors import InvalidImageError
from sammed.io.image import Image
from sammed.io.plane import Image2D, VolumeSlice
from sammed.io.validation import validate_volume
from sammed.io.windowing import check_finite, grey_to_rgb, percentile_window, window_to_uint8

AXES = ("i", "j", "k")


def volume_slice_image(image: Image, slice_index: int | None, axis: str = "k") -> Image2D:
    """One slice of a volume read by :func:`sammed.io.read_image`, windowed on the whole volume."""
    name = image.source or "image"
    if axis not in AXES:
        raise InvalidImageError(f"slice axis must be one of {', '.join(AXES)}, not {axis!r}")
    if image.ndim == 2:  # a 2D file with geometry (2D NIfTI, MetaImage, ...): no slice to choose
        if slice_index not in (None, 0):
            raise InvalidImageError(f"'{name}' is a 2D image: slice {slice_index} does not exist")
        place = VolumeSlice(image.geometry, None, 0)
        plane = np.asarray(image.array)
        check_finite(plane, name)
        return Image2D(grey_to_rgb(window_to_uint8(plane, percentile_window(plane, name)).T), name, place)
    if image.ndim != 3:
        raise InvalidImageError(f"'{name}' has {image.ndim} dimensions {image.shape}; expected a 3D scalar volume")
    if slice_index is None:
        raise InvalidImageError(
            f"'{name}' is a 3D volume of size {image.shape}: a 2D model needs one slice (--slice K --axis i|j|k)"
        )
    axis_number = AXES.index(axis)
    count = image.shape[axis_number]
    if not 0 <= slice_index < count:
        raise InvalidImageError(
            f"slice {slice_index} is outside '{name}': axis {axis} has {count} slices (0 to {count - 1})"
        )
    validate_volume(image)
    volume = np.asarray(image.array)
    plane = np.take(volume, slice_index, axis=axis_number)
    picture = window_to_uint8(plane, percentile_window(volume, name)).T  # rows = second plane axis
    return Image2D(grey_to_rgb(picture), name, VolumeSlice(image.geometry, axis_number, slice_index))
