"""Masks of 2D inputs: a PNG of the picture's size, or for a slice a mask of the whole volume.

A slice's mask has the volume's size, spacing, origin and direction and is zero everywhere but on
that slice, so it overlays the source in any viewer and several slices can be merged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sammed.errors import ImageWriteError, InvalidImageError
from sammed.io.atomic import atomic_path
from sammed.io.plane import Image2D
from sammed.io.readers import image_suffix
from sammed.io.writers import write_mask

MASK_ON = 255  # masks are stored 0 / 255, like the SAM-Med2D demo masks


def check_mask_path(image: Image2D, path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output the mask of ``image`` cannot be written to."""
    target = Path(path).expanduser()
    suffix = image_suffix(target)
    if suffix not in image.mask_suffixes:
        kind = "a 2D image" if image.volume_slice is None else "a slice of a volume"
        raise ImageWriteError(
            f"cannot write '{target}': the mask of {kind} is written as {' or '.join(image.mask_suffixes)}"
        )
    if target.is_dir():
        raise ImageWriteError(f"cannot write '{target}': it is a folder")
    return target


def write_mask_2d(mask: np.ndarray, image: Image2D, path: str | os.PathLike) -> Path:
    """Write an (H, W) mask of ``image``: PNG for pictures, the whole source grid for slices."""
    target = check_mask_path(image, path)
    mask = np.asarray(mask)
    if mask.shape != image.size:
        raise InvalidImageError(f"mask shape {mask.shape} does not match the image size {image.size}")
    if image.volume_slice is not None:
        grid = image.volume_slice
        return write_mask(grid.grid_mask(mask != 0), grid.geometry, target)
    return write_png_mask(mask, target)


def write_png_mask(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a binary mask as an 8-bit PNG (0 / 255) atomically: temp file, then rename."""
    from PIL import Image as PILImage

    target = Path(path).expanduser()
    pixels = np.where(np.asarray(mask) != 0, MASK_ON, 0).astype(np.uint8)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = f"cannot create folder '{target.parent}' ({exc.strerror})"
        raise ImageWriteError(f"cannot write '{target}': {reason}") from None
    try:
        with atomic_path(target, ".png") as temporary:
            PILImage.fromarray(pixels).save(temporary, format="PNG")
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{target}': {exc.strerror or exc}") from None
    return target
