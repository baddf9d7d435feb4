"""Checks that an image read from disk is usable by a 3D model.

Reading stays permissive (2D, 4D, NaN are all legal files); models call
``validate_volume`` so the user learns why in one line instead of a shape error deep
inside a network.
"""

from __future__ import annotations

import numpy as np

from sammed.errors import InvalidImageError
from sammed.io.image import Image


def validate_volume(image: Image) -> None:
    """Raise ``InvalidImageError`` unless ``image`` is a finite, non-constant 3D volume."""
    array = np.asarray(image.array)
    name = f"'{image.source}': " if image.source else ""
    if array.ndim != 3:
        kind = {2: "a 2D image"}.get(array.ndim, f"a {array.ndim}D image")
        hint = ""
        if array.ndim == 4 and array.shape[-1] == 1:
            hint = " (its 4th axis has length 1: squeeze it)"
        raise InvalidImageError(f"{name}expected a 3D volume, got {kind} of shape {tuple(array.shape)}{hint}")
    if array.size == 0:
        raise InvalidImageError(f"{name}image has no voxels (shape {tuple(array.shape)})")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidImageError(f"{name}complex-valued images are not supported")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InvalidImageError(f"{name}image contains {bad} NaN or infinite voxel(s)")
    lo, hi = array.min(), array.max()
    if lo == hi:
        value = lo.item() if hasattr(lo, "item") else lo
        raise InvalidImageError(f"{name}image intensities are constant (value {value}): nothing to segment")


def validate_label_map(label: Image) -> None:
    """Raise ``InvalidImageError`` unless ``label`` holds finite, whole, non-negative label values.

    Label maps are often stored as floats; a NaN, a fraction or a negative value there means
    the file is not a label map (or is damaged), and every per-class metric built on it would
    be meaningless.
    """
    array = np.asarray(label.array)
    name = f"'{label.source}': " if label.source else ""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidImageError(f"{name}label map contains NaN or infinite values")
        if np.any(array != np.floor(array)):
            raise InvalidImageError(f"{name}label map holds non-integer values (is it an image rather than labels?)")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InvalidImageError(f"{name}label map has dtype {array.dtype}; expected integer labels")
    if array.size and array.min() < 0:
        raise InvalidImageError(f"{name}label map holds negative values (minimum {array.min().item()})")
