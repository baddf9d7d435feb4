"""2D inputs and outputs for the 2D models: pictures, 2D DICOM and slices of volumes.

Every reader returns an :class:`Image2D`: an (H, W, 3) RGB ``uint8`` array (what the 2D
models take) plus where it came from, so that a mask can be written back in the right form:

* **Pictures** (PNG, JPEG, TIFF) are read with Pillow. Grey images are copied into three
  channels; RGBA drops its alpha channel (the colour is kept as it is, not composited);
  palette images are expanded; 16-bit and float grey images are windowed like volumes (below).
  Two-channel images (grey + alpha) and CMYK are refused: which channels hold the anatomy
  is not knowable. Multi-page TIFFs are refused. Their masks are written as PNG.
* **2D DICOM** (one frame) is read with pydicom: the modality LUT (rescale slope/intercept or
  a LUT) gives real values (e.g. HU), then the file's VOI LUT or its first WindowCenter /
  WindowWidth pair maps them to the display range; without either, the 0.5-99.5 percentile
  window is used. MONOCHROME1 is inverted so that bright means high values, as it is shown.
  Masks are written as PNG. Multi-frame DICOM is a volume.
* **A slice of a volume** (anything :func:`sammed.io.read_image` reads) at index ``k`` along
  voxel axis ``i``, ``j`` or ``k``. Intensities are windowed to the 0.5-99.5 percentiles of
  the *whole volume* (so every slice of a volume gets the same mapping). The picture is not
  flipped: its columns (x) run along the first remaining voxel axis and its rows (y) along the
  second, e.g. for ``--axis k`` pixel (x, y) is voxel (i=x, j=y, k). A mask of the slice is
  written as a mask of the **whole volume** (its size, spacing, origin and direction) that is
  zero everywhere except on that slice, so it overlays the source in any viewer and several
  slices can be merged; it is written with :func:`sammed.io.write_mask`.

Pixel coordinates everywhere are (x, y) = (column, row), as in SAM.
"""

from __future__ import annotations

import os
from pathlib import Path

from sammed.errors import ImageReadError, InvalidImageError
from sammed.io.dicom import looks_like_dicom
from sammed.io.dicom2d import _read_dicom_dataset, dicom_to_rgb
from sammed.io.mask2d import MASK_ON, check_mask_path, write_mask_2d, write_png_mask
from sammed.io.picture import PICTURE_SUFFIXES, read_picture
from sammed.io.plane import MASK_2D_SUFFIX, Image2D, VolumeSlice
from sammed.io.readers import image_suffix, read_image
from sammed.io.volume_slice import AXES, volume_slice_image
from sammed.io.windowing import PERCENTILE_WINDOW, grey_to_rgb, percentile_window, window_to_uint8, window_unit

__all__ = [
    "AXES",
    "MASK_2D_SUFFIX",
    "MASK_ON",
    "PERCENTILE_WINDOW",
    "PICTURE_SUFFIXES",
    "Image2D",
    "VolumeSlice",
    "check_mask_path",
    "dicom_to_rgb",
    "grey_to_rgb",
    "percentile_window",
    "read_image_2d",
    "read_picture",
    "volume_slice_image",
    "window_to_uint8",
    "window_unit",
    "write_mask_2d",
    "write_png_mask",
]


def read_image_2d(path: str | os.PathLike, slice_index: int | None = None, axis: str = "k") -> Image2D:
    """Read a picture, a 2D DICOM file or one slice of a volume as an :class:`Image2D`.

    ``slice_index`` and ``axis`` (``"i"``, ``"j"`` or ``"k"``) choose the slice of a volume;
    a volume without ``slice_index`` and a picture with one are refused. Every failure is a
    one-line :class:`~sammed.errors.SammedError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageReadError(f"cannot read image '{p}': no such file or folder")
    if axis not in AXES:
        raise InvalidImageError(f"slice axis must be one of {', '.join(AXES)}, not {axis!r}")
    suffix = image_suffix(p)
    if p.is_file() and suffix in PICTURE_SUFFIXES:
        if slice_index is not None:
            raise InvalidImageError(f"'{p}' is a 2D picture: --slice/--axis are only for volumes")
        return _not_constant(Image2D(read_picture(p), str(p)))
    if slice_index is None and p.is_file() and (suffix == ".dcm" or looks_like_dicom(p)):
        dataset = _read_dicom_dataset(p)
        if int(dataset.get("NumberOfFrames", 1) or 1) == 1:
            return _not_constant(Image2D(dicom_to_rgb(dataset, str(p)), str(p)))
    return _not_constant(volume_slice_image(read_image(p), slice_index, axis))


def _not_constant(image: Image2D) -> Image2D:
    """A uniform picture has nothing to segment; a model would still draw a mask on it."""
    pixels = image.pixels
    if pixels.size and pixels.min() == pixels.max():
        raise InvalidImageError(f"'{image.source}': image intensities are constant: nothing to segment")
    return image
